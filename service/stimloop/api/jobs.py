"""The API's view of a job: this deployment's job by id, or 404 (``worker.queue.job_info``
describes it)."""

from __future__ import annotations

import re

from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job

from stimloop.api.errors import ApiError
from stimloop.runtime.settings import Settings

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
