"""A session's jobs as a person sees them: every kind (its own, and the maps, checks and
phase-three lists asked of it), each with its state, place in the queue, time and estimate; a
failed one in one line saying what happened and what to do; and who may cancel which."""

from __future__ import annotations

import re
from typing import Any

from redis import Redis
from rq.job import Job
from stimloop_contract.system import JobInfo

from stimloop.runtime.settings import Settings
from stimloop.sessions.errors import ForbiddenError
from stimloop.worker.queue import cancel_key, job_info, session_jobs

# what each kind of job does, and what to do when it failed
WHAT: dict[str, tuple[str, str]] = {
    "warm": (
        "preparing the session (the candidates' features)",
        "fix the named image or set (register it again) and create a new session; phase one "
        "can still be uploaded, its features are computed then",
    ),
    "fit": ("the fit and the phase-two list", "press Fit again, or upload phase one again"),
    "analysis": ("the analysis of phase two", "upload phase two again to rerun it"),
    "phase3": ("building the phase-three list", "ask for the phase-three list again"),
    "phase3_analysis": ("the analysis of phase three", "upload phase three again to rerun it"),
    "saliency": ("the saliency maps", "ask for the maps again"),
    "sanity": ("the maps' sanity checks", "ask for the checks again"),
    "activations": ("caching a set's features", "start the caching again"),
}

# an exception's qualified class name before its message ("stimloop.science.backbone.
# ImageError: ..."): the person needs the message, not where in the code it was raised
_RAISED_BY = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit)?: ")
# what an analyst may cancel: the maps and checks it asked for; the rig cancels any job
ANALYST_CANCELS = ("saliency", "sanity")
ENDED = ("finished", "failed", "canceled", "stopped")


def failure_line(kind: str | None, error: str | None) -> str:
    """A failed job in one line: what failed, why (the error without the raising class's
    module path), and what to do."""
    what, todo = WHAT.get(kind or "", ("the job", "start it again"))
    why = (error or "failed").strip().splitlines()[-1] if error else "failed"
    qualified = _RAISED_BY.match(why)
    if qualified and ("." in qualified.group(0) or qualified.group(0).endswith("Error: ")):
        why = why[qualified.end() :]
    return f"{what} failed: {why.rstrip('.')}. What to do: {todo}."


def may_cancel(role: str, caller_id: str, meta: dict[str, Any]) -> bool:
    """Whether a caller of ``role`` may cancel a job with ``meta``: a rig token any job; an
    analyst the maps and checks it asked for itself."""
    if role == "rig":
        return True
    return meta.get("kind") in ANALYST_CANCELS and meta.get("owner") == caller_id


def cancel(job: Job, role: str, caller_id: str, cfg: Settings, r: Redis) -> JobInfo:
    """Cancel ``job``: a queued one leaves the queue, a running one stops at its next progress
    report (its cancel key). 403 (``ForbiddenError``) for a job the caller may not cancel."""
    kind = job.meta.get("kind")
    if not may_cancel(role, caller_id, job.meta):
        raise ForbiddenError(
            f"an analyst token cancels only the maps and checks it asked for; this is a {kind} "
            "job: ask the rig (a rig token) to cancel it"
        )
    state = job.get_status(refresh=True)
    if str(getattr(state, "value", state)) == "queued":
        job.cancel()
    else:
        r.set(cancel_key(cfg, job.id), 1, ex=cfg.job_timeout_s)
    return job_info(job, cfg)


def job_rows(
    cfg: Settings, r: Redis, session_id: str, role: str, caller_id: str
) -> list[dict[str, Any]]:
    """Each of the session's jobs, newest first, as the page shows it: kind, state, place in
    the queue, elapsed and remaining seconds, message, the failure line, and whether this
    caller may cancel it (only while it is queued or running)."""
    rows = []
    for job in reversed(session_jobs(cfg, r, session_id)):
        info = job_info(job, cfg)
        row = info.model_dump(
            include={
                "id",
                "kind",
                "state",
                "stage",
                "progress",
                "message",
                "lane",
                "ahead",
                "estimate_s",
                "elapsed_s",
                "remaining_s",
            }
        )
        row["what"] = WHAT.get(info.kind or "", (info.kind or "job", ""))[0]
        if info.state == "started" and info.stage == "queued":  # taken, not yet reporting
            row["message"] = "starting"
        row["failure"] = failure_line(info.kind, info.error) if info.state == "failed" else None
        row["cancellable"] = info.state not in ENDED and may_cancel(role, caller_id, job.meta)
        rows.append(row)
    return rows
