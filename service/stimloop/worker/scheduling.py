"""Who goes first, on the worker's side: rigs take turns within a lane, and how long each kind
of job runs is remembered for the queue's wait estimates (``queue.wait_estimate``).

Within a lane the queue is first come, first served, except between rigs: before a worker
takes its next job, the lane's queued job of the rig served longest ago (a rig never served
first) is moved to the front. So two rigs on one GPU box alternate, whoever queued more.
A job's rig is the session's (the token that created it; ``queue.enqueue``).
"""

from __future__ import annotations

import time

from redis import Redis
from rq.job import Job

from stimloop.runtime.settings import Settings
from stimloop.worker.queue import (
    LANES,
    Lane,
    durations_key,
    get_queue,
    served_key,
)

LOOK_AHEAD = 200  # queued jobs of a lane looked at for the turn of another rig
SMOOTHING = 0.3  # weight of a job's run time in its kind's running mean


def least_served_first(settings: Settings, redis: Redis, lane: Lane) -> str | None:
    """Move the lane's queued job of the rig served longest ago to the front (atomically,
    so another worker never misses it); the job id moved, or None."""
    queue = get_queue(settings, redis, lane)
    ids = [
        i.decode() if isinstance(i, bytes) else i for i in redis.lrange(queue.key, 0, LOOK_AHEAD)
    ]
    if len(ids) < 2:
        return None
    jobs = [j for j in Job.fetch_many(ids, connection=redis) if j is not None]
    served = {
        (k.decode() if isinstance(k, bytes) else k): float(v)
        for k, v in redis.hgetall(served_key(settings, lane)).items()
    }
    rigs = [str(j.meta.get("rig") or "") for j in jobs]
    turn = min(range(len(jobs)), key=lambda k: (served.get(rigs[k], 0.0), k))
    if turn == 0 or rigs[turn] == rigs[0]:
        return None
    chosen = jobs[turn].id
    with redis.pipeline(transaction=True) as pipe:
        pipe.lrem(queue.key, 1, chosen)
        pipe.lpush(queue.key, chosen)
        removed, _ = pipe.execute()
    if not removed:  # another worker took it meanwhile; the pushed id is not queued twice
        redis.lrem(queue.key, 1, chosen)
        return None
    return chosen


def record_served(settings: Settings, redis: Redis, job: Job) -> None:
    """The job's rig was served now (in its lane)."""
    lane = job.meta.get("lane")
    if lane in LANES:
        redis.hset(served_key(settings, lane), str(job.meta.get("rig") or ""), time.time())


def record_duration(settings: Settings, redis: Redis, job: Job, seconds: float) -> None:
    """A finished job's run time, folded into its kind's running mean (``SMOOTHING``)."""
    kind = job.meta.get("kind")
    if not kind or seconds <= 0:
        return
    key = durations_key(settings)
    old = redis.hget(key, kind)
    mean = seconds if old is None else (1 - SMOOTHING) * float(old) + SMOOTHING * seconds
    redis.hset(key, kind, mean)
