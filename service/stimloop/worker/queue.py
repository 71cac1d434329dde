"""The queue: the table of job kinds, and what the API does with jobs (connect, enqueue a
kind, read a job's status, the keys of cancelling and liveness).

Torch-free: the API imports this module alone of ``stimloop.worker``; the functions the table
names run in workers (``stimloop.worker.jobs``), which RQ imports there by name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast, get_args

from redis import Redis
from rq import Queue, Worker
from rq.job import Job, JobStatus
from stimloop_contract.system import JobInfo, JobKind, JobLane

from stimloop.runtime.settings import Settings

# Lanes by urgency, each an RQ queue: a worker takes its next job from the first lane that
# has one, so what a waiting animal needs (the session's preparation, the fit and its list, the
# phase-three list) goes before the analyses, and they before maps, their checks and caching.
Lane = JobLane
LANES: tuple[Lane, ...] = get_args(JobLane)


@dataclass(frozen=True)
class JobSpec:
    """A kind of job: the worker function that runs it, its lane, and where a finished
    session job's result is read (under ``/v1/sessions/{id}/``; None: nothing to read)."""

    func: str
    lane: Lane
    result: str | None


JOBS: dict[JobKind, JobSpec] = {
    "warm": JobSpec("stimloop.worker.jobs.run_warm", "urgent", None),
    "fit": JobSpec("stimloop.worker.jobs.run_fit", "urgent", "selection"),
    "phase3": JobSpec("stimloop.worker.jobs.run_phase3", "urgent", "phase3"),
    "analysis": JobSpec("stimloop.worker.jobs.run_analysis", "analysis", "analysis"),
    "phase3_analysis": JobSpec(
        "stimloop.worker.jobs.run_phase3_analysis", "analysis", "phase3/analysis"
    ),
    "saliency": JobSpec("stimloop.worker.jobs.run_saliency", "background", "saliency"),
    "sanity": JobSpec("stimloop.worker.jobs.run_sanity", "background", "saliency"),
    "activations": JobSpec("stimloop.worker.jobs.run_precompute", "background", None),
}


def connect(settings: Settings) -> Redis:
    if not settings.redis_url:
        raise RuntimeError("no Redis URL: set STIMLOOP_REDIS_URL or use `stimloop serve`")
    return Redis.from_url(settings.redis_url)


def queue_name(settings: Settings, lane: Lane) -> str:
    return f"{settings.key_prefix}-jobs-{lane}"


def get_queue(settings: Settings, redis: Redis, lane: Lane) -> Queue:
    return Queue(queue_name(settings, lane), connection=redis)


def lanes(settings: Settings, redis: Redis) -> list[Queue]:
    """This deployment's queues, most urgent first: the order a worker listens in."""
    return [get_queue(settings, redis, lane) for lane in LANES]


def jobs_ahead(job: Job, settings: Settings) -> int | None:
    """How many jobs a worker takes before this queued one: every job of the more urgent
    lanes and those before it in its own (None when it is not queued)."""
    lane = job.meta.get("lane")
    if lane not in LANES:
        return None
    own = job.get_position()
    if own is None:
        return None
    before = LANES[: LANES.index(lane)]
    return own + sum(get_queue(settings, job.connection, ln).count for ln in before)


def enqueue(
    settings: Settings,
    redis: Redis,
    kind: JobKind,
    *args: Any,
    session: str | None = None,
    owner: str | None = None,
    rig: str | None = None,
) -> Job:
    """Enqueue a job of ``kind`` (its function and lane from ``JOBS``) on this deployment's
    queue of that lane. The job's meta names its deployment (the key prefix: another
    deployment on the same Redis never sees it), who started it, and the rig whose turn it
    is part of (``worker.scheduling``: the session's creator; else who started it)."""
    lane = JOBS[kind].lane
    job = get_queue(settings, redis, lane).enqueue(
        JOBS[kind].func,
        *args,
        job_timeout=settings.job_timeout_s,
        result_ttl=7 * 86400,
        failure_ttl=7 * 86400,
        # no retry: an abandoned job is failed once and never run again by the queue
        meta={
            "kind": kind,
            "lane": lane,
            "prefix": settings.key_prefix,
            "owner": owner,
            "rig": rig or owner or "",
            "session": session,
            "stage": "queued",
            "progress": 0.0,
            "message": "waiting for a worker",
        },
    )
    if session:
        key = session_jobs_key(settings, session)
        redis.zadd(key, {job.id: time.time()})
        redis.expire(key, 30 * 86400)
    return job


