"""Lanes by urgency (``worker.queue``): what a waiting animal needs runs first."""

from __future__ import annotations

import pytest
from rq.job import Job
from stimloop.worker.jobs import make_worker
from stimloop.worker.queue import JOBS, LANES, enqueue, job_status, queue_name

pytestmark = pytest.mark.redis


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


def long_background_job(settings, redis, seconds: float) -> Job:
    """A background-lane job of ``seconds`` that reports between its steps (a sanity check's
    shape, ``tests/support/long_jobs.py``), queued as the service queues its own."""
    from stimloop.worker.queue import get_queue

    return get_queue(settings, redis, "background").enqueue(
        "tests.support.long_jobs.steps",
        seconds,
        job_timeout=600,
        meta={"kind": "sanity", "lane": "background", "prefix": settings.key_prefix, "rig": "a"},
    )


def test_a_running_background_job_gives_way_to_a_fit_within_seconds(deployment):
    """A fit queued while a 6 s background job runs on the only worker starts within 2 s
    (not after the 6 s), and the background job then finishes its own work."""
    import threading
    import time

    settings, redis = deployment
    background = long_background_job(settings, redis, 6.0)
    submitted = {}

    def submit_fit():
        time.sleep(2.0)  # the background job is running by now
        submitted["at"] = time.time()
        submitted["job"] = enqueue(settings, redis, "fit", "000000000000", 0, rig="b")

    threading.Thread(target=submit_fit, daemon=True).start()
    make_worker(settings, redis).work(burst=True, logging_level="ERROR")
    fit = Job.fetch(submitted["job"].id, connection=redis)
    background = Job.fetch(background.id, connection=redis)
    waited = fit.started_at.timestamp() - submitted["at"]
    assert waited < 2.0, waited
    assert background.started_at < fit.started_at < background.ended_at
    assert background.get_status() == "finished" and background.latest_result().return_value
    assert fit.get_status() == "failed"  # no such session: it started, which is what counts
    assert background.ended_at.timestamp() - background.started_at.timestamp() >= 6.0


def test_rigs_take_turns_within_a_lane(deployment):
    """Three fits of rig a queued before one of rig b: b's runs second, not last."""
    settings, redis = deployment
    order = [("a", 0), ("a", 1), ("a", 2), ("b", 0)]
    jobs = [enqueue(settings, redis, "fit", f"{rig}{k:011d}", 0, rig=rig) for rig, k in order]
    make_worker(settings, redis).work(burst=True, logging_level="ERROR")
    started = sorted(
        (Job.fetch(j.id, connection=redis).started_at, rig) for j, (rig, _) in zip(jobs, order)
    )
    assert [rig for _, rig in started] == ["a", "b", "a", "a"]


def test_the_wait_is_estimated_from_each_kinds_run_time(deployment):
    """Each kind's mean run time (kept by the workers) times the jobs ahead: 2 fits ahead at
    30 s and an analysis ahead at 60 s is about 2 min; unknown until every kind ran once."""
    from stimloop.worker.queue import durations_key, wait_estimate

    settings, redis = deployment
    for k in range(2):
        enqueue(settings, redis, "fit", f"{k:012d}", 0)
    enqueue(settings, redis, "analysis", "000000000009", 0)
    sanity = enqueue(settings, redis, "sanity", "000000000009", "k" * 16, None, 0)
    assert wait_estimate(sanity, settings) is None
    redis.hset(durations_key(settings), mapping={"fit": 30.0, "analysis": 60.0})
    assert wait_estimate(sanity, settings) == pytest.approx(120.0)
    status = job_status(sanity, settings)
    assert status["estimate_s"] == pytest.approx(120.0)
    assert status["message"] == "waiting for a worker: 3 jobs ahead (about 2 min)"
