"""Faults and lifecycle in one process: stale jobs write nothing, who may cancel what, two
deployments on one Redis, Redis down, and health while a large upload is processed."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import numpy as np
import pytest
from redis import Redis

from tests.support.service import cleanup, is_problem, new_session, redis_test_url

BODIES = [f"body_{i:04d}" for i in range(10)]


@pytest.fixture(scope="module")
def session(service):
    return new_session(
        service,
        "l",
        3,
        10,
        channels=["a", "b"],
        fit={"split": [4, 3, 3], "epochs": 3},
        selection={"stability_images": 2},
    )


def phase_one(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    cols = {"stimulus": [], "channel": [], "rate": []}
    for ch in ("a", "b"):
        base = rng.normal(20, 8, len(BODIES))
        for i, body in enumerate(BODIES):
            for _ in range(4):
                cols["stimulus"].append(body)
                cols["channel"].append(ch)
                cols["rate"].append(float(base[i] + rng.normal(0, 1)))
    return cols


def test_a_stale_job_writes_nothing_and_changes_no_state(service, session):
    from stimloop.storage.cache import ActivationCache
    from stimloop.worker import jobs
    from stimloop.worker.context import WorkerContext

    c = service.client
    first = c.put(f"/v1/sessions/{session}/phase1", headers=service.rig, json=phase_one(1))
    assert first.status_code == 202, first.text
    replaced = c.put(
        f"/v1/sessions/{session}/phase1?replace=true", headers=service.rig, json=phase_one(2)
    )
    assert replaced.status_code == 202, replaced.text
    record = c.get(f"/v1/sessions/{session}", headers=service.rig).json()
    assert record["generation"] == 2 and record["state"] == "phase1_received"

    jobs.install_resources(
        WorkerContext(service.settings, ActivationCache(service.redis, service.settings.key_prefix))
    )
    stale = jobs.run_fit(session, 1)  # the first upload's fit, run late
    assert stale["stale"] and "generation 1" in stale["message"]
    after = c.get(f"/v1/sessions/{session}", headers=service.rig).json()
    assert (after["state"], after["generation"]) == ("phase1_received", 2)
    assert after["history"] == record["history"]
    assert not (service.settings.sessions_dir / session / "selection.json").exists()

    service.work()  # both queued fits: the stale one is a no-op, the current one selects
    done = c.get(f"/v1/sessions/{session}", headers=service.rig).json()
    assert done["state"] == "selected" and done["generation"] == 2
    events = [h["event"] for h in done["history"]]
    assert events.count("fit started") == 1 and events[-1] == "selection ready"
    # a rerun of the first fit now, or of the finished one, changes nothing
    assert jobs.run_fit(session, 1)["stale"]
    assert c.get(f"/v1/sessions/{session}", headers=service.rig).json() == done
    refit = c.post(f"/v1/sessions/{session}/fit", headers=service.rig)
    assert "replace=true" in is_problem(refit, 409)["detail"]  # no rewind of a finished fit


def test_an_analyst_cancels_only_its_own_saliency_jobs(service, session):
    from stimloop.api.auth import create_token, digest
    from stimloop.worker.queue import enqueue

    c = service.client
    fit = c.post(
        "/v1/activations",
        headers=service.rig,
        json={"backbone": "resnet50_random", "stimulus_set": "lo"},
    ).json()["job"]["id"]
    refused = c.delete(f"/v1/jobs/{fit}", headers=service.analyst)
    assert "analyst" in is_problem(refused, 403)["detail"]
    assert c.get(f"/v1/jobs/{fit}", headers=service.rig).json()["state"] == "queued"

    token = service.analyst["Authorization"].split()[1]
    other = create_token(service.settings.tokens_path, "analyst", "other")
    job = enqueue(
        service.settings,
        service.redis,
        "saliency",
        "stimloop.worker.jobs.run_saliency",
        session,
        {},
        "k",
        0,
        session=session,
        owner=digest(token)[:16],
    )
    theirs = c.delete(f"/v1/jobs/{job.id}", headers={"Authorization": f"Bearer {other}"})
    is_problem(theirs, 403)
    mine = c.delete(f"/v1/jobs/{job.id}", headers=service.analyst)
    assert mine.status_code == 200 and mine.json()["state"] == "canceled"
    assert c.delete(f"/v1/jobs/{fit}", headers=service.rig).status_code == 200


def test_two_deployments_on_one_redis_never_see_each_others_jobs(service, tmp_path):
    from fastapi.testclient import TestClient
    from stimloop.api.app import create_app

    other_settings = service.settings.model_copy(
        update={"key_prefix": f"stimloop-test-other-{uuid.uuid4().hex[:6]}"}
    )
    other = TestClient(create_app(other_settings, service.redis), raise_server_exceptions=False)
    try:
        job = service.client.post(
            "/v1/activations",
            headers=service.rig,
            json={"backbone": "resnet50_random", "stimulus_set": "lc"},
        ).json()["job"]["id"]
        assert service.client.get(f"/v1/jobs/{job}", headers=service.rig).status_code == 200
        is_problem(other.get(f"/v1/jobs/{job}", headers=service.rig), 404)
        is_problem(other.delete(f"/v1/jobs/{job}", headers=service.rig), 404)
        assert service.client.get(f"/v1/jobs/{job}", headers=service.rig).json()["state"] == (
            "queued"
        )
        health = other.get("/v1/health").json()
        assert health["workers"] == 0
    finally:
        cleanup(service.redis, other_settings)


def test_redis_down_is_503_with_retry_after_and_health_is_degraded(service):
    from fastapi.testclient import TestClient
    from stimloop.api.app import create_app

    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, socket_timeout=0.5)
    c = TestClient(create_app(service.settings, dead), raise_server_exceptions=False)
    r = c.get("/v1/jobs/abc", headers=service.rig)
    body = is_problem(r, 503)
    assert r.headers["retry-after"] == "5" and "Redis" in body["detail"]
    health = c.get("/v1/health")
    assert health.status_code == 200 and health.json()["status"] == "degraded"
    assert any("Redis" in p for p in health.json()["problems"])
    # what needs only the store still answers
    assert c.get("/v1/sessions", headers=service.rig).status_code == 200


@pytest.mark.processes
def test_health_answers_quickly_while_a_32_mib_upload_is_processed(service, session):
    """The API as its own process (`stimloop serve --workers 0` on this store and Redis)."""
    import json
    import subprocess

    from stimloop.serve import free_port

    from tests.support.processes import STIMLOOP, user_env

    port = free_port()
    env = {
        **user_env(),
        "STIMLOOP_MODELS_STORE": str(service.settings.models_store),
        "STIMLOOP_STIMULUS_ROOT": str(service.settings.stimulus_root),
        "STIMLOOP_REDIS_URL": redis_test_url(),
        "STIMLOOP_KEY_PREFIX": service.settings.key_prefix,
    }
    server = subprocess.Popen(
        [STIMLOOP, "serve", "--workers", "0", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{base}/v1/health", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    time.sleep(1.0)  # the upload process finishes starting
    # about 32 MiB of JSON trials with valid ids: the whole upload path runs
    n = 1_100_000
    cols = {
        "stimulus": [BODIES[i % 10] for i in range(n)],
        "channel": ["a" if i % 2 else "b" for i in range(n)],
        "rate": [float(i % 97) + 0.123456789 for i in range(n)],
    }
    body = json.dumps(cols).encode()
    assert len(body) > 32 * 2**20
    done = threading.Event()
    result = {}

    def upload() -> None:
        r = httpx.put(
            f"{base}/v1/sessions/{session}/phase1?replace=true",
            content=body,
            headers={**service.rig, "Content-Type": "application/json"},
            timeout=120,
        )
        result["status"] = r.status_code
        done.set()

    def health() -> float:
        t = time.perf_counter()
        assert httpx.get(f"{base}/v1/health", timeout=5).status_code == 200
        return time.perf_counter() - t

    idle = max(health() for _ in range(5))  # this box, now: the figure the bound scales
    try:
        sender = threading.Thread(target=upload)
        sender.start()
        latencies = []
        time.sleep(0.3)  # the body is on its way / being processed
        while not done.is_set():
            latencies.append(health())
            time.sleep(0.05)
        sender.join()
        assert result["status"] == 202, result
        assert len(latencies) >= 3, latencies  # the upload took a while
        # a loop held by the upload would answer after it, seconds later; the bound is the old
        # 200 ms, or ten times this box's own idle answer where that is more (a busy box)
        assert max(latencies) < max(0.2, 10 * idle), (latencies, idle)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_failed_phase_three_job_is_shown_with_the_session(service):
    """Phase three has no state of its own: its job's failure is kept beside the session and
    in its history, and a stale one's is not."""
    from stimloop.storage.cache import ActivationCache
    from stimloop.storage.session import NotFoundError
    from stimloop.worker import jobs
    from stimloop.worker.context import WorkerContext
    from stimloop_contract.phase_three import PhaseThreeRequest

    # A session of its own, never fitted (the module's session may hold readouts by now).
    session = new_session(
        service,
        "lp",
        3,
        10,
        channels=["a"],
        fit={"split": [4, 3, 3]},
        selection={"stability_images": 2},
    )

    jobs.install_resources(
        WorkerContext(service.settings, ActivationCache(service.redis, service.settings.key_prefix))
    )
    record = service.client.get(f"/v1/sessions/{session}", headers=service.rig).json()
    generation = record["generation"]
    asked = PhaseThreeRequest(q=[0.25])  # as the API enqueues it: the validated request
    with pytest.raises(NotFoundError):  # no readouts here: the list cannot be built
        jobs.run_phase3(session, asked, "k" * 16, generation)
    seen = service.client.get(f"/v1/sessions/{session}", headers=service.rig).json()
    assert seen["phase3"]["error"].startswith("list: ")
    assert "no fitted models yet" in seen["phase3"]["error"]
    assert seen["history"][-1]["event"] == "phase3 list failed"
    assert (seen["state"], seen["generation"]) == (record["state"], generation)
    stale = jobs.run_phase3(session, asked, "k" * 16, generation - 1)
    assert stale["stale"]
    after = service.client.get(f"/v1/sessions/{session}", headers=service.rig).json()
    assert after["history"] == seen["history"]


def test_warming_reports_every_set_as_it_goes(service, session):
    """Warming a session's candidates, the step that ran for minutes in silence, reports each
    set's maps and the silhouettes as it reads or computes them."""
    from stimloop.storage.cache import ActivationCache
    from stimloop.worker import precompute
    from stimloop.worker.context import WorkerContext

    seen: list[tuple[str, float, str]] = []
    res = WorkerContext(
        service.settings, ActivationCache(service.redis, service.settings.key_prefix)
    )
    precompute.warm_session(res, session, lambda *step: seen.append(step))
    named = " ".join(message for _, _, message in seen)
    assert all(f"maps of {s}" in named for s in ("lo", "lc", "lb")), seen
    assert {"warming", "silhouettes"} <= {stage for stage, _, _ in seen}
    assert seen[-1][:2] == ("done", 1.0)
    done = [p for stage, p, m in seen if stage == "warming" and "maps of lo" in m]
    assert done == sorted(done) and done[-1] == 1.0
