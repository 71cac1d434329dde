"""A service over the CI Redis (its own database and key prefix), a temporary models store and
stimulus root, with workers run in-process in burst mode."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis

from tests.conftest import REGISTRY

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
    """Delete only this test's keys: its prefix, its queue and the jobs that ran on it."""
    from rq import Queue
    from rq.registry import (
        CanceledJobRegistry,
        DeferredJobRegistry,
        FailedJobRegistry,
        FinishedJobRegistry,
        ScheduledJobRegistry,
        StartedJobRegistry,
    )
    from stimloop.worker.queue import queue_name

    name = queue_name(settings)
    queue = Queue(name, connection=redis)
    ids = set(queue.job_ids)
    for registry in (
        StartedJobRegistry,
        FinishedJobRegistry,
        FailedJobRegistry,
        CanceledJobRegistry,
        DeferredJobRegistry,
        ScheduledJobRegistry,
    ):
        ids |= set(registry(name, connection=redis).get_job_ids())
    keys = set()
    for job_id in ids:
        keys |= set(redis.scan_iter(f"rq:*{job_id}*"))
    keys |= set(redis.scan_iter(f"*{name}*"))
    keys |= set(redis.scan_iter(f"{settings.key_prefix}:*"))
    if keys:
        redis.delete(*keys)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from fastapi.testclient import TestClient
    from stimloop.api.app import create_app
    from stimloop.api.auth import create_token
    from stimloop.runtime.settings import Settings

    tmp = tmp_path_factory.mktemp("service")
    store = tmp / "models_store"
    store.mkdir()
    (store / "backbones.toml").write_text(REGISTRY.read_text())
    settings = Settings(
        models_store=store,
        redis_url=redis_test_url(),
        key_prefix=f"stimloop-test-{uuid.uuid4().hex[:8]}",
        stimulus_root=tmp / "stimuli",
        device="cpu",
        job_stale_s=600,
    )
    redis = Redis.from_url(settings.redis_url)
    redis.ping()
    rig = {"Authorization": f"Bearer {create_token(settings.tokens_path, 'rig', 'rig')}"}
    analyst = {"Authorization": f"Bearer {create_token(settings.tokens_path, 'analyst', 'a')}"}
    client = TestClient(create_app(settings, redis), raise_server_exceptions=False)
    yield Service(settings, redis, client, rig, analyst, tmp)
    client.app.state.uploads.close()  # the upload processes end with the module
    cleanup(redis, settings)


def register_sets(service: Service, sets: dict[str, tuple[str, list]]) -> None:
    """Write each set's images below the stimulus root and register it: id -> (category,
    stimuli)."""
    from stimloop.storage.stimulus_sets import write_stimulus_set

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
    from stimloop.science.stimuli import generate_bodies, generate_control_bodies, generate_objects

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
