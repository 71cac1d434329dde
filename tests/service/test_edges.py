"""Auth, stimulus-root confinement, idempotency, conflicts and a bad-input table: every refusal
is a 4xx problem+json and leaves the stored state as it was."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from stimloop.science.stimuli import generate_bodies, generate_control_bodies, generate_objects
from stimloop.storage.stimulus_sets import write_stimulus_set

from tests.support.service import is_problem, new_session


@pytest.fixture(scope="module")
def session(service):
    return new_session(service, "", 0, 8, channels=["a", "b"], fit={"split": [2, 2, 3]})


def trials(stimuli=("body_0000", "body_0001"), channel="a", rate=1.0):
    return {
        "stimulus": list(stimuli),
        "channel": [channel] * len(stimuli),
        "rate": [rate] * len(stimuli),
    }


def test_auth(service, session):
    c = service.client
    is_problem(c.get(f"/v1/sessions/{session}"), 401)
    is_problem(c.get(f"/v1/sessions/{session}", headers={"Authorization": "Bearer nope"}), 401)
    body = is_problem(
        c.put(f"/v1/sessions/{session}/phase1", json=trials(), headers=service.analyst), 403
    )
    assert "rig" in body["detail"]
    # a rig token may ask for saliency maps too (the rig's day needs them): here too early
    early = c.post(f"/v1/sessions/{session}/saliency", json={"channel": "a"}, headers=service.rig)
    assert "no fitted models yet" in is_problem(early, 409)["detail"]
    assert c.get("/v1/health").json()["redis"] is True  # health needs no token
    # nothing registered before a list: said, not a 500
    none_yet = c.get(f"/v1/sessions/{session}/registration", headers=service.analyst)
    assert "registered predictions" in is_problem(none_yet, 404)["detail"]
    is_problem(c.get(f"/v1/sessions/{session}/registration"), 401)


def test_a_candidate_set_too_small_for_the_picks_is_refused_at_creation(service, session):
    """3 objects cannot give 11 graded levels or 5 top picks: said before the animal works."""
    c = service.client
    base = {
        "backbone": "resnet50_random",
        "body_set": "b",
        "object_set": "o",
        "control_body_set": "c",
        "channels": ["a"],
        "fit": {"split": [2, 2, 3]},
    }
    for selection, words in (
        ({"mode": "graded"}, "11 levels"),
        ({"n_top": 5}, "top, bottom and most similar"),
    ):
        r = c.post("/v1/sessions", json={**base, "selection": selection}, headers=service.rig)
        detail = is_problem(r, 409)["detail"]
        assert words in detail and "holds 3 images" in detail, detail
    ok = {**base, "selection": {"mode": "graded", "levels": 2, "ranking": "confident"}}
    assert c.post("/v1/sessions", json=ok, headers=service.rig).status_code == 201


def test_stimulus_root_confinement(service):
    c = service.client
    (service.root / "outside").mkdir(exist_ok=True)
    write_stimulus_set(service.root / "outside", generate_objects(1, seed=0))
    is_problem(
        c.post(
            "/v1/stimulus-sets",
            headers=service.rig,
            json={"id": "x", "category": "object", "directory": "../outside"},
        ),
        403,
    )
    is_problem(
        c.post(
            "/v1/stimulus-sets",
            headers=service.rig,
            json={"id": "x", "category": "object", "directory": "/etc"},
        ),
        403,
    )
    is_problem(
        c.post(
            "/v1/stimulus-sets",
            headers=service.rig,
            json={"id": "x", "category": "object", "directory": "missing"},
        ),
        404,
    )


def test_set_registration_is_idempotent(service, session):
    c = service.client
    r = c.post(
        "/v1/stimulus-sets",
        headers=service.rig,
        json={"id": "b", "category": "body", "directory": "b"},
    )
    assert r.status_code == 200 and r.json()["count"] == 8
    is_problem(
        c.post(
            "/v1/stimulus-sets",
            headers=service.rig,
            json={"id": "b", "category": "object", "directory": "b"},
        ),
        409,
    )
    image = c.get("/v1/stimulus-sets/b/images/body_0001", headers=service.analyst)
    assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
    is_problem(c.get("/v1/stimulus-sets/b/images/nope", headers=service.analyst), 404)


def test_zip_upload(service):
    c = service.client
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for s in generate_objects(2, seed=9):
            z.writestr(f"imgs/{s.id}.png", s.png())
        z.writestr("readme.txt", "ignored")
    data = buffer.getvalue()
    url = "/v1/stimulus-sets/upload?id=zipped&category=object"
    hdr = {**service.rig, "content-type": "application/zip"}
    r = c.post(url, content=data, headers=hdr)
    assert r.status_code == 201, r.text
    assert r.json()["ids"] == ["object_0000", "object_0001"]
    assert c.post(url, content=data, headers=hdr).status_code == 200
    is_problem(
        c.post("/v1/stimulus-sets/upload?id=bad&category=object", content=b"nope", headers=hdr), 400
    )
    broken = io.BytesIO()
    with zipfile.ZipFile(broken, "w") as z:
        z.writestr("x.png", b"not a png")
    body = is_problem(
        c.post(
            "/v1/stimulus-sets/upload?id=bad&category=object",
            content=broken.getvalue(),
            headers=hdr,
        ),
        400,
    )
    assert "x.png" in body["detail"]


def npz_bytes(**columns):
    buffer = io.BytesIO()
    np.savez(buffer, **columns)
    return buffer.getvalue()


BAD = [
    (
        "wrong shapes",
        {"json": {"stimulus": ["body_0000"], "channel": ["a", "a"], "rate": [1.0]}},
        422,
        "channel",
    ),
    (
        "NaN",
        {
            "content": '{"stimulus": ["body_0000"], "channel": ["a"], "rate": [NaN]}',
            "headers": {"content-type": "application/json"},
        },
        422,
        "rate",
    ),
    ("unknown stimulus", {"json": trials(stimuli=("body_0000", "mystery_9"))}, 422, "mystery_9"),
    ("unknown channel", {"json": trials(channel="zz")}, 422, "zz"),
    ("no response column", {"json": {"stimulus": ["body_0000"], "channel": ["a"]}}, 422, "rate"),
    (
        "negative counts",
        {
            "json": {
                "stimulus": ["body_0000"],
                "channel": ["a"],
                "baseline_count": [-1],
                "response_count": [2],
            }
        },
        422,
        "negative",
    ),
    (
        "wrong content type",
        {"content": "stimulus,channel,rate", "headers": {"content-type": "text/plain"}},
        415,
        "text/csv",
    ),
    (
        "CSV with a short row",
        {"content": "stimulus,channel,rate\nb1,ch1\n", "headers": {"content-type": "text/csv"}},
        422,
        "the uploaded CSV file: row 1 (line 2) has 2 fields, the header 3",
    ),
    (
        "CSV not UTF-8",
        {
            "content": b"stimulus,channel,rate\n\xff\xfe,ch1,3\n",
            "headers": {"content-type": "text/csv"},
        },
        422,
        "not UTF-8 text at byte",
    ),
    (
        "malformed NPZ",
        {"content": b"PK\x03\x04garbage", "headers": {"content-type": "application/x-npz"}},
        422,
        "NPZ",
    ),
    (
        "NPZ with 2-D column",
        {
            "content": npz_bytes(
                stimulus=np.array(["body_0000"]), channel=np.array(["a"]), rate=np.zeros((1, 2))
            ),
            "headers": {"content-type": "application/x-npz"},
        },
        422,
        "1-D",
    ),
    (
        "NPZ with NaN",
        {
            "content": npz_bytes(
                stimulus=np.array(["body_0000"]), channel=np.array(["a"]), rate=np.array([np.nan])
            ),
            "headers": {"content-type": "application/x-npz"},
        },
        422,
        "NaN",
    ),
]


@pytest.mark.parametrize(
    ("case", "request_args", "status", "mentions"), BAD, ids=[b[0] for b in BAD]
)
def test_bad_phase_one_uploads_change_nothing(
    service, session, case, request_args, status, mentions
):
    c = service.client
    before = service.client.get(f"/v1/sessions/{session}", headers=service.rig).json()
    kwargs = dict(request_args)
    kwargs["headers"] = {**service.rig, **kwargs.get("headers", {})}
    body = is_problem(c.put(f"/v1/sessions/{session}/phase1", **kwargs), status)
    assert mentions in body["detail"], body
    after = service.client.get(f"/v1/sessions/{session}", headers=service.rig).json()
    assert after == before
    assert not (service.settings.models_store / "sessions" / session / "phase1.npz").exists()


def test_oversized_body(service, session):
    small = service.settings.model_copy(update={"max_upload_bytes": 2048})
    from fastapi.testclient import TestClient
    from stimloop.api.app import create_app

    client = TestClient(create_app(small, service.redis))
    big = trials(stimuli=["body_0000"] * 400)
    body = is_problem(
        client.put(f"/v1/sessions/{session}/phase1", json=big, headers=service.rig), 413
    )
    assert "2048" in body["detail"]


def test_bad_session_requests(service):
    c = service.client
    body = is_problem(
        c.post(
            "/v1/sessions",
            headers=service.rig,
            json={
                "body_set": "b",
                "object_set": "o",
                "control_body_set": "c",
                "channels": ["a", "a"],
            },
        ),
        422,
    )
    assert "duplicate" in body["detail"]
    is_problem(
        c.post(
            "/v1/sessions",
            headers=service.rig,
            json={
                "backbone": "resnet50_random",
                "body_set": "o",
                "object_set": "o",
                "control_body_set": "c",
                "channels": ["a"],
                "fit": {"split": [1, 2, 3]},
            },
        ),
        409,
    )
    is_problem(
        c.post(
            "/v1/sessions",
            headers=service.rig,
            json={
                "backbone": "resnet50_random",
                "body_set": "b",
                "object_set": "o",
                "control_body_set": "c",
                "channels": ["a"],
            },
        ),
        409,
    )  # 475-body split, 8 bodies
    is_problem(c.get("/v1/sessions/0123456789ab", headers=service.rig), 404)
    is_problem(c.get("/v1/sessions/../../etc", headers=service.rig), 404)
    is_problem(c.get("/v1/jobs/nope", headers=service.rig), 404)
    is_problem(c.get("/v1/sessions/0123456789ab/selection", headers=service.rig), 404)


def test_idempotent_upload_conflict_and_replace(service, session):
    c = service.client
    url = f"/v1/sessions/{session}/phase1"
    first = c.put(url, json=trials(), headers=service.rig)
    assert first.status_code == 202, first.text
    again = c.put(url, json=trials(), headers=service.rig)
    assert again.status_code == 202 and again.json()["status"] == "already received"
    assert again.json()["job"]["id"] == first.json()["job"]["id"]
    npz = npz_bytes(**{k: np.asarray(v) for k, v in trials().items()})
    same_npz = c.put(url, content=npz, headers={**service.rig, "content-type": "application/x-npz"})
    assert same_npz.json()["status"] == "already received"  # same trials, other encoding
    before = c.get(f"/v1/sessions/{session}", headers=service.rig).json()
    body = is_problem(c.put(url, json=trials(rate=2.0), headers=service.rig), 409)
    assert "replace=true" in body["detail"]
    assert c.get(f"/v1/sessions/{session}", headers=service.rig).json() == before
    replaced = c.put(url + "?replace=true", json=trials(rate=2.0), headers=service.rig)
    assert replaced.status_code == 202 and replaced.json()["job"]["id"] != first.json()["job"]["id"]
    history = c.get(f"/v1/sessions/{session}", headers=service.rig).json()["history"]
    assert history[-1]["event"] == "phase1 replaced"
    is_problem(c.put(f"/v1/sessions/{session}/phase2", json=trials(), headers=service.rig), 409)


def test_openapi_documents_the_resources(service):
    spec = service.client.get("/openapi.json").json()
    for path in (
        "/v1/health",
        "/v1/sessions/{session_id}/phase1",
        "/v1/jobs/{job_id}",
        "/v1/sessions/{session_id}/saliency",
    ):
        assert path in spec["paths"]
    assert json.dumps(spec)


def test_a_session_whose_sets_share_ids_is_refused_listing_them(service):
    from stimloop.science.stimuli import Stimulus

    root = service.settings.stimulus_root
    objects = generate_objects(2, seed=1)
    # control bodies named like two of the objects: one table could not tell them apart
    clash = [
        Stimulus(id=o.id, category="control_body", image=c.image, params={})
        for o, c in zip(objects, generate_control_bodies(2, seed=1))
    ]
    write_stimulus_set(root / "clash-b", generate_bodies(8, seed=1))
    write_stimulus_set(root / "clash-o", objects)
    write_stimulus_set(root / "clash-c", clash)
    for set_id, category in (
        ("clash-b", "body"),
        ("clash-o", "object"),
        ("clash-c", "control_body"),
    ):
        r = service.client.post(
            "/v1/stimulus-sets",
            headers=service.rig,
            json={"id": set_id, "category": category, "directory": set_id},
        )
        assert r.status_code == 201, r.text
    before = sorted(p.name for p in service.settings.sessions_dir.glob("*"))
    r = service.client.post(
        "/v1/sessions",
        headers=service.rig,
        json={
            "backbone": "resnet50_random",
            "body_set": "clash-b",
            "object_set": "clash-o",
            "control_body_set": "clash-c",
            "channels": ["a"],
            "fit": {"split": [2, 2, 3]},
        },
    )
    detail = is_problem(r, 409)["detail"]
    assert "share 2 image ids" in detail and objects[0].id in detail
    assert sorted(p.name for p in service.settings.sessions_dir.glob("*")) == before


def test_reading_a_session_never_writes_it(service):
    """A session whose fit job died is shown failed by GET, but only a change (here the
    refit) records it, in a new generation."""
    import hashlib

    from rq.job import Job, JobStatus
    from stimloop.storage.session_states import transition
    from stimloop.storage.store import Store

    sid = new_session(service, "rw", 6, 12, channels=["ch1"], fit={"split": [6, 3, 3]})
    bodies = [f"body_{i:04d}" for i in range(12)]
    trials = {
        "stimulus": bodies * 2,
        "channel": ["ch1"] * 24,
        "rate": [float(i % 5) for i in range(24)],
    }
    r = service.client.put(f"/v1/sessions/{sid}/phase1", json=trials, headers=service.rig)
    assert r.status_code == 202, r.text
    store = Store(service.settings.models_store)
    with store.locked(sid) as rec:  # as if a worker had started the fit and then died
        transition(rec, "fitting", "fit started")
    job = Job.fetch(r.json()["job"]["id"], connection=service.redis)
    job.set_status(JobStatus.STARTED)  # and no heartbeat key: its worker is gone
    path = store.files(sid).record_path
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    for _ in range(2):
        seen = service.client.get(f"/v1/sessions/{sid}", headers=service.rig).json()
        assert seen["state"] == "failed" and "lost its heartbeat" in seen["error"]
        assert seen["failed_in"] == "fit"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    generation = seen["generation"]
    r = service.client.post(f"/v1/sessions/{sid}/fit", headers=service.rig)
    assert r.status_code == 202, r.text
    after = service.client.get(f"/v1/sessions/{sid}", headers=service.rig).json()
    assert [h["event"] for h in after["history"]][-2:] == ["fit job failed", "fit resubmitted"]
    assert after["generation"] == generation + 2
    from rq import Queue

    queue = Queue(job.origin, connection=service.redis)  # leave no job to the next tests
    for job_id in (job.id, r.json()["job"]["id"]):
        queue.remove(job_id)
