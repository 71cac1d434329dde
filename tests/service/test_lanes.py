"""Lanes by urgency (``worker.queue``): what a waiting animal needs runs first."""

from __future__ import annotations

import uuid

import pytest
from redis import Redis
from rq.job import Job
from stimloop.runtime.settings import Settings
from stimloop.worker.jobs import make_worker
from stimloop.worker.queue import JOBS, LANES, enqueue, job_status, queue_name

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
    """Through the service's own enqueue and worker: a sanity check, an analysis and a fit,
    queued in that order for a session that does not exist (each job fails at once, after it
    started: the order of the starts is what counts)."""
    settings, redis = deployment
    queued = {
        "background": enqueue(settings, redis, "sanity", "000000000000", "k" * 16, None, 0),
        "analysis": enqueue(settings, redis, "analysis", "000000000000", 0),
        "urgent": enqueue(settings, redis, "fit", "000000000000", 0),
    }
    status = {lane: job_status(job, settings) for lane, job in queued.items()}
    assert {lane: s["lane"] for lane, s in status.items()} == {lane: lane for lane in queued}
    assert {lane: s["ahead"] for lane, s in status.items()} == {
        "urgent": 0,
        "analysis": 1,
        "background": 2,
    }
    assert status["background"]["message"] == "waiting for a worker: 2 jobs ahead"

    worker = make_worker(settings, redis)
    assert worker.queue_names() == [queue_name(settings, lane) for lane in LANES]
    worker.work(burst=True, logging_level="ERROR")
    jobs = {lane: Job.fetch(job.id, connection=redis) for lane, job in queued.items()}
    assert all(job.get_status() == "failed" for job in jobs.values())  # no such session
    assert jobs["urgent"].started_at < jobs["analysis"].started_at
    assert jobs["analysis"].started_at < jobs["background"].started_at
    assert job_status(jobs["urgent"], settings)["ahead"] is None
