"""Categories are data: a face patch's session (faces preferred, other monkeys' faces as the
controls, objects and bodies as two other categories) through the HTTP API and the rig CLI,
from creation to the report; and what a session's sets must satisfy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from stimloop.science import synthetic as sy
from stimloop.science.stimuli import generate_bodies, generate_faces, generate_objects
from stimloop.storage.stimulus_sets import write_stimulus_set

from tests.support.service import is_problem, register_sets

CHANNELS = ["f1", "f2", "f3"]
SETS = {
    "faces": ("face", lambda: generate_faces(40, seed=4)),
    "f_objects": ("object", lambda: generate_objects(10, seed=4)),
    "monkeys": ("control_face", lambda: generate_faces(8, seed=4, category="control_face")),
    "f_bodies": ("body", lambda: generate_bodies(10, seed=4)),
}


@pytest.fixture(scope="module")
def faces(service):
    """The sets registered and cached, the synthetic face cells that will be recorded."""
    images = {name: make() for name, (_, make) in SETS.items()}
    register_sets(service, {name: (SETS[name][0], items) for name, items in images.items()})
    for name in SETS:
        r = service.client.post(
            "/v1/activations",
            json={"backbone": "resnet50_random", "stimulus_set": name},
            headers=service.rig,
        )
        assert r.status_code == 202, r.text
    service.work()
    from PIL import Image
    from stimloop.science.backbone import extract_features, image_to_tensor
    from stimloop.worker.jobs import resources

    model = resources().backbone("resnet50_random")
    maps = {
        name: extract_features(model, [image_to_tensor(Image.fromarray(s.image)) for s in items])
        for name, items in images.items()
    }
    ids = {name: [s.id for s in items] for name, items in images.items()}
    neurons = sy.make_neurons(
        np.concatenate([maps["faces"], maps["monkeys"]]),
        np.concatenate([maps["f_objects"], maps["f_bodies"]]),
        CHANNELS,
        seed=7,
        config=sy.SyntheticConfig(quotient="ratio"),
    )

    def record(shown: dict[str, list[str]], seed: int) -> dict:
        rates, order = [], []
        for name, wanted in shown.items():
            rows = [ids[name].index(i) for i in wanted]
            rates.append(sy.true_responses(neurons, maps[name][rows]))
            order += wanted
        _, cols = sy.simulate_counts(np.concatenate(rates), order, CHANNELS, seed=seed)
        return {k: v.tolist() for k, v in cols.items()}

    return {"ids": ids, "record": record}


def test_a_face_session_through_the_api_and_the_rig_cli(service, faces, monkeypatch, tmp_path):
    from stimloop_rig import cli
    from stimloop_rig.rig_client import RigClient
    from typer.testing import CliRunner

    token = service.rig["Authorization"].split()[1]
    client = RigClient("http://testserver", token, transport=service.client._transport)
    monkeypatch.setattr(cli, "_client", lambda url, tok: client)
    runner = CliRunner()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"fit": {"split": [24, 8, 8], "epochs": 40, "lr": 1e-3}}))
    made = runner.invoke(
        cli.app,
        [
            "create-session",
            "--preferred-set",
            "faces",
            "--candidate-sets",
            "f_objects,monkeys,f_bodies",
            "--channels",
            ",".join(CHANNELS),
            "--backbone",
            "resnet50_random",
            "--config",
            str(config),
        ],
    )
    assert made.exit_code == 0, made.output
    sid = made.output.strip().splitlines()[-1]
    session = client.session(sid).config
    assert (session.preferred_set, session.preferred_category) == ("faces", "face")
    assert [(c.set, c.category, c.preferred) for c in session.candidate_sets] == [
        ("f_objects", "object", False),
        ("monkeys", "control_face", True),  # control_<preferred>: compared with the others
        ("f_bodies", "body", False),
    ]
    service.work()  # warms the candidates

    phase1 = tmp_path / "phase1.json"
    columns = faces["record"]({"faces": faces["ids"]["faces"]}, seed=1)
    import csv

    with open(tmp_path / "phase1.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(list(columns))
        writer.writerows(zip(*columns.values()))
    uploaded = runner.invoke(cli.app, ["phase1", sid, str(tmp_path / "phase1.csv"), "--no-wait"])
    assert uploaded.exit_code == 0, uploaded.output
    service.work()
    listed = runner.invoke(
        cli.app,
        ["phase-two-list", sid, "--out", str(tmp_path / "p2.csv"), "--json", str(phase1)],
    )
    assert listed.exit_code == 0, listed.output
    selection = json.loads(phase1.read_text())
    for c in selection["channels"]:
        if c["included"]:
            by = {(p["category"], p["role"]) for p in c["picks"]}
            assert by == {
                (cat, role)
                for cat in ("object", "control_face", "body")
                for role in ("top", "bottom", "similar")
            }
            assert c["reference"] in faces["ids"]["faces"]
    rows = list(csv.reader((tmp_path / "p2.csv").read_text().splitlines()))
    assert {r[2] for r in rows[1:]} <= {"object", "control_face", "body", "face"}
    assert sum(r[2] == "face" and r[3] == "stability" for r in rows[1:]) == len(
        selection["phase_two"]["stability_images"]
    )

    entries = selection["phase_two"]["entries"]
    shown = {
        name: [e["stimulus"] for e in entries if e["category"] == SETS[name][0]]
        for name in ("f_objects", "monkeys", "f_bodies")
    }
    shown["faces"] = selection["phase_two"]["stability_images"]
    np.savez(
        tmp_path / "phase2.npz", **{k: np.asarray(v) for k, v in faces["record"](shown, 2).items()}
    )
    uploaded = runner.invoke(cli.app, ["phase2", sid, str(tmp_path / "phase2.npz"), "--no-wait"])
    assert uploaded.exit_code == 0, uploaded.output
    service.work()
    table = runner.invoke(cli.app, ["analysis", sid, "--out", str(tmp_path / "a.csv")])
    assert table.exit_code == 0, table.output
    header = (tmp_path / "a.csv").read_text().splitlines()[0].split(",")
    for column in ("mw_p_object", "mw_p_body", "median_control_face", "r_face", "r_object"):
        assert column in header, header
    analysis = client.analysis(sid).model_dump(mode="json")
    assert analysis["categories"] == {
        "preferred": "face",
        "preferred_candidates": ["control_face"],
        "others": ["object", "body"],
    }
    for c in analysis["channels"]:
        assert [t["other"] for t in c["selectivity"]] == ["object", "body"]
        assert c["selective"] == all(t["passed"] for t in c["selectivity"])
    # the synthetic face cells prefer faces: the controls above the objects in most channels
    above = [c["selectivity"][0]["preferred_above"] for c in analysis["channels"]]
    assert sum(above) >= 2, analysis["channels"]

    report = runner.invoke(cli.app, ["report", sid, "--out", str(tmp_path / "r.html")])
    assert report.exit_code == 0, report.output
    html = (tmp_path / "r.html").read_text()
    assert "preferred category face" in html and "control_face (monkeys, preferred)" in html
    assert "Mann-Whitney p, two-sided (vs body)" in html


def test_a_sessions_sets_are_checked_before_it_is_created(service, faces):
    c = service.client

    def create(**sets) -> object:
        body = {"backbone": "resnet50_random", "channels": ["a"], **sets}
        body.setdefault("fit", {"split": [24, 8, 8]})
        return c.post("/v1/sessions", json=body, headers=service.rig)

    twice = create(
        preferred_set="faces",
        candidate_sets=[{"set": "f_objects"}, {"set": "f_objects", "preferred": False}],
    )
    assert "once" in is_problem(twice, 409)["detail"]
    mixed = create(preferred_set="faces", body_set="f_bodies")
    is_problem(mixed, 422)  # one form or the other: no schema holds both
    only_preferred = create(preferred_set="faces", candidate_sets=[{"set": "monkeys"}])
    assert "another category" in is_problem(only_preferred, 409)["detail"]
    small = create(preferred_set="monkeys", candidate_sets=[{"set": "f_objects"}])
    assert "'monkeys' has 8" in is_problem(small, 409)["detail"]
    wrong = create(body_set="faces", object_set="f_objects", control_body_set="monkeys")
    assert "holds face images, not body" in is_problem(wrong, 409)["detail"]
    write_stimulus_set(service.settings.stimulus_root / "more_objects", generate_objects(4, seed=9))
    r = c.post(
        "/v1/stimulus-sets",
        json={"id": "more_objects", "category": "object", "directory": "more_objects"},
        headers=service.rig,
    )
    assert r.status_code == 201, r.text
    same = create(
        preferred_set="faces", candidate_sets=[{"set": "f_objects"}, {"set": "more_objects"}]
    )
    assert "category 'object'" in is_problem(same, 409)["detail"]
    bad = c.post(
        "/v1/stimulus-sets",
        json={"id": "x", "category": "Faces!", "directory": "faces"},
        headers=service.rig,
    )
    assert bad.status_code == 422


def test_a_session_stored_before_categories_became_data_is_refused_saying_what_to_do(service):
    """An earlier version's record (the three fixed sets) is answered 410 with what to do, and
    left out of the list; nothing else breaks."""
    import uuid

    folder = service.settings.sessions_dir / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True)
    (folder / "session.json").write_text(
        json.dumps(
            {
                "id": folder.name,
                "created": "2026-11-01T00:00:00+00:00",
                "state": "created",
                "config": {"body_set": "b", "object_set": "o", "control_body_set": "c"},
                "uploads": {},
                "jobs": {},
                "history": [],
            }
        )
    )
    r = service.client.get(f"/v1/sessions/{folder.name}", headers=service.rig)
    detail = is_problem(r, 410)["detail"]
    assert "earlier version" in detail and "create a new session" in detail
    listed = service.client.get("/v1/sessions", headers=service.rig)
    assert listed.status_code == 200
    assert folder.name not in {s["id"] for s in listed.json()}
