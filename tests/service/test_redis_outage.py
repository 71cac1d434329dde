"""Redis killed with SIGKILL in the middle of a fit, then started again: meanwhile routes that
need it answer 503 (never 500), the store answers as before, nothing stored is lost, the
same worker process takes jobs again within ``WORKER_BACK_S`` of Redis's return, and the
session can be fitted again. Real processes, a Redis of its own."""

from __future__ import annotations

import subprocess
import time
import uuid

import httpx
import numpy as np
import pytest
from redis import Redis
from stimloop.science.stimuli import generate_bodies, generate_control_bodies, generate_objects
from stimloop.storage.stimulus_sets import write_stimulus_set

from tests.support.processes import STIMLOOP, free_port, user_env

pytestmark = pytest.mark.processes

# The worker reconnects at most 5 s apart and its keep-alive key is renewed every 5 s: back
# within about 10 s, idle or with both cores busy (2-4 s measured); the bound leaves room.
WORKER_BACK_S = 30


def start_redis(port: int, folder) -> subprocess.Popen:
    from stimloop.serve import redis_binary

    proc = subprocess.Popen(
        [
            redis_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    client = Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return proc
        except Exception:
            time.sleep(0.05)
    raise AssertionError("redis did not start")


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_redis_killed_mid_fit_then_restarted(tmp_path):
    from stimloop.api.auth import create_token

    redis_port, api_port = free_port(), free_port()
    redis = start_redis(redis_port, tmp_path)
    store, root = tmp_path / "models_store", tmp_path / "stimuli"
    store.mkdir()
    token = create_token(store / "tokens.json", "rig", "outage")
    write_stimulus_set(root / "b", generate_bodies(16, seed=6))
    write_stimulus_set(root / "o", generate_objects(3, seed=6))
    write_stimulus_set(root / "c", generate_control_bodies(2, seed=6))
    env = {
        **user_env(),
        "STIMLOOP_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "STIMLOOP_KEY_PREFIX": f"stimloop-outage-{uuid.uuid4().hex[:6]}",
        "STIMLOOP_MODELS_STORE": str(store),
        "STIMLOOP_STIMULUS_ROOT": str(root),
        "STIMLOOP_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",
    }
    serve = subprocess.Popen(
        [STIMLOOP, "serve", "--workers", "1", "--port", str(api_port)],
        env=env,
        stdout=open(tmp_path / "serve.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    http = httpx.Client(
        base_url=f"http://127.0.0.1:{api_port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    statuses: list[int] = []

    def get(path: str) -> httpx.Response:
        r = http.get(path)
        statuses.append(r.status_code)
        return r

    try:

        def health():
            try:
                return get("/v1/health").json()["workers"] == 1
            except httpx.TransportError:
                return False

        wait_for(health, 90, "serve with one worker")
        pid = get("/v1/health").json()["worker_devices"][0]["pid"]
        for set_id, category in (("b", "body"), ("o", "object"), ("c", "control_body")):
            r = http.post(
                "/v1/stimulus-sets",
                json={"id": set_id, "category": category, "directory": set_id},
            )
            assert r.status_code == 201, r.text
        r = http.post(
            "/v1/sessions",
            json={
                "backbone": "resnet50_random",
                "body_set": "b",
                "object_set": "o",
                "control_body_set": "c",
                "channels": ["x", "y"],
                "fit": {"split": [8, 4, 4], "epochs": 3000, "lr": 1e-3},
                "selection": {"stability_images": 2},
            },
        )
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        rng = np.random.default_rng(0)
        bodies = [f"body_{i:04d}" for i in range(16)]
        trials = {"stimulus": [], "channel": [], "rate": []}
        for ch in ("x", "y"):
            base = rng.normal(20, 8, 16)
            for i, body in enumerate(bodies):
                for _ in range(4):
                    trials["stimulus"].append(body)
                    trials["channel"].append(ch)
                    trials["rate"].append(float(base[i] + rng.normal(0, 1)))
        r = http.put(f"/v1/sessions/{sid}/phase1", json=trials)
        assert r.status_code == 202, r.text
        fit = r.json()["job"]["id"]
        wait_for(lambda: get(f"/v1/jobs/{fit}").json()["stage"] == "fitting", 120, "fitting")

        redis.kill()  # SIGKILL, mid-fit
        redis.wait()
        down = get(f"/v1/jobs/{fit}")
        assert down.status_code == 503 and down.headers["retry-after"], down.text
        assert down.headers["content-type"].startswith("application/problem+json")
        assert get(f"/v1/sessions/{sid}").status_code == 200  # the store answers
        assert get("/v1/health").json()["status"] == "degraded"

        redis = start_redis(redis_port, tmp_path)  # back, empty (no persistence)
        back = time.monotonic()
        wait_for(health, WORKER_BACK_S, "the worker back")
        print(f"worker back {time.monotonic() - back:.1f} s after Redis")
        assert get("/v1/health").json()["worker_devices"][0]["pid"] == pid  # the same process
        failed = wait_for(
            lambda: get(f"/v1/sessions/{sid}").json()["state"] == "failed",
            120,
            "the interrupted fit marked failed",
        )
        assert failed
        assert (store / "sessions" / sid / "phase1.npz").is_file()  # nothing stored lost
        r = http.post(f"/v1/sessions/{sid}/fit")
        assert r.status_code == 202, r.text
        wait_for(
            lambda: get(f"/v1/sessions/{sid}").json()["state"] == "selected", 240, "refit done"
        )
        assert not [s for s in statuses if s >= 500 and s != 503], statuses
    finally:
        serve.terminate()
        serve.wait(timeout=60)
        redis.kill()
        redis.wait()
