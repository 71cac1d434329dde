"""The loop run from the session pages, in-process (the browser run is tests/test_ui.py): a
session created from the list's form with its label, animal and notes; the list filtered and
sorted by them; phase one and two uploaded as the files the rig writes, refused in the same
words as ``/v1``, naming the file and row; every job of the session with its place, time and
estimate, cancelled from the page by whom may; no second fit while one is queued; a failed
preparation shown failed in one line; downloads of the sequence and of the list for MATLAB and
Octave (read back by Octave); an unknown page as HTML with a way back."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from tests.support.loop import CHANNELS, FIT, SELECTION, simulate
from tests.support.service import is_problem, new_session
from tests.support.ui import ORIGIN, as_, signed


def csv_bytes(cols: dict[str, np.ndarray]) -> bytes:
    """Trial columns as the rig's CSV table."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(list(cols))
    writer.writerows(zip(*(np.asarray(cols[k]).tolist() for k in cols)))
    return buffer.getvalue().encode()


def form(**fields: str) -> dict[str, str]:
    """The list page's create form as the browser sends it."""
    return {
        "backbone": "resnet50_random",
        "body_set": "bodies",
        "object_set": "objects",
        "control_body_set": "controls",
        "channels": ", ".join(CHANNELS),
        "settings": json.dumps({"fit": {"epochs": 20, "lr": 0.001}, "selection": SELECTION}),
        "split": ",".join(str(n) for n in FIT["split"]),
        "seed": "3",
        **fields,
    }


def created(service, cookie, **fields) -> str:
    r = as_(service, cookie).post(
        "/ui/sessions", data=form(**fields), headers=ORIGIN, follow_redirects=False
    )
    assert r.status_code == 303, r.text[-800:]
    return r.headers["location"].rsplit("/", 1)[1]


def upload(service, cookie, sid: str, phase: str, name: str, data: bytes, **params):
    return as_(service, cookie).post(
        f"/ui/sessions/{sid}/upload/{phase}",
        params={"name": name, **params},
        content=data,
        headers={**ORIGIN, "content-type": "application/octet-stream"},
    )


