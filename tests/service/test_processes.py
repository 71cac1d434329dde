"""The exact commands the containers run (`stimloop serve --workers 0`, `stimloop worker`),
as processes against the CI Redis: health, two workers sharing one queue, a worker killed
with SIGKILL mid-job, and a restart of the API and the workers in the middle of a loop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from redis import Redis
from stimloop.science.stimuli import generate_bodies, generate_control_bodies, generate_objects
from stimloop.storage.stimulus_sets import write_stimulus_set

from tests.support.paths import REGISTRY
from tests.support.processes import STIMLOOP, free_port
from tests.support.service import cleanup, phase_one, redis_test_url

pytestmark = pytest.mark.processes


class Cluster:
    def __init__(self, tmp: Path) -> None:
        from stimloop.api.auth import create_token
        from stimloop.runtime.settings import Settings

        self.store = tmp / "models_store"
        self.store.mkdir()
        (self.store / "backbones.toml").write_text(REGISTRY.read_text())
        self.port = free_port()
        self.env = {
            **os.environ,
            "STIMLOOP_MODELS_STORE": str(self.store),
            "STIMLOOP_REDIS_URL": redis_test_url(),
            "STIMLOOP_KEY_PREFIX": f"stimloop-proc-{uuid.uuid4().hex[:8]}",
            "STIMLOOP_STIMULUS_ROOT": str(tmp / "stimuli"),
            "STIMLOOP_DEVICE": "cpu",
            "STIMLOOP_PORT": str(self.port),
            "STIMLOOP_JOB_STALE_S": "8",
            "OMP_NUM_THREADS": "1",
        }
        self.settings = Settings(
            models_store=self.store,
            redis_url=redis_test_url(),
            key_prefix=self.env["STIMLOOP_KEY_PREFIX"],
        )
        self.token = create_token(self.settings.tokens_path, "rig", "test")
        self.analyst = create_token(self.settings.tokens_path, "analyst", "test")
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            timeout=30,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        self.api: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.logs = tmp

    def start_api(self) -> None:
        log = open(self.logs / "api.log", "ab")  # noqa: SIM115
        self.api = subprocess.Popen(
            [STIMLOOP, "serve", "--workers", "0"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if self.http.get("/v1/health").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError((self.logs / "api.log").read_text())

    def start_worker(self) -> subprocess.Popen:
        log = open(self.logs / f"worker{len(self.workers)}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [STIMLOOP, "worker"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.workers.append(proc)
        return proc

    def wait_workers(self, n: int) -> None:
        deadline = time.time() + 60
        while self.http.get("/v1/health").json()["workers"] != n:
            assert time.time() < deadline, self.http.get("/v1/health").json()
            time.sleep(0.2)

    def wait_job(self, job_id: str, states=("finished",), timeout=240) -> dict:
        deadline = time.time() + timeout
        while True:
            info = self.http.get(f"/v1/jobs/{job_id}").json()
            if info["state"] in states:
                return info
            assert info["state"] not in ("failed", "canceled") or "failed" in states, info
            assert time.time() < deadline, info
            time.sleep(0.2)

    def stop(self) -> None:
        for proc in [self.api, *self.workers]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [self.api, *self.workers]:
            if proc is not None:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    c = Cluster(tmp)
    root = tmp / "stimuli"
    write_stimulus_set(root / "bodies", generate_bodies(24, seed=4))
    write_stimulus_set(root / "objects", generate_objects(6, seed=4))
    write_stimulus_set(root / "controls", generate_control_bodies(4, seed=4))
    yield c
    c.stop()
    cleanup(Redis.from_url(redis_test_url()), c.settings)


def test_workers_share_a_queue_survive_a_kill_and_a_restart(cluster):
    c = cluster
    c.start_api()
    health = c.http.get("/v1/health").json()
    assert health["redis"] and health["workers"] == 0
    assert {b["name"] for b in health["backbones"]} >= {"resnet50_random"}
    w1, w2 = c.start_worker(), c.start_worker()
    c.wait_workers(2)

    for set_id, category in (
        ("bodies", "body"),
        ("objects", "object"),
        ("controls", "control_body"),
    ):
        r = c.http.post(
            "/v1/stimulus-sets", json={"id": set_id, "category": category, "directory": set_id}
        )
        assert r.status_code == 201, r.text
    jobs = [
        c.http.post(
            "/v1/activations", json={"backbone": "resnet50_random", "stimulus_set": s}
        ).json()["job"]["id"]
        for s in ("bodies", "objects", "controls")
    ]
    for job in jobs:
        c.wait_job(job)

    bodies = [f"body_{i:04d}" for i in range(24)]
    sessions = []
    for k in range(2):
        r = c.http.post(
            "/v1/sessions",
            json={
                "backbone": "resnet50_random",
                "body_set": "bodies",
                "object_set": "objects",
                "control_body_set": "controls",
                "channels": ["x", "y"],
                "seed": k,
                "fit": {"epochs": 1500, "lr": 1e-3, "split": [12, 4, 4]},
                "selection": {"stability_images": 4, "repeats": 2},
            },
        )
        assert r.status_code == 201, r.text
        sessions.append(r.json()["id"])
    fits = []
    for k, sid in enumerate(sessions):
        r = c.http.put(f"/v1/sessions/{sid}/phase1", json=phase_one(["x", "y"], bodies, k))
        assert r.status_code == 202, r.text
        fits.append(r.json()["job"]["id"])

    # both fits run at once, on different workers
    from rq.job import Job

    redis = Redis.from_url(redis_test_url())
    deadline = time.time() + 120
    while True:
        states = [c.http.get(f"/v1/jobs/{j}").json() for j in fits]
        if all(s["state"] == "started" and s["stage"] == "fitting" for s in states):
            break
        assert time.time() < deadline, states
        time.sleep(0.1)
    names = {Job.fetch(j, connection=redis).worker_name for j in fits}
    assert len(names) == 2

    # SIGKILL the worker running the first fit: the job is reported failed with a reason
    victim = Job.fetch(fits[0], connection=redis).worker_name
    pid = {
        json.loads(v)["name"]: json.loads(v)["pid"]
        for v in redis.hvals(f"{c.settings.key_prefix}:workers")
    }[victim]
    victim_proc = {w.pid: w for w in (w1, w2)}[pid]
    victim_proc.send_signal(signal.SIGKILL)
    victim_proc.wait()
    failed = c.wait_job(fits[0], states=("failed",), timeout=60)
    assert "lost its heartbeat" in failed["error"]
    session = c.http.get(f"/v1/sessions/{sessions[0]}").json()
    assert session["state"] == "failed" and "lost its heartbeat" in session["error"]
    c.wait_job(fits[1])  # the other worker's fit is unaffected

    # resubmit: the surviving worker finishes it
    r = c.http.post(f"/v1/sessions/{sessions[0]}/fit")
    assert r.status_code == 202, r.text
    c.wait_job(r.json()["job"]["id"])
    selection = c.http.get(f"/v1/sessions/{sessions[0]}/selection").json()
    assert c.http.get(f"/v1/sessions/{sessions[0]}").json()["state"] == "selected"

    # restart the API and the workers in the middle of the loop: nothing stored is lost
    c.stop()
    c.workers = []
    c.start_api()
    again = c.http.get(f"/v1/sessions/{sessions[0]}/selection").json()
    assert again == selection
    c.start_worker()
    c.wait_workers(1)
    p2 = {"stimulus": [], "channel": [], "rate": []}
    listed = [e["stimulus"] for e in selection["phase_two"]["entries"]] + selection["phase_two"][
        "stability_images"
    ]
    for ch in ("x", "y"):
        for s in listed:
            for k in range(3):
                p2["stimulus"].append(s)
                p2["channel"].append(ch)
                p2["rate"].append(float(10 + k + len(s) % 7))
    r = c.http.put(f"/v1/sessions/{sessions[0]}/phase2", json=p2)
    assert r.status_code == 202, r.text
    c.wait_job(r.json()["job"]["id"])
    analysis = c.http.get(f"/v1/sessions/{sessions[0]}/analysis").json()
    assert "channels" in analysis, (analysis, c.http.get(f"/v1/sessions/{sessions[0]}").json())
    assert {ch["channel"] for ch in analysis["channels"]} == {"x", "y"}

    # RQ notices the abandoned job of the killed worker (what its maintenance does once the
    # job's timeout has passed): the job is failed, never run again, and the finished session
    # does not move
    from rq import Queue
    from rq.registry import FailedJobRegistry, StartedJobRegistry
    from stimloop.worker.queue import LANES, queue_name

    name = queue_name(c.settings, "urgent")  # the fits' lane
    StartedJobRegistry(name, connection=redis).cleanup(timestamp=int(time.time()) + 10**6)
    time.sleep(3)
    assert all(Queue(queue_name(c.settings, lane), connection=redis).count == 0 for lane in LANES)
    assert fits[0] in FailedJobRegistry(name, connection=redis).get_job_ids()
    final = c.http.get(f"/v1/sessions/{sessions[0]}").json()
    assert final["state"] == "analysed", final["history"][-3:]