def session_jobs_key(settings: Settings, session: str) -> str:
    """A session's jobs, every kind (its own, and the maps, checks and phase-three lists
    asked of it), by when they were queued (job id -> Unix time)."""
    return f"{settings.key_prefix}:session-jobs:{session}"


def session_jobs(settings: Settings, redis: Redis, session: str) -> list[Job]:
    """The session's jobs that Redis still holds, oldest first (``session_jobs_key``)."""
    found = cast(list[bytes], redis.zrange(session_jobs_key(settings, session), 0, -1))
    ids = [i.decode() for i in found]
    return [job for job in Job.fetch_many(ids, connection=redis) if job is not None]


def alive_key(settings: Settings, worker: str) -> str:
    """A worker's keep-alive key: it exists while the worker runs (refreshed every few s)."""
    return f"{settings.key_prefix}:worker-alive:{worker}"


def beat_key(settings: Settings, job_id: str) -> str:
    """A running job's heartbeat key: its worker keeps it alive (``worker/heartbeat.py``) for
    as long as the job runs; gone means the worker was killed, frozen or cut off."""
    return f"{settings.key_prefix}:job-beat:{job_id}"


def cancel_key(settings: Settings, job_id: str) -> str:
    return f"{settings.key_prefix}:cancel:{job_id}"


def served_key(settings: Settings, lane: Lane) -> str:
    """When each rig's job last started in ``lane`` (rig -> Unix time)."""
    return f"{settings.key_prefix}:served:{lane}"


def durations_key(settings: Settings) -> str:
    """Each job kind's running mean run time in seconds (kind -> s)."""
    return f"{settings.key_prefix}:durations"


def wait_estimate(job: Job, settings: Settings) -> float | None:
    """Seconds until a worker takes this queued job: each job ahead at its kind's mean run
    time, plus what is left of the running ones (by their progress), shared among the
    workers. None while a kind ahead has never run here (no mean to go by)."""
    lane = job.meta.get("lane")
    if lane not in LANES:
        return None
    redis = job.connection
    means = {
        (k.decode() if isinstance(k, bytes) else k): float(v)
        for k, v in redis.hgetall(durations_key(settings)).items()
    }
    ahead: list[str] = []
    running: list[str] = []
    for ln in LANES:
        queue = get_queue(settings, redis, ln)
        running += queue.started_job_registry.get_job_ids()
        if LANES.index(ln) < LANES.index(lane):
            ahead += queue.get_job_ids()
        elif ln == lane:
            ids = queue.get_job_ids()
            ahead += ids[: ids.index(job.id)] if job.id in ids else ids
    total = 0.0
    others = Job.fetch_many(ahead + running, connection=redis)
    for k, found in enumerate(others):
        if found is None:
            continue
        kind = found.meta.get("kind")
        if kind not in means:
            return None
        left = 1.0 - float(found.meta.get("progress", 0.0)) if k >= len(ahead) else 1.0
        total += means[kind] * max(left, 0.0)
    workers = max(1, len(Worker.all(queue=get_queue(settings, redis, LANES[0]))))
    return total / workers


