"""Lanes by urgency (``worker.queue``): what a waiting animal needs runs first."""

from __future__ import annotations

import uuid

import pytest
from redis import Redis
from rq import Worker
from rq.job import Job
from stimloop.runtime.settings import Settings
from stimloop.worker.queue import JOBS, LANES, get_queue, job_status, lanes, queue_name

from tests.support.service import cleanup, redis_test_url

pytestmark = pytest.mark.redis


@pytest.fixture
def deployment(tmp_path):
    settings = Settings(
        models_store=tmp_path,
        redis_url=redis_test_url(),
        key_prefix=f"stimloop-lanes-{uuid.uuid4().hex[:8]}",
    )
    redis = Redis.from_url(redis_test_url())
    yield settings, redis
    cleanup(redis, settings)


def test_every_kind_has_a_lane_and_the_animals_jobs_are_urgent():
    assert {spec.lane for spec in JOBS.values()} == set(LANES)
    assert [k for k, spec in JOBS.items() if spec.lane == "urgent"] == ["warm", "fit", "phase3"]
    assert JOBS["sanity"].lane == JOBS["saliency"].lane == "background"


def test_a_fit_queued_last_runs_first_and_each_job_says_how_many_are_ahead(deployment):
    settings, redis = deployment
    queued = {}
    for lane in ("background", "analysis", "urgent"):  # the most urgent arrives last
        meta = {"lane": lane, "prefix": settings.key_prefix, "message": "waiting for a worker"}
        queued[lane] = get_queue(settings, redis, lane).enqueue("time.sleep", 0, meta=meta)
    ahead = {lane: job_status(job, settings)["ahead"] for lane, job in queued.items()}
    assert ahead == {"urgent": 0, "analysis": 1, "background": 2}
    said = job_status(queued["background"], settings)["message"]
    assert said == "waiting for a worker: 2 jobs ahead"

    worker = Worker(lanes(settings, redis), connection=redis)  # as make_worker listens
    assert worker.queue_names() == [queue_name(settings, lane) for lane in LANES]
    worker.work(burst=True)
    started = {lane: Job.fetch(job.id, connection=redis).started_at for lane, job in queued.items()}
    assert started["urgent"] < started["analysis"] < started["background"]
    assert job_status(Job.fetch(queued["urgent"].id, connection=redis), settings)["ahead"] is None
