"""A service over the test Redis (database 13, its own key prefix) and what tests do with
it: sessions, sets, problem answers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from redis import Redis
from stimloop.science.stimuli import generate_bodies, generate_control_bodies, generate_objects
from stimloop.storage.stimulus_sets import write_stimulus_set

TEST_DB = 13


def redis_test_url() -> str:
    base = os.environ.get("STIMLOOP_REDIS_URL", "redis://127.0.0.1:6379/0")
    return base.rsplit("/", 1)[0] + f"/{TEST_DB}" if base.count("/") >= 3 else base


@dataclass
class Service:
    settings: object
    redis: Redis
    client: object
    rig: dict
    analyst: dict
    root: Path

    def work(self) -> None:
        """Run every queued job on an in-process worker, then return."""
        from stimloop.worker.jobs import make_worker

        make_worker(self.settings, self.redis).work(burst=True, logging_level="WARNING")


def cleanup(redis: Redis, settings) -> None:
    """Delete only this test's keys: its prefix, its lanes' queues and the jobs that ran on
    them."""
    from rq import Queue
    from rq.registry import (
        CanceledJobRegistry,
        DeferredJobRegistry,
        FailedJobRegistry,
        FinishedJobRegistry,
        ScheduledJobRegistry,
        StartedJobRegistry,
    )
    from stimloop.worker.queue import LANES, queue_name

    ids: set[str] = set()
    keys = set()
    for lane in LANES:
        name = queue_name(settings, lane)
        ids |= set(Queue(name, connection=redis).job_ids)
        for registry in (
            StartedJobRegistry,
            FinishedJobRegistry,
            FailedJobRegistry,
            CanceledJobRegistry,
            DeferredJobRegistry,
            ScheduledJobRegistry,
        ):
            ids |= set(registry(name, connection=redis).get_job_ids())
        keys |= set(redis.scan_iter(f"*{name}*"))
    for job_id in ids:
        keys |= set(redis.scan_iter(f"rq:*{job_id}*"))
    keys |= set(redis.scan_iter(f"{settings.key_prefix}:*"))
    if keys:
        redis.delete(*keys)


def register_sets(service: Service, sets: dict[str, tuple[str, list]]) -> None:
    """Write each set's images below the stimulus root and register it: id -> (category,
    stimuli)."""

    for set_id, (category, stimuli) in sets.items():
        write_stimulus_set(service.settings.stimulus_root / set_id, stimuli)
        r = service.client.post(
            "/v1/stimulus-sets",
            headers=service.rig,
            json={"id": set_id, "category": category, "directory": set_id},
        )
        assert r.status_code == 201, r.text


def new_session(service: Service, prefix: str, seed: int, n_bodies: int, **config) -> str:
    """Three small procedural sets named ``<prefix>b/o/c`` and a session over them."""

    register_sets(
        service,
        {
            f"{prefix}b": ("body", generate_bodies(n_bodies, seed=seed)),
            f"{prefix}o": ("object", generate_objects(3, seed=seed)),
            f"{prefix}c": ("control_body", generate_control_bodies(2, seed=seed)),
        },
    )
    r = service.client.post(
        "/v1/sessions",
        headers=service.rig,
        json={
            "backbone": "resnet50_random",
            "body_set": f"{prefix}b",
            "object_set": f"{prefix}o",
            "control_body_set": f"{prefix}c",
            **config,
        },
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def is_problem(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["detail"]
    return body


def phase_one(channels, bodies, seed):
    rng = np.random.default_rng(seed)
    base = {ch: rng.normal(20, 8, len(bodies)) for ch in channels}
    stim, chan, rate = [], [], []
    for ch in channels:
        for i, b in enumerate(bodies):
            for _ in range(4):
                stim.append(b)
                chan.append(ch)
                rate.append(float(base[ch][i] + rng.normal(0, 2)))
    return {"stimulus": stim, "channel": chan, "rate": rate}