def test_a_session_from_the_page_to_its_analysis(service, loop):
    rig = signed(service, service.rig)
    analyst = signed(service, service.analyst)

    # the form: refused without an animal's valid age, from an analyst, from elsewhere
    bad = as_(service, rig).post("/ui/sessions", data=form(age="7 years"), headers=ORIGIN)
    assert bad.status_code == 422 and "subject.age" in bad.text
    bad = as_(service, rig).post("/ui/sessions", data=form(settings="{fit: 1}"), headers=ORIGIN)
    assert bad.status_code == 422 and "settings: not JSON" in bad.text
    bad = as_(service, rig).post("/ui/sessions", data=form(settings='{"seed": 1}'), headers=ORIGIN)
    assert bad.status_code == 422 and "the sections" in bad.text
    bad = as_(service, rig).post("/ui/sessions", data=form(body_set="nope"), headers=ORIGIN)
    assert bad.status_code == 404 and "nope" in bad.text
    assert (
        as_(service, analyst).post("/ui/sessions", data=form(), headers=ORIGIN).status_code == 403
    )
    forged = as_(service, rig).post(
        "/ui/sessions", data=form(), headers={"Origin": "http://evil.example"}
    )
    assert forged.status_code == 403
    assert 'id="create-form"' not in as_(service, analyst).get("/ui/sessions").text

    key = "0123abcd"
    sid = created(
        service,
        rig,
        label="M7 day 3, array A",
        subject_id="M7",
        species="Macaca mulatta",
        sex="F",
        age="P6Y",
        notes="left hemisphere\r\nreward 0.2 ml",
        form_key=key,
    )
    assert created(service, rig, form_key=key) == sid  # a second press: the same session
    other = created(service, rig, label="M2 pilot", subject_id="M2")
    info = service.client.get(f"/v1/sessions/{sid}", headers=service.rig).json()
    assert info["config"]["label"] == "M7 day 3, array A"
    assert info["config"]["subject"] == {
        "subject_id": "M7",
        "species": "Macaca mulatta",
        "sex": "F",
        "age": "P6Y",
    }
    assert info["config"]["notes"] == "left hemisphere\nreward 0.2 ml"
    assert info["config"]["fit"]["split"] == FIT["split"] and info["config"]["seed"] == 3

    # the list: filtered by animal, text, state and date; sorted by label
    def listed(**query) -> list[str]:
        page = as_(service, rig).get("/ui/sessions", params=query).text
        return re.findall(r'<a href="/ui/sessions/([0-9a-f]{12})">', page)

    assert listed(subject="M7") == [sid]
    assert listed(q="reward") == [sid] and listed(q="PILOT") == [other]
    assert sid in listed(state="created") and sid not in listed(state="analysed")
    today = info["created"][:10]
    assert sid in listed(since=today, until=today) and listed(until="2000-01-01") == []
    by_label = listed(sort="label")
    assert by_label.index(other) < by_label.index(sid)  # "M2 pilot" before "M7 day 3"
    page = as_(service, rig).get("/ui/sessions").text
    assert "M7 day 3, array A" in page and '<option value="M7"' in page

    # its page: label, animal, notes; the warm job among its jobs
    page = as_(service, rig).get(f"/ui/sessions/{sid}").text
    assert 'id="label">M7 day 3, array A<' in page and "Macaca mulatta" in page
    assert "reward 0.2 ml" in page and 'id="upload-phase1"' in page
    assert 'id="upload-phase2"' not in page  # no list yet
    assert 'id="upload-phase1"' not in as_(service, analyst).get(f"/ui/sessions/{sid}").text
    live = as_(service, rig).get(f"/ui/sessions/{sid}/progress").json()
    assert [j["kind"] for j in live["jobs"]] == ["warm"]
    warm = live["jobs"][0]
    assert warm["state"] == "queued" and warm["cancellable"] and warm["elapsed_s"] >= 0
    assert warm["ahead"] is not None
    service.work()

    # phase one from the page: refusals name the file and row, as the rig CLI's do
    cols = simulate(loop, {"bodies": loop["maps"]["bodies"][0]}, seed=1)
    good = csv_bytes(cols)
    lines = good.decode().splitlines()
    broken = "\n".join([lines[0], lines[1], lines[2] + ",7", *lines[3:]]).encode()
    r = upload(service, rig, sid, "phase1", "day3 phase1.csv", broken)
    said = is_problem(r, 422)["detail"]
    assert "day3 phase1.csv: row 2 (line 3) has 6 fields, the header 5" in said
    r = upload(service, rig, sid, "phase1", "phase1.plx", b"PLEX")
    assert "goes through stimloop-rig" in is_problem(r, 415)["detail"]
    r = upload(service, analyst, sid, "phase1", "phase1.csv", good)
    assert "Only a rig token" in is_problem(r, 403)["detail"]
    r = as_(service, rig).post(
        f"/ui/sessions/{sid}/upload/phase1",
        params={"name": "phase1.csv"},
        content=good,
        headers={"Origin": "http://evil.example"},
    )
    assert "did not come from" in is_problem(r, 403)["detail"]
    assert service.client.get(f"/v1/sessions/{sid}", headers=service.rig).json()["uploads"] == {}
    r = upload(service, rig, sid, "phase1", "phase1.csv", good)
    assert r.status_code == 202 and r.json()["job"]["kind"] == "fit", r.text
    # the same file as the rig CLI sends it (NPZ over /v1): the same upload, nothing new
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in cols.items()})
    again = service.client.put(
        f"/v1/sessions/{sid}/phase1",
        content=buffer.getvalue(),
        headers={**service.rig, "content-type": "application/octet-stream"},
    )
    assert again.json()["status"] == "already received", again.text

    # the fit is queued: no second one (page or API), cancelled by the rig, not the analyst
    page = as_(service, rig).get(f"/ui/sessions/{sid}").text
    assert 'id="refit"' not in page and 'class="cancel"' in page
    r = service.client.post(f"/v1/sessions/{sid}/fit", headers=service.rig)
    assert "still queued or running" in is_problem(r, 409)["detail"]
    jobs = as_(service, rig).get(f"/ui/sessions/{sid}/progress").json()["jobs"]
    fit = jobs[0]
    assert fit["kind"] == "fit" and fit["state"] == "queued" and fit["ahead"] == 0
    assert not next(
        j
        for j in as_(service, analyst).get(f"/ui/sessions/{sid}/progress").json()["jobs"]
        if j["kind"] == "fit"
    )["cancellable"]
    refused = as_(service, analyst).post(
        f"/ui/jobs/{fit['id']}/cancel", data={"session": sid}, headers=ORIGIN
    )
    assert refused.status_code == 403 and "ask the rig" in refused.text
    done = as_(service, rig).post(
        f"/ui/jobs/{fit['id']}/cancel",
        data={"session": sid},
        headers=ORIGIN,
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == f"/ui/sessions/{sid}#jobs"
    jobs = as_(service, rig).get(f"/ui/sessions/{sid}/progress").json()["jobs"]
    assert jobs[0]["state"] == "canceled" and not jobs[0]["cancellable"]
    page = as_(service, rig).get(f"/ui/sessions/{sid}").text
    assert 'id="refit"' in page  # now the fit may run again
    fitted = as_(service, rig).post(
        f"/ui/sessions/{sid}/refit", headers=ORIGIN, follow_redirects=False
    )
    assert fitted.status_code == 303
    service.work()
    info = service.client.get(f"/v1/sessions/{sid}", headers=service.rig).json()
    assert info["state"] == "selected", info["error"]
    jobs = as_(service, rig).get(f"/ui/sessions/{sid}/progress").json()["jobs"]
    assert [(j["kind"], j["state"]) for j in jobs] == [
        ("fit", "finished"),
        ("fit", "canceled"),
        ("warm", "finished"),
    ]
    assert jobs[0]["elapsed_s"] > 0 and jobs[0]["remaining_s"] is None

    # the list and its sequence, downloaded as the presentation software reads them
    selection = service.client.get(f"/v1/sessions/{sid}/selection", headers=service.rig).json()
    sequence = as_(service, rig).get(f"/ui/sessions/{sid}/files/sequence-csv")
    assert sequence.status_code == 200
    rows = list(csv.reader(io.StringIO(sequence.text)))
    assert rows[0] == ["order", "stimulus", "category"]
    assert [r[1] for r in rows[1:]] == selection["sequence"]
    assert [int(r[0]) for r in rows[1:]] == list(range(1, len(selection["sequence"]) + 1))
    mat = as_(service, rig).get(f"/ui/sessions/{sid}/files/selection-mat")
    assert mat.status_code == 200
    listed_csv = as_(service, rig).get(f"/ui/sessions/{sid}/files/selection-csv").text
    listed_rows = list(csv.reader(io.StringIO(listed_csv)))[1:]
    read = octave_reads(mat.content)
    assert read["session"] == sid
    assert read["sequence"] == selection["sequence"]
    assert read["list"] == [r[1] for r in listed_rows]
    assert read["orders"] == [float(k) for k in range(1, len(selection["sequence"]) + 1)]

    # phase two from the page, as a semicolon CSV with decimal commas (Excel's, many locales)
    shown = sorted(set(selection["sequence"]))
    by_set = {
        s: [i for i in loop["maps"][s][0] if i in shown] for s in ("bodies", "objects", "controls")
    }
    cols2 = simulate(loop, by_set, seed=2)
    net = (cols2.pop("response_count") - cols2.pop("baseline_count")) / 0.2 + 0.5  # spikes/s
    cols2["rate"] = net
    text = csv_bytes(cols2).decode().replace(",", ";")
    text = re.sub(r"(\d)\.5\b", r"\1,5", text)
    assert ";12,5" in text or ",5\n" in text or ",5\r\n" in text
    r = upload(service, rig, sid, "phase2", "phase2.csv", text.encode())
    assert r.status_code == 202 and r.json()["job"]["kind"] == "analysis", r.text
    service.work()
    info = service.client.get(f"/v1/sessions/{sid}", headers=service.rig).json()
    assert info["state"] == "analysed", info["error"]
    page = as_(service, rig).get(f"/ui/sessions/{sid}").text
    assert 'id="analysis"' in page and "replace the trials in" in page


def octave_reads(data: bytes) -> dict:
    """What GNU Octave's own ``load`` reads from the list's MAT-file: the session id, the
    sequence's and the list's stimulus ids, and the sequence's order."""
    octave = shutil.which("octave") or shutil.which("octave-cli")
    if octave is None:
        pytest.skip("GNU Octave is not installed on this machine (apt-get install octave)")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "list.mat").write_bytes(data)
        script = (
            "d = load('list.mat');"
            "printf('session=%s\\n', d.session);"
            "printf('sequence=%s\\n', strjoin(d.sequence.stimulus', ','));"
            "printf('list=%s\\n', strjoin(d.list.stimulus', ','));"
            "printf('orders=%s\\n', strjoin(arrayfun(@num2str, d.sequence.order', "
            "'UniformOutput', false), ','));"
            "printf('class=%s\\n', class(d.sequence.order));"
        )
        said = subprocess.run(
            [octave, "--no-gui", "--quiet", "--norc", "--eval", script],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert said.returncode == 0, said.stderr
    found = dict(line.split("=", 1) for line in said.stdout.splitlines() if "=" in line)
    assert found["class"] == "double"
    return {
        "session": found["session"],
        "sequence": found["sequence"].split(","),
        "list": found["list"].split(","),
        "orders": [float(v) for v in found["orders"].split(",")],
    }


def test_a_failed_preparation_is_one_line_and_the_list_says_failed(service):
    rig = signed(service, service.rig)
    sid = new_session(service, "uif", 5, 8, channels=["a"], fit={"split": [2, 2, 3]})
    shutil.rmtree(service.settings.stimulus_root / "uifo")  # the objects' images are gone
    service.work()
    page = as_(service, rig).get("/ui/sessions", params={"state": "failed"}).text
    assert f'href="/ui/sessions/{sid}"' in page and "failed (preparation)" in page
    page = as_(service, rig).get(f"/ui/sessions/{sid}").text
    failure = re.search(r'id="job-failure" class="bad">([^<]*)<', page).group(1)
    assert failure.startswith("preparing the session (the candidates&#39; features) failed: ")
    assert "What to do: fix the named image or set" in failure
    assert "stimloop.science" not in failure and "Error:" not in failure
    assert 'id="job-progress"' not in page  # no full bar on a failed job
    live = as_(service, rig).get(f"/ui/sessions/{sid}/progress").json()
    assert live["state"] == "failed" and live["jobs"][0]["failure"].count("\n") == 0


def test_an_unknown_page_is_a_page_with_a_way_back(service):
    rig = signed(service, service.rig)
    html = {"accept": "text/html,application/xhtml+xml"}
    for path in ("/ui/sessions/0123456789ab", "/ui/sessions/not-an-id", "/ui/nothing/here"):
        r = as_(service, rig).get(path, headers=html)
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html"), path
        assert 'href="/ui/sessions" id="back"' in r.text and "signed in: rig" in r.text
    # the API and the page's script still get problem+json
    is_problem(service.client.get("/v1/sessions/0123456789ab", headers=service.rig), 404)
    r = as_(service, rig).get("/ui/sessions/0123456789ab/progress")
    is_problem(r, 404)


def test_hostile_page_forms_are_refused_and_change_nothing(service):
    from stimloop.api.request_gate import RequestGate

    rig = signed(service, service.rig)
    analyst = signed(service, service.analyst)
    sid = new_session(service, "uih2", 6, 12, channels=["ch01"], fit={"split": [6, 3, 3]})
    before = service.client.get(f"/v1/sessions/{sid}", headers=service.rig).json()
    r = as_(service, None).post(
        f"/ui/sessions/{sid}/upload/phase1", params={"name": "a.csv"}, content=b"x", headers=ORIGIN
    )
    assert is_problem(r, 401)["detail"] == "sign in at /ui/login"
    # the page's uploads have the upload routes' size limit, not the JSON routes'
    gate = RequestGate(None, service.settings)
    assert gate.limit(f"/ui/sessions/{sid}/upload/phase2")[1] == "STIMLOOP_MAX_UPLOAD_BYTES"
    assert gate.limit(f"/ui/sessions/{sid}/refit")[1] == "STIMLOOP_MAX_JSON_BYTES"
    r = upload(service, rig, sid, "phase1", "t.csv", b"stimulus,channel,rate\nb,ch01,1\n")
    assert "not in the preferred set" in is_problem(r, 422)["detail"]
    deep = as_(service, rig).post("/ui/sessions", data=form(settings="[" * 19000), headers=ORIGIN)
    assert deep.status_code == 422 and "settings: not JSON" in deep.text
    r = as_(service, rig).post("/ui/sessions", data=form(label="a\x01b"), headers=ORIGIN)
    assert r.status_code == 422 and "label" in r.text
    missing = as_(service, rig).post(
        "/ui/jobs/0123abcd-0000-0000-0000-000000000000/cancel",
        data={"session": sid},
        headers=ORIGIN,
    )
    assert missing.status_code == 404 and "does not exist" in missing.text
    odd = as_(service, rig).post("/ui/jobs/..%2Fx/cancel", data={"session": sid}, headers=ORIGIN)
    assert odd.status_code in (404, 422)
    warm = service.client.get(f"/v1/sessions/{sid}", headers=service.rig).json()["jobs"]["warm"]
    r = as_(service, analyst).post(f"/ui/jobs/{warm}/cancel", data={"session": sid}, headers=ORIGIN)
    assert r.status_code == 403 and "ask the rig" in r.text
    after = service.client.get(f"/v1/sessions/{sid}", headers=service.rig).json()
    assert after["uploads"] == before["uploads"] == {} and after["state"] == before["state"]


def test_spike_times_from_the_page_are_the_trials_the_rig_counts(service, tmp_path):
    from stimloop_rig.readers import read_spike_npz

    rig = signed(service, service.rig)
    sid = new_session(service, "uisp", 7, 12, channels=["ch01", "ch02"], fit={"split": [6, 3, 3]})
    bodies = [f"body_{i:04d}" for i in range(12)]
    rng = np.random.default_rng(7)
    codes = np.repeat(np.arange(12), 3)
    rng.shuffle(codes)
    onsets = 1.0 + 0.45 * np.arange(len(codes))
    arrays = {
        "event_times": onsets,
        "event_codes": codes,
        "code_ids": np.array(bodies),
        "spikes_ch01": np.sort(rng.uniform(0, onsets[-1] + 1, 900)),
        "spikes_ch02": np.sort(rng.uniform(0, onsets[-1] + 1, 300)),
    }
    path = tmp_path / "spikes.npz"
    np.savez(path, **arrays)
    incomplete = io.BytesIO()
    np.savez(incomplete, **{k: v for k, v in arrays.items() if k != "code_ids"})
    r = upload(service, rig, sid, "phase1", "spikes.npz", incomplete.getvalue())
    assert "spikes.npz: missing array 'code_ids'" in is_problem(r, 422)["detail"]
    naive = {"recording_start": "2026-12-06T14:03:00"}  # no UTC offset: the form always adds one
    r = upload(service, rig, sid, "phase1", "spikes.npz", path.read_bytes(), **naive)
    assert "timezone" in is_problem(r, 422)["detail"]
    start = {"recording_start": "2026-12-06T14:03:00+01:00"}
    r = upload(service, rig, sid, "phase1", "spikes.npz", path.read_bytes(), **start)
    assert r.status_code == 202, r.text
    # the same file counted at the rig, in the session's windows, is the same upload
    windows = service.client.get(f"/v1/sessions/{sid}", headers=service.rig).json()["config"]
    counted = read_spike_npz(path, **{k: tuple(v) for k, v in windows["windows"].items()})
    buffer = io.BytesIO()
    np.savez(buffer, **counted)
    again = service.client.put(
        f"/v1/sessions/{sid}/phase1",
        content=buffer.getvalue(),
        params=start,
        headers={**service.rig, "content-type": "application/octet-stream"},
    )
    assert again.json()["status"] == "already received", again.text
    assert len(counted["stimulus"]) == 2 * len(codes)
    stored = service.client.get(f"/v1/sessions/{sid}", headers=service.rig).json()
    assert stored["uploads"]["phase1"]["recording_start"] == start["recording_start"]


def test_the_form_chooses_the_papers_backbone_when_its_weights_are_in(monkeypatch, tmp_path):
    from stimloop.api.ui import views
    from stimloop.storage.registry import default_registry_path, load_registry

    class NoSets:
        def list_sets(self) -> list:
            return []

    registry = load_registry(default_registry_path())
    assert views.create_form(NoSets(), registry, tmp_path)["chosen_backbone"] == "resnet50_random"
    monkeypatch.setattr(views, "weights_problem", lambda spec, folder: None)  # all in place
    chosen = views.create_form(NoSets(), registry, tmp_path)["chosen_backbone"]
    assert chosen == "resnet50_robust_l2_eps3"