def job_state(job: Job, settings: Settings) -> tuple[str, str | None]:
    """The job's state and, when it failed, why. A started job whose worker's heartbeat key
    is gone is failed (lost), unless it ended between the two reads (its worker deletes the
    key just after the job's end is written): then its status read again says how."""
    for _ in range(2):
        status = job.get_status(refresh=True)
        state = status.value if isinstance(status, JobStatus) else str(status)
        if state == "failed":
            latest = job.latest_result()
            return state, _last_line((latest.exc_string if latest else "") or "")
        if state != "started" or job.connection.exists(beat_key(settings, job.id)):
            return state, None
    return "failed", (
        f"the worker running this job lost its heartbeat (none for over "
        f"{settings.job_stale_s:.0f} s: killed, frozen or cut off from Redis); resubmit the job"
    )


def job_status(job: Job, settings: Settings) -> dict[str, Any]:
    """State, stage, progress, message, result, error. A started job is alive while its
    worker's heartbeat key exists, however long it goes without reporting progress; without
    it, the job is reported failed (its worker was killed, frozen or lost Redis)."""
    state, error = job_state(job, settings)
    meta = job.get_meta(refresh=True) if hasattr(job, "get_meta") else job.meta
    ahead = jobs_ahead(job, settings) if state == "queued" else None
    estimate = wait_estimate(job, settings) if state == "queued" else None
    message = meta.get("message")
    if ahead:
        message = f"waiting for a worker: {ahead} job{'s' if ahead > 1 else ''} ahead"
    if estimate is not None and state == "queued":
        message = f"{message or 'waiting for a worker'} (about {_duration(estimate)})"
    result = None
    if state == "finished":
        latest = job.latest_result()
        result = latest.return_value if latest is not None else None
    elapsed = _elapsed(job, state)
    return {
        "id": job.id,
        "kind": meta.get("kind"),
        "session": meta.get("session"),
        "state": state,
        "stage": meta.get("stage"),
        "progress": meta.get("progress", 0.0),
        "message": message,
        "lane": meta.get("lane"),
        "ahead": ahead,
        "estimate_s": estimate,
        "elapsed_s": elapsed,
        "remaining_s": _remaining(job, state, elapsed, settings),
        "error": error,
        "result": result,
        "enqueued_at": _iso(job.enqueued_at),
        "started_at": _iso(job.started_at),
        "ended_at": _iso(job.ended_at),
    }


def _seconds_since(moment: datetime | None, until: datetime | None = None) -> float | None:
    if moment is None:
        return None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # RQ's times are UTC
    end = until or datetime.now(UTC)
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    return max(0.0, (end - moment).total_seconds())


def _elapsed(job: Job, state: str) -> float | None:
    """While queued, how long it has waited; once started, how long it has run (to its end,
    once ended)."""
    if state == "queued":
        return _seconds_since(job.enqueued_at)
    if job.started_at is None:
        return None
    return _seconds_since(job.started_at, job.ended_at if state != "started" else None)


def _remaining(job: Job, state: str, elapsed: float | None, settings: Settings) -> float | None:
    """While running, about how many seconds are left: its kind's mean run time here less
    what it has run, or else (a kind never run here) its run time so far scaled by its
    progress once it has reported 5%; None otherwise."""
    if state != "started" or elapsed is None:
        return None
    mean = job.connection.hget(durations_key(settings), str(job.meta.get("kind")))
    if mean is not None and float(mean) > elapsed:
        return float(mean) - elapsed
    progress = float(job.meta.get("progress", 0.0))
    if 0.05 <= progress < 1.0:
        return elapsed * (1.0 - progress) / progress
    return None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    return f"{round(seconds / 60)} min"


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "failed"


def job_info(job: Job, cfg: Settings) -> JobInfo:
    """The job's status, with a link to its result once a session job has finished."""
    info = job_status(job, cfg)
    link = None
    kind = JOBS.get(cast(JobKind, info["kind"]))
    if info["state"] == "finished" and info["session"] and kind and kind.result:
        link = f"/v1/sessions/{info['session']}/{kind.result}"
    return JobInfo(**info, result_link=link)
