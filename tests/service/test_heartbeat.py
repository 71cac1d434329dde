"""Liveness from the worker's heartbeat, not from progress: a job that computes for longer than
the stale window without reporting is alive; a frozen worker (SIGSTOP) is found dead within the
window, and once resumed (SIGCONT) its job writes nothing. A real ``stimloop worker`` process
against the CI Redis, the API in this process."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import pytest
from redis import Redis

from tests.support.paths import REGISTRY
from tests.support.processes import STIMLOOP
from tests.support.service import cleanup, phase_one, redis_test_url

STALE_S = 6.0  # the stale window: wide enough for a busy 2-core box to keep its beat


@pytest.mark.redis
def test_the_heartbeat_keeps_its_key_while_the_block_runs_and_a_lapse_is_final():
    from stimloop.worker.heartbeat import Heartbeat, JobLostError

    redis = Redis.from_url(redis_test_url())
    key = f"stimloop-beat-test-{uuid.uuid4().hex[:8]}"
    with Heartbeat(redis, key, stale_s=0.4) as beat:
        time.sleep(1.5)  # over three lifetimes of the key, with no other sign of life
        assert redis.exists(key)
        beat.check(confirm=True)
        redis.delete(key)  # what expiry does to a frozen worker's key
        with pytest.raises(JobLostError):
            beat.check(confirm=True)
        time.sleep(0.3)
        assert not redis.exists(key)  # never recreated once lapsed
        with pytest.raises(JobLostError):
            beat.check()
    assert not redis.exists(key)


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    """The API (in this process) and one worker process sharing a models store; the stale
    window shortened to ``STALE_S``."""
    from fastapi.testclient import TestClient
    from stimloop.api.app import create_app
    from stimloop.api.auth import create_token
    from stimloop.runtime.settings import Settings
    from stimloop.science.stimuli import generate_bodies, generate_control_bodies, generate_objects
    from stimloop.storage.stimulus_sets import write_stimulus_set

    tmp = tmp_path_factory.mktemp("heartbeat")
    store = tmp / "models_store"
    store.mkdir()
    (store / "backbones.toml").write_text(REGISTRY.read_text())
    settings = Settings(
        models_store=store,
        redis_url=redis_test_url(),
        key_prefix=f"stimloop-beat-{uuid.uuid4().hex[:8]}",
        stimulus_root=tmp / "stimuli",
        device="cpu",
        job_stale_s=STALE_S,
    )
    redis = Redis.from_url(settings.redis_url)
    rig = {"Authorization": f"Bearer {create_token(settings.tokens_path, 'rig', 'rig')}"}
    client = TestClient(create_app(settings, redis), raise_server_exceptions=False)
    for name, category, images in (
        ("b", "body", generate_bodies(16, seed=2)),
        ("o", "object", generate_objects(3, seed=2)),
        ("c", "control_body", generate_control_bodies(2, seed=2)),
    ):
        write_stimulus_set(settings.stimulus_root / name, images)
        body = {"id": name, "category": category, "directory": name}
        assert client.post("/v1/stimulus-sets", headers=rig, json=body).status_code == 201
    env = {
        **os.environ,
        "STIMLOOP_MODELS_STORE": str(store),
        "STIMLOOP_REDIS_URL": settings.redis_url,
        "STIMLOOP_KEY_PREFIX": settings.key_prefix,
        "STIMLOOP_STIMULUS_ROOT": str(settings.stimulus_root),
        "STIMLOOP_DEVICE": "cpu",
        "STIMLOOP_JOB_STALE_S": str(STALE_S),
        "OMP_NUM_THREADS": "1",
    }
    log = open(tmp / "worker.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen([STIMLOOP, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while client.get("/v1/health").json()["workers"] < 1:
        assert proc.poll() is None and time.monotonic() < deadline, (tmp / "worker.log").read_text()
        time.sleep(0.2)
    yield settings, redis, client, rig, proc, tmp
    proc.send_signal(signal.SIGCONT)
    proc.kill()
    proc.wait()
    cleanup(redis, settings)


def _poll(check, timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(every)


@pytest.mark.processes
def test_a_job_silent_for_longer_than_the_stale_window_is_alive(worker):
    from rq.job import Job
    from stimloop.worker.queue import get_queue, job_status

    settings, redis, *_ = worker
    silent_s = 4 * STALE_S  # no progress report at all, for four stale windows
    job = get_queue(settings, redis, "background").enqueue("time.sleep", silent_s)
    seen = []
    deadline = time.monotonic() + silent_s + 120
    while True:
        status = job_status(Job.fetch(job.id, connection=redis), settings)
        seen.append(status["state"])
        if status["state"] in ("finished", "failed"):
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status["state"] == "finished", status
    assert "failed" not in seen
    assert seen.count("started") >= silent_s / 0.2 / 2  # it was watched while it ran


@pytest.mark.processes
def test_a_frozen_worker_is_found_dead_in_time_and_writes_nothing_once_resumed(worker):
    from stimloop.worker.queue import beat_key

    settings, redis, client, rig, proc, _ = worker
    r = client.post(
        "/v1/sessions",
        headers=rig,
        json={
            "backbone": "resnet50_random",
            "body_set": "b",
            "object_set": "o",
            "control_body_set": "c",
            "channels": ["x", "y"],
            "fit": {"split": [8, 4, 4], "epochs": 20000, "lr": 1e-3},
            "selection": {"stability_images": 2},
        },
    )
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    trials = phase_one(["x", "y"], [f"body_{i:04d}" for i in range(16)], seed=0)
    r = client.put(f"/v1/sessions/{sid}/phase1", headers=rig, json=trials)
    assert r.status_code == 202, r.text
    job = r.json()["job"]["id"]
    _poll(
        lambda: client.get(f"/v1/jobs/{job}", headers=rig).json()["stage"] == "fitting",
        180,
        "the fit under way",
    )
    folder = settings.sessions_dir / sid
    before = (folder / "session.json").read_bytes()

    proc.send_signal(signal.SIGSTOP)
    frozen = time.monotonic()
    # the key's remaining life at the freeze: its last renewal was up to one beat interval
    # (STALE_S / 4) earlier, so the key lapses between STALE_S less that interval and STALE_S
    left_s = redis.pttl(beat_key(settings, job)) / 1000
    assert 0 < left_s <= STALE_S, left_s
    failed = _poll(
        lambda: (
            (s := client.get(f"/v1/sessions/{sid}", headers=rig).json())["state"] == "failed" and s
        ),
        STALE_S + 10,
        "the frozen worker's job reported failed",
    )
    found_after = time.monotonic() - frozen
    # not called dead before its key lapsed, and found soon after (a poll and a status read)
    assert left_s - 0.2 <= found_after <= STALE_S + 10, (left_s, found_after)
    assert "heartbeat" in failed["error"] and failed["failed_in"] == "fit"
    info = client.get(f"/v1/jobs/{job}", headers=rig).json()
    assert info["state"] == "failed" and "heartbeat" in info["error"]

    proc.send_signal(signal.SIGCONT)  # the job resumes, finds its heartbeat lapsed, stops
    from rq.job import Job

    _poll(
        lambda: (
            Job.fetch(job, connection=redis).get_status(refresh=True).value
            in ("failed", "finished")
        ),
        60,
        "the resumed job ended",
        every=0.3,
    )
    rq_job = Job.fetch(job, connection=redis)
    assert rq_job.get_status().value == "failed"
    assert "JobLostError" in (rq_job.latest_result().exc_string or "")
    assert (folder / "session.json").read_bytes() == before  # the resumed job wrote nothing
    assert not (folder / "selection.json").exists() and not (folder / "readouts.npz").exists()
    info = client.get(f"/v1/jobs/{job}", headers=rig).json()
    assert info["state"] == "failed"  # stays as reported

    # the next change records the failure (a new generation) and the refit runs on the
    # resumed worker, whose heartbeat works again for new jobs
    r = client.post(f"/v1/sessions/{sid}/fit", headers=rig)
    assert r.status_code == 202, r.text
    events = [h["event"] for h in client.get(f"/v1/sessions/{sid}", headers=rig).json()["history"]]
    assert events[events.index("fit job failed") + 1] == "fit resubmitted", events
    refit = r.json()["job"]["id"]
    _poll(
        lambda: client.get(f"/v1/jobs/{refit}", headers=rig).json()["stage"] == "fitting",
        120,
        "the refit under way on the resumed worker",
    )
    assert client.delete(f"/v1/jobs/{refit}", headers=rig).status_code == 200


def test_a_job_that_ends_between_the_two_reads_is_not_called_lost(tmp_path):
    """Its worker writes the job's end and then deletes the heartbeat key: a status read as
    "started" just before the end, and the key looked for just after, is the job finishing,
    not a lost worker (a one-second job failed a demo so). Read again, it is finished; a job
    still started without its key is lost."""
    from types import SimpleNamespace

    from rq.job import JobStatus
    from stimloop.runtime.settings import Settings
    from stimloop.worker.queue import job_state

    settings = Settings(models_store=tmp_path)

    def job(*statuses: JobStatus) -> SimpleNamespace:
        read = iter(statuses)
        return SimpleNamespace(
            id="j",
            get_status=lambda refresh=True: next(read),
            connection=SimpleNamespace(exists=lambda key: False),  # the key is gone
        )

    assert job_state(job(JobStatus.STARTED, JobStatus.FINISHED), settings) == ("finished", None)
    state, error = job_state(job(JobStatus.STARTED, JobStatus.STARTED), settings)
    assert state == "failed" and "lost its heartbeat" in error
