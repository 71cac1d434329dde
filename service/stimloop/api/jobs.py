"""The API's view of a job: fetch this deployment's job by id, and describe it (state,
progress, liveness by heartbeat, where its result is)."""

from __future__ import annotations

import re
from typing import cast

from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job
from stimloop_contract.system import JobInfo, JobKind

from stimloop.api.errors import ApiError
from stimloop.runtime.settings import Settings
from stimloop.worker.queue import JOBS, job_status

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def fetch_job(job_id: str, r: Redis, cfg: Settings) -> Job:
    """This deployment's job ``job_id``; 404 for another deployment's (other key prefix)."""
    missing = ApiError(404, "Not found", f"job {job_id!r} does not exist (or expired)")
    if not JOB_ID.fullmatch(job_id):
        raise missing
    try:
        job = Job.fetch(job_id, connection=r)
    except NoSuchJobError:
        raise missing from None
    if job.meta.get("prefix") != cfg.key_prefix:
        raise missing
    return job


def job_info(job: Job, cfg: Settings) -> JobInfo:
    """The job's status, with a link to its result once a session job has finished."""
    info = job_status(job, cfg)
    link = None
    kind = JOBS.get(cast(JobKind, info["kind"]))
    if info["state"] == "finished" and info["session"] and kind and kind.result:
        link = f"/v1/sessions/{info['session']}/{kind.result}"
    return JobInfo(**info, result_link=link)
