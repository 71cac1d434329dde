"""The whole loop over HTTP on a small procedural set with synthetic channels."""

from __future__ import annotations

import csv
import io
from html import escape

import numpy as np
import pytest
from stimloop.science import synthetic as sy

from tests.support.loop import CHANNELS, FIT, NEURONS, SELECTION, as_json, simulate
from tests.support.service import is_problem


def test_the_whole_loop(service, loop):
    c, sid = service.client, loop["session"]
    cols = simulate(loop, {"bodies": loop["maps"]["bodies"][0]}, seed=1)
    r = c.put(f"/v1/sessions/{sid}/phase1", json=as_json(cols), headers=service.rig)
    assert r.status_code == 202, r.text
    job = r.json()["job"]["id"]
    service.work()
    r = c.get(f"/v1/jobs/{job}", headers=service.rig)
    assert r.json()["state"] == "finished", r.json()
    assert r.json()["progress"] == 1.0 and r.json()["result_link"].endswith("/selection")
    session = c.get(f"/v1/sessions/{sid}", headers=service.rig).json()
    assert session["state"] == "selected"
    assert [h["state"] for h in session["history"]][:4] == [
        "created",
        "phase1_received",
        "fitting",
        "selected",
    ]
    selection = c.get(f"/v1/sessions/{sid}/selection", headers=service.rig).json()
    assert (
        selection["provenance"]["seed"] == 3
        and len(selection["provenance"]["weights_sha256"]) == 64
    )

    # the same science called directly on the same data gives the same list
    from stimloop.science.candidate_cells import cell_major
    from stimloop.science.readout import ReadoutConfig
    from stimloop.science.responses import Windows, trials_from_columns
    from stimloop.science.selection import Candidates, SelectionConfig, select
    from stimloop.storage.activations import Activations
    from stimloop.worker.fit_select import ensemble_for
    from stimloop.worker.fitting import fit_recording

    ids, body_maps = loop["maps"]["bodies"]
    sil = (
        __import__("stimloop.worker.jobs", fromlist=["resources"])
        .resources()
        .silhouette_maps("resnet50_random", "bodies", ids)
    )
    act = Activations(ids, body_maps, [""] * len(ids), "resnet50_random", "w")
    result = fit_recording(
        act,
        trials_from_columns(cols, Windows()),
        silhouettes=Activations(ids, sil, [""] * len(ids), "", ""),
        readout=ReadoutConfig.from_dict(FIT),
        seed=3,
    )
    means = np.stack(
        [result.table.mean[result.table.channel_index(v.channel)] for v in result.inclusion]
    )
    cands = [
        Candidates("object", loop["maps"]["objects"][0], cell_major(loop["maps"]["objects"][1])),
        Candidates(
            "control_body", loop["maps"]["controls"][0], cell_major(loop["maps"]["controls"][1])
        ),
    ]
    ensemble = ensemble_for(result, ids, body_maps, SelectionConfig().ensemble, 3)
    direct = select(
        result.readout,
        result.inclusion,
        ids,
        means,
        body_maps,
        cands,
        SelectionConfig(**SELECTION),
        seed=3,
        ensemble=ensemble,
    ).to_dict()
    assert selection["phase_two"] == direct["phase_two"]
    assert selection["channels"] == direct["channels"]
    assert selection["predictions"] == direct["predictions"]
    picks = [p for ch in selection["channels"] for p in ch["picks"]]
    assert picks and all(p["lower"] < p["predicted"] < p["upper"] for p in picks)

    # the predictions were registered with the list: the same numbers, frozen with a hash
    registered = c.get(f"/v1/sessions/{sid}/registration", headers=service.analyst).json()
    sha = selection["registration"]
    assert registered["sha256"] == sha and len(sha) == 64
    assert registered["predictions"] == selection["predictions"]
    assert registered["readout_sha256"] == result.readout.sha256()
    assert registered["settings"]["selection"]["ensemble"] == SelectionConfig().ensemble
    history = c.get(f"/v1/sessions/{sid}", headers=service.rig).json()["history"]
    assert history[-1]["event"] == "selection ready" and history[-1]["registration"] == sha

    csv_text = c.get(f"/v1/sessions/{sid}/selection.csv", headers=service.rig).text
    listed = [e["stimulus"] for e in selection["phase_two"]["entries"]]
    assert csv_text.splitlines()[0] == "order,stimulus,category,reasons,fit_flagged"
    assert len(csv_text.splitlines()) == 1 + len(listed) + 10
    # a channel whose fit is flagged: its picks say so in the list the rig reads, and its row
    # of the page's fit table (the stored flag is set here by hand to see it shown)
    from stimloop.storage.store import Store

    files = Store(service.settings.models_store).files(sid)
    stored = files.channels()
    picked = {r["channel"] for e in selection["phase_two"]["entries"] for r in e["reasons"]}
    target = next(r for r in stored["channels"] if r["channel"] in picked and "mu_x" in r)
    original = target.get("fit_flag")
    target["fit_flag"] = "held-out r -1.00 not significantly positive (one-sided p 1)"
    files.write_channels(stored)
    try:
        flagged = {r["channel"] for r in stored["channels"] if r.get("fit_flag")}
        flagged_csv = c.get(f"/v1/sessions/{sid}/selection.csv", headers=service.rig).text
        rows = list(csv.reader(io.StringIO(flagged_csv)))[1 : 1 + len(listed)]
        for row in rows:
            reasons = {part.split(":")[0] for part in row[3].split(";")}
            assert set(filter(None, row[4].split(";"))) == reasons & flagged, row
        assert any(target["channel"] in row[4] for row in rows)
        token = service.rig["Authorization"].split()[1]
        login = c.post(
            "/ui/login",
            data={"token": token},
            headers={"Origin": "http://testserver"},
            follow_redirects=False,
        )
        assert login.status_code == 303, login.text
        page = c.get(f"/ui/sessions/{sid}").text
        c.cookies.clear()
        assert escape(target["fit_flag"]) in page and 'class="flagged"' in page
        assert c.get(f"/v1/sessions/{sid}/models", headers=service.analyst).json()["channels"]
    finally:
        target["fit_flag"] = original
        files.write_channels(stored)
    assert sorted(selection["sequence"]) == sorted(
        (listed + selection["phase_two"]["stability_images"]) * 2
    )

    models = c.get(f"/v1/sessions/{sid}/models", headers=service.analyst).json()
    assert {row["channel"] for row in models["channels"]} == set(CHANNELS)
    npz = np.load(
        io.BytesIO(c.get(f"/v1/sessions/{sid}/models.npz", headers=service.analyst).content)
    )
    assert npz["w"].shape[1] == 2048

    # phase two: exactly the listed images
    objects = [
        e["stimulus"] for e in selection["phase_two"]["entries"] if e["category"] == "object"
    ]
    controls = [
        e["stimulus"] for e in selection["phase_two"]["entries"] if e["category"] == "control_body"
    ]
    cols2 = simulate(
        loop,
        {
            "bodies": selection["phase_two"]["stability_images"],
            "objects": objects,
            "controls": controls,
        },
        seed=2,
    )
    # sent as a follower sends it: in batches while phase two is recorded, then closed
    rows = len(cols2["stimulus"])
    cuts = [0, rows // 3, 2 * rows // 3, rows]
    for n in range(1, 4):
        part = {k: v[cuts[n - 1] : cuts[n]] for k, v in cols2.items()}
        r = c.put(f"/v1/sessions/{sid}/phase2/batches/{n}", json=as_json(part), headers=service.rig)
        assert r.status_code == 200 and r.json()["batches"] == n, r.text
    r = c.post(f"/v1/sessions/{sid}/phase2/close", json={"batches": 3}, headers=service.rig)
    assert r.status_code == 202 and r.json()["job"]["kind"] == "analysis", r.text
    service.work()
    analysis = c.get(f"/v1/sessions/{sid}/analysis", headers=service.analyst).json()
    assert len(analysis["channels"]) == 4 and "stable" in analysis["summary"]
    for ch in analysis["channels"][:3]:
        assert 0 <= ch["stability"]["p"] <= 1 and ch["selectivity"][0]["p_two_sided"] <= 1
        assert ch["selectivity"][0]["other"] == "object"
    assert analysis["categories"] == {
        "preferred": "body",
        "preferred_candidates": ["control_body"],
        "others": ["object"],
    }
    assert c.get(f"/v1/sessions/{sid}", headers=service.rig).json()["state"] == "analysed"
    # the fit metrics beside each prediction r, also for the control bodies
    fitted = [ch for ch in analysis["channels"] if ch["generalisation"]]
    assert fitted
    for ch in fitted:
        assert set(ch["generalisation"]) == {"object", "control_body"}
        for g in [ch["generalisation_preferred"], *ch["generalisation"].values()]:
            m = g["metrics"]
            assert m["r"]["value"] == pytest.approx(g["r"]) and m["n_boot"] == 1000
            assert m["noise_ceiling"]["value"] == pytest.approx(g["noise_ceiling"], nan_ok=True)
    assert "fraction_of_oracle" in analysis["summary"]
    # the registered predictions, scored: the analysis names the copy it read
    scoring = analysis["scoring"]
    assert scoring["registration"] == sha and scoring["level"] == 0.9
    scored = {row["channel"]: row for row in scoring["channels"]}
    assert set(scored) == set(selection["predictions"]["channels"])
    for row in scored.values():
        assert row["n"] == len(
            [
                e
                for e in selection["phase_two"]["entries"]
                if row["channel"] in {r["channel"] for r in e["reasons"]}
            ]
        )
        assert 0 <= row["inside"] <= row["n"] and row["metrics"]["n_stimuli"] == row["n"]
    # the page shows the registered hash and the scores; its download is the registered bytes
    import hashlib

    token = service.analyst["Authorization"].split()[1]
    c.post("/ui/login", data={"token": token}, headers={"Origin": "http://testserver"})
    page = c.get(f"/ui/sessions/{sid}").text
    assert sha in page and 'id="scoring"' in page and 'id="registration"' in page
    registered_bytes = c.get(f"/ui/sessions/{sid}/files/registration-json").content
    assert hashlib.sha256(registered_bytes).hexdigest() == sha
    c.cookies.clear()
    assert_registration_is_kept(service, sid, sha, cols, cols2)

    # phase three needs saliency maps first
    r = c.post(f"/v1/sessions/{sid}/phase3", json={}, headers=service.analyst)
    assert r.status_code == 409 and "saliency" in r.json()["detail"], r.text

    # saliency for an included channel's default pair
    included = [row["channel"] for row in models["channels"] if row["included"]]
    assert included, models["channels"]
    r = c.post(
        f"/v1/sessions/{sid}/saliency",
        json={"channel": included[0], "coverage": 0.05},
        headers=service.analyst,
    )
    assert r.status_code == 202, r.text
    links = r.json()["links"]
    service.work()
    meta = c.get(links["metadata"], headers=service.analyst).json()
    assert meta["norm_out"] <= meta["s"] + 1e-5 and meta["covered"] >= 0.05
    assert meta["provenance"]["weights_sha256"] == selection["provenance"]["weights_sha256"]
    arrays = np.load(io.BytesIO(c.get(links["arrays"], headers=service.analyst).content))
    assert arrays["map_out"].shape == (3, 224, 224)
    png = c.get(links["png"], headers=service.analyst)
    assert png.headers["content-type"] == "application/octet-stream"  # as the document says
    assert png.content[:4] == b"\x89PNG"
    again = c.post(
        f"/v1/sessions/{sid}/saliency",
        json={"channel": included[0], "coverage": 0.05},
        headers=service.analyst,
    )
    assert again.status_code == 200 and again.json()["status"] == "done"

    # saliency requests the service refuses, with what to fix
    url = f"/v1/sessions/{sid}/saliency"
    for request, status in (
        ({"channel": "nope"}, 404),
        ({"channel": included[0], "x_out": "object_9999", "x_in": "body_0000"}, 404),
        ({"channel": included[0], "x_out": objects[0], "x_in": "nope"}, 404),
        ({"channel": included[0], "x_out": "body_0000", "x_in": "body_0001"}, 404),
        ({"channel": included[0], "coverage": 1.5}, 422),
        ({"channel": included[0], "coverage": 0.0}, 422),
        ({"channel": included[0], "x_out": objects[0]}, 422),
    ):
        r = c.post(url, json=request, headers=service.analyst)
        assert r.status_code == status, (request, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    silent = next(row for row in models["channels"] if row["channel"] == "silent")
    assert not silent["included"] and "not responsive" in silent["reason"]
    r = c.post(url, json={"channel": "silent"}, headers=service.analyst)
    assert r.status_code == 409 and "no fitted model" in r.json()["detail"]

    # the report: one self-contained page with the paper's figures and the provenance
    html = c.get(f"/v1/sessions/{sid}/report", headers=service.analyst).text
    assert html.startswith("<!DOCTYPE html>") and "Fig. 3a" in html and "Fig. 3b" in html
    assert "The registered predictions, scored" in html and selection["registration"] in html
    assert "resnet50_random is a seeded random-init stand-in" in html
    assert html.count("data:image/png;base64,") >= 4  # Fig. 3a, calibration, 3b, saliency
    assert selection["provenance"]["weights_sha256"] in html and 'src="http' not in html
    assert_renders_in_a_browser(html, service.root / "report.html")


def assert_registration_is_kept(service, sid: str, sha: str, cols: dict, cols2: dict) -> None:
    """No later change of the registered predictions gets through: not a refit after phase
    two, not a second registration, not an edit of the file (the analysis stops, naming both
    hashes, and runs again once the registered copy is back)."""
    from stimloop.storage.registration import RegistrationError
    from stimloop.storage.store import Store

    c = service.client
    refit = c.put(
        f"/v1/sessions/{sid}/phase1?replace=true",
        json=as_json({**cols, "response_count": cols["response_count"] + 1}),
        headers=service.rig,
    )
    assert "registered" in is_problem(refit, 409)["detail"]
    files = Store(service.settings.models_store).files(sid)
    record = files.record()
    document, held = files.registration(record.registration)
    assert held == sha
    changed = {**document, "predictions": {**document["predictions"], "level": 0.5}}
    with pytest.raises(RegistrationError, match="cannot be changed"):
        files.register(changed, record.registration)
    path = files.folder / "registration.json"
    original = path.read_bytes()
    path.write_bytes(original.replace(b'"level":0.9', b'"level":0.5'))
    try:
        refused = c.get(f"/v1/sessions/{sid}/registration", headers=service.analyst)
        assert sha in is_problem(refused, 409)["detail"]
        other = {**cols2, "response_count": cols2["response_count"] + 1}
        url = f"/v1/sessions/{sid}/phase2?replace=true"
        r = c.put(url, json=as_json(other), headers=service.rig)
        assert r.status_code == 202, r.text
        service.work()
        failed = c.get(f"/v1/sessions/{sid}", headers=service.rig).json()
        assert failed["state"] == "failed" and sha in failed["error"], failed["error"]
    finally:
        path.write_bytes(original)
    again = c.put(
        f"/v1/sessions/{sid}/phase2?replace=true", json=as_json(cols2), headers=service.rig
    )
    assert again.status_code == 202, again.text
    service.work()
    done = c.get(f"/v1/sessions/{sid}", headers=service.rig).json()
    assert done["state"] == "analysed", done
    assert (
        c.get(f"/v1/sessions/{sid}/analysis", headers=service.analyst).json()["scoring"][
            "registration"
        ]
        == sha
    )


def test_phase_three(service, loop, monkeypatch):
    """The fragments of the visualised pair, shown and recorded, then analysed."""
    import hashlib
    import json
    import zipfile

    from stimloop.science.backbone import extract_features
    from stimloop.worker.jobs import resources

    c, sid = service.client, loop["session"]
    url = f"/v1/sessions/{sid}/phase3"
    assert c.get(f"/v1/sessions/{sid}", headers=service.rig).json()["state"] == "analysed"
    meta = next(
        m
        for m in (
            json.loads(p.read_text())
            for p in (loop["store"].files(sid).folder / "saliency").glob("*.json")
        )
    )
    channel = meta["channel"]
    for request, status, words in (
        ({"q": [0.0]}, 422, "greater than 0"),
        ({"q": [1.0]}, 422, "less than 1"),
        ({"q": [0.2, 0.2]}, 422, "repeat"),
        ({"channels": ["nope"]}, 404, "not in the session"),
        ({"channels": ["silent"]}, 409, "excluded"),
        ({"kinds": ["middle"]}, 422, ""),
        ({"saliency": ["0123456789abcdef"]}, 404, "no saliency result"),
    ):
        r = c.post(url, json=request, headers=service.analyst)
        assert r.status_code == status and words in r.text, (request, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = c.get(url, headers=service.rig)
    assert r.status_code == 404 and "no phase-three list yet" in r.json()["detail"]

    r = c.post(url, json={"repeats": 2}, headers=service.analyst)
    assert r.status_code == 202, r.text
    service.work()
    assert c.get(f"/v1/jobs/{r.json()['job']['id']}", headers=service.rig).json()["state"] == (
        "finished"
    )
    again = c.post(url, json={"repeats": 2}, headers=service.rig)
    assert again.status_code == 200 and again.json()["status"] == "done"
    other = c.post(url, json={"repeats": 2, "q": [0.5]}, headers=service.rig)
    assert other.status_code == 409 and "replace=true" in other.json()["detail"]

    plan = c.get(url, headers=service.rig).json()
    kinds = [e["kind"] for e in plan["entries"]]
    assert kinds.count("salient") == kinds.count("complement") == kinds.count("random") == 2
    assert kinds.count("intact") == 2
    sources = {meta["x_out"], meta["x_in"]}
    assert {e["source"] for e in plan["entries"]} == sources
    for e in plan["entries"]:
        assert e["predicted"][channel] == e["predicted"][channel]  # a number, not NaN
        if e["kind"] != "intact":
            assert e["stimulus"] == f"{e['source']}__{channel}__{e['kind']}__q0.25"
            assert abs(e["area"] - 0.25 * e["foreground_area"]) <= 0.5
            assert e["saliency_key"] == meta["key"] and e["seed"] == 3
    stimuli = [e["stimulus"] for e in plan["entries"]]
    stimuli += [b for b in plan["stability_images"] if b not in stimuli]
    assert sorted(plan["sequence"]) == sorted(stimuli * 2)
    assert all(a != b for a, b in zip(plan["sequence"], plan["sequence"][1:]))
    assert plan["provenance"]["seed"] == 3
    csv_text = c.get(f"{url}.csv", headers=service.rig).text
    assert csv_text.splitlines()[0] == "order,stimulus,kind,channels,source,q,predicted"
    assert len(csv_text.splitlines()) == 1 + len(stimuli)

    archive = zipfile.ZipFile(io.BytesIO(c.get(f"{url}/stimuli.zip", headers=service.rig).content))
    manifest = json.loads(archive.read("manifest.json"))
    assert [m["id"] for m in manifest] == stimuli
    pngs = {m["id"]: archive.read(m["file"]) for m in manifest}
    for m in manifest:
        assert hashlib.sha256(pngs[m["id"]]).hexdigest() == m["sha256"]
        assert pngs[m["id"]][:4] == b"\x89PNG"

    # the rig shows the list: the synthetic neurons see the fragments through the backbone
    model = resources().backbone("resnet50_random")
    seen = extract_features(model, [pngs[s] for s in stimuli], batch_size=8)
    rates = sy.true_responses(loop["neurons"], seen)
    _, cols = sy.simulate_counts(
        rates, stimuli, NEURONS, seed=9, config=sy.SyntheticConfig(repeats=4)
    )
    r = c.put(f"{url}/trials", json=as_json(cols), headers=service.analyst)
    assert r.status_code == 403
    r = c.put(
        f"{url}/trials",
        json={"stimulus": ["x"], "channel": ["ch1"], "rate": [1.0]},
        headers=service.rig,
    )
    assert r.status_code == 422 and "phase-three list" in r.json()["detail"]
    r = c.put(f"{url}/trials", json=as_json(cols), headers=service.rig)
    assert r.status_code == 202 and r.json()["status"] == "queued", r.text
    service.work()
    analysis = c.get(f"{url}/analysis", headers=service.analyst).json()
    (row,) = [ch for ch in analysis["channels"] if ch["channel"] == channel]
    assert {k["kind"] for k in row["kinds"]} == {"salient", "complement", "random"}
    assert [t["test"] for t in row["comparisons"]] == ["mann-whitney u"] * 2  # 2 pairs
    assert 0 <= row["comparisons"][0]["p"] <= 1
    assert row["stability_phase_one"]["n"] == 10 and row["stability_phase_two"]["n"] == 10
    state = c.get(f"/v1/sessions/{sid}", headers=service.rig).json()
    assert state["state"] == "analysed" and state["uploads"]["phase3"]["trials"] == len(
        cols["stimulus"]
    )
    same = c.put(f"{url}/trials", json=as_json(cols), headers=service.rig)
    assert same.status_code == 202 and same.json()["status"] == "already received"
    changed = as_json(cols)
    changed["response_count"][0] += 1
    r = c.put(f"{url}/trials", json=changed, headers=service.rig)
    assert r.status_code == 409 and "replace=true" in r.json()["detail"]
    assert c.get(f"{url}/analysis", headers=service.analyst).status_code == 200  # kept

    html = c.get(f"/v1/sessions/{sid}/report", headers=service.analyst).text
    assert "Phase three" in html and "mann-whitney u" in html

    # the rig's commands: the list, its images and sequence, and the phase-three table
    from stimloop_rig import cli
    from stimloop_rig.rig_client import RigClient
    from typer.testing import CliRunner

    token = service.rig["Authorization"].split()[1]
    monkeypatch.setattr(
        cli,
        "_client",
        lambda url, tok: RigClient("http://testserver", token, transport=c._transport),
    )
    folder = service.root / "rig"
    folder.mkdir()
    runner = CliRunner()
    done = runner.invoke(
        cli.app,
        [
            "phase-three-list",
            sid,
            "--out",
            str(folder / "p3.csv"),
            "--stimuli",
            str(folder / "p3.zip"),
            "--sequence",
            str(folder / "p3.txt"),
            "--repeats",
            "2",
        ],
    )
    assert done.exit_code == 0, done.output
    assert (folder / "p3.csv").read_text().splitlines() == csv_text.splitlines()
    assert (folder / "p3.txt").read_text().split() == plan["sequence"]
    assert zipfile.ZipFile(folder / "p3.zip").namelist()[-1] == "manifest.json"
    refused = runner.invoke(cli.app, ["phase-three-list", sid, "--out", "x.csv", "--q", "0.5"])
    assert refused.exit_code == 2 and "add --replace" in " ".join(refused.output.split())
    table = runner.invoke(
        cli.app, ["analysis", sid, "--phase", "3", "--out", str(folder / "a.csv")]
    )
    assert table.exit_code == 0, table.output
    header = (folder / "a.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["channel", "retained_salient"] and "vs_random_p" in header

    # a list for other settings replaces this one: its images, trials and analysis go
    r = c.post(url, params={"replace": "true"}, json={"q": [0.5]}, headers=service.rig)
    assert r.status_code == 202, r.text
    service.work()
    images = loop["store"].files(sid).folder / "phase3" / "images"
    assert sorted(p.name.split("__")[-1] for p in images.iterdir()) == ["q0.5.png"] * 6
    assert "phase3" not in c.get(f"/v1/sessions/{sid}", headers=service.rig).json()["uploads"]
    assert c.get(f"{url}/analysis", headers=service.rig).status_code == 404


def test_the_stimulus_zip_names_each_image_by_its_format():
    """Fragments are PNG; an intact source or stability body keeps its own format (a lab's
    JPEG stays a .jpg for the stimulus program)."""
    import json
    import zipfile

    from PIL import Image
    from stimloop.worker.phase_three import stimuli_zip

    def encoded(fmt: str) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (128, 128, 128)).save(buffer, format=fmt)
        return buffer.getvalue()

    images = {"b__ch1__salient__q0.25": encoded("PNG"), "b": encoded("JPEG")}
    entries = [{"stimulus": "b__ch1__salient__q0.25", "kind": "salient", "q": 0.25}]
    archive = zipfile.ZipFile(io.BytesIO(stimuli_zip(list(images), images, entries)))
    manifest = json.loads(archive.read("manifest.json"))
    assert [m["file"] for m in manifest] == ["images/b__ch1__salient__q0.25.png", "images/b.jpg"]
    assert [m["kind"] for m in manifest] == ["salient", "stability"]
    assert archive.read("images/b.jpg") == images["b"]


ARTIFACTS = __import__("pathlib").Path(__file__).resolve().parents[2] / "test-artifacts"


def assert_renders_in_a_browser(html: str, path, widths: tuple[int, ...] = (1300,)) -> None:
    """Headless Chromium draws the page twice at each window width, with and without its
    images: the figures must change a good part of the picture (a broken image would leave it
    as without). Each screenshot with its figures is kept in test-artifacts/."""
    import os
    import re
    import shutil
    import subprocess

    from PIL import Image

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("no chromium in CI; .ci/run should have installed it")
        pytest.skip("no headless browser on this machine")

    def screenshot(page: str, name: str, width: int) -> np.ndarray:
        target = path.with_name(name)
        target.write_text(page)
        shot = target.with_suffix(f".{width}.png")
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={path.parent / 'chr'}",
                f"--window-size={width},2600",
                f"--screenshot={shot}",
                target.as_uri(),
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )
        return np.asarray(Image.open(shot).convert("L"), dtype=np.int16)

    blank = re.sub(r'src="data:image/png;base64,[^"]*"', 'src=""', html)
    ARTIFACTS.mkdir(exist_ok=True)
    for width in widths:
        with_figures = screenshot(html, "report.html", width)
        without = screenshot(blank, "report_blank.html", width)
        assert with_figures.shape[1] == width
        changed = np.abs(with_figures - without) > 30
        assert changed.mean() > 0.02, (width, changed.mean())
        shutil.copy(path.with_name(f"report.{width}.png"), ARTIFACTS / f"{path.stem}-{width}.png")


def test_sanity_checks_of_the_maps(service, loop, monkeypatch, tmp_path):
    """Adebayo et al.'s checks of the stored maps, as a job: every cascade step and the
    permuted-label refit, the verdict in the result, the strip, the list of results."""
    c, sid = service.client, loop["session"]
    results = c.get(f"/v1/sessions/{sid}/saliency", headers=service.analyst).json()
    assert results and all("sanity" not in m or m["sanity"] is None for m in results)
    key = results[0]["key"]
    url = f"/v1/sessions/{sid}/saliency/{key}/sanity"
    missing = c.get(url, headers=service.analyst)
    assert missing.status_code == 404 and "POST" in missing.json()["detail"]
    for body, status in (({"max_similarity": 2}, 422), ({"metric": "pixels"}, 422)):
        assert c.post(url, json=body, headers=service.analyst).status_code == status
    unknown = c.post(
        f"/v1/sessions/{sid}/saliency/0123456789abcdef/sanity", json={}, headers=service.analyst
    )
    assert unknown.status_code == 404 and "ask for the maps first" in unknown.json()["detail"]
    r = c.post(url, json={"max_features": 4}, headers=service.analyst)
    assert r.status_code == 202, r.text
    service.work()
    job = c.get(r.json()["links"]["job"], headers=service.analyst).json()
    assert job["state"] == "finished", job
    checks = c.get(url, headers=service.analyst).json()
    assert [s["name"] for s in checks["model_steps"]] == [
        "readout", "layer4.1", "layer4.0", "layer3", "layer2", "layer1", "stem",
    ]  # fmt: skip
    assert checks["data_step"]["name"] == "labels permuted" and checks["max_features"] == 4
    for step in [*checks["model_steps"], checks["data_step"]]:
        for side in ("out", "in"):
            assert all(-1 <= v <= 1 for v in step[side].values()), step
    # the verdict says which statistics decided it (the stand-in's verdict: RESULTS.md)
    assert checks["metric"] == "spearman_abs_and_signed" and checks["max_similarity"] == 0.5
    last = checks["model_steps"][-1]
    stayed = [n for n in ("spearman_abs", "spearman") if max(last["out"][n], last["in"][n]) >= 0.5]
    assert checks["model_failed_on"] == stayed
    assert checks["model_passed"] == (not stayed) and checks["model_verdict"].startswith(
        "passed" if not stayed else ("split" if stayed == ["spearman_abs"] else "failed")
    )
    assert checks["passed"] == (checks["model_passed"] and checks["data_passed"] is not False)
    assert set(checks["emprt"]) >= {"out", "in", "complexity_original"}
    meta = c.get(f"/v1/sessions/{sid}/saliency/{key}", headers=service.analyst).json()
    assert meta["sanity"]["passed"] is checks["passed"]
    assert meta["sanity"]["model_verdict"] == checks["model_verdict"]
    assert meta["sanity"]["model_similarity"] == checks["model_similarity"]
    png = c.get(f"{url}.png", headers=service.analyst)
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    again = c.post(url, json={"max_features": 4}, headers=service.analyst)
    assert again.status_code == 200 and again.json()["status"] == "done"

    # the rig CLI: the stored checks with their strip, and the verdict in the analysis table
    from stimloop_rig import cli
    from stimloop_rig.rig_client import RigClient
    from typer.testing import CliRunner

    token = service.analyst["Authorization"].split()[1]
    rig = RigClient("http://testserver", token, transport=service.client._transport)
    monkeypatch.setattr(cli, "_client", lambda url, tok: rig)
    runner = CliRunner()
    said = runner.invoke(
        cli.app, ["sanity", sid, key, "--out", str(tmp_path / "s.png"), "--max-features", "4"]
    )
    assert said.exit_code == 0, said.output
    words = " ".join(said.output.split())  # the terminal wraps long lines
    assert "model randomisation passed" in words and "labels permuted" in words
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    table = runner.invoke(cli.app, ["analysis", sid, "--out", str(tmp_path / "a.csv")])
    assert table.exit_code == 0, table.output
    rows = list(__import__("csv").DictReader((tmp_path / "a.csv").read_text().splitlines()))
    checked = {r["channel"]: r["maps_sanity"] for r in rows}
    assert checked[results[0]["channel"]] == "True" and "feve_object" in rows[0]

    # the report reads without the paper: how to read it, the fit metrics, the checks' strip
    html = c.get(f"/v1/sessions/{sid}/report", headers=service.analyst).text
    for words in (
        "How to read this report",
        "Fit metrics",
        "FEVE",
        "Sanity checks of the maps",
        "Mann-Whitney p, two-sided",
        "(spikes/s)",
    ):
        assert words in html, words
    assert 'alt="Sanity checks of ' in html
    assert_renders_in_a_browser(html, service.root / "analysed-report.html", widths=(1400, 900))
