"""A session's work: start its jobs, receive its uploads, run a fit again, and see through a
job that died (shown by reads, recorded by the next change).

Uploads are validated before anything is stored; a refused upload leaves the session as it
was. The same payload again is one upload (same response); another payload for a phase
already received is a 409 unless ``?replace=true``, which discards what was derived from it.
"""

from __future__ import annotations

from datetime import datetime

from anyio.to_thread import run_sync
from redis import Redis
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job
from stimloop_contract.system import Accepted, JobKind

from stimloop.runtime.settings import Settings
from stimloop.sessions.errors import StateConflictError
from stimloop.sessions.session_jobs import failure_line
from stimloop.sessions.uploads import Upload, UploadPool, expected_ids
from stimloop.storage import session_states
from stimloop.storage.session import Phase, SessionRecord
from stimloop.storage.store import Store
from stimloop.worker.queue import enqueue, job_info, job_status


def dead_job(record: SessionRecord, cfg: Settings, r: Redis) -> tuple[JobKind, str, str] | None:
    """(kind, job id, error) when the session waits on a fit or analysis job that has failed,
    whose worker died, or that Redis no longer holds (it restarted without its data); None
    otherwise (also with Redis down: the store is the truth)."""
    kind = session_states.WAITS_ON.get(record.state)
    job_id = record.jobs.get(kind or "")
    if kind is None or not job_id:
        return None
    try:
        status = job_status(Job.fetch(job_id, connection=r), cfg)
    except NoSuchJobError:
        again = "POST .../fit runs it again" if kind == "fit" else "upload phase two again"
        return (
            kind,
            job_id,
            f"its {kind} job is gone from Redis (Redis restarted without its data); {again}",
        )
    except RedisError:
        return None
    if status["state"] != "failed":
        return None
    return kind, job_id, status["error"]


def preparation_error(record: SessionRecord, cfg: Settings, r: Redis) -> str | None:
    """Why the session's preparation (warming its candidates) failed, if it did, in one line
    with what to do (``session_jobs.failure_line``)."""
    job_id = record.jobs.get("warm")
    if record.state != "created" or not job_id:
        return None
    try:
        status = job_status(Job.fetch(job_id, connection=r), cfg)
    except (NoSuchJobError, RedisError):
        return None
    if status["state"] != "failed":
        return None
    return failure_line("warm", status["error"])


def observed(record: SessionRecord, cfg: Settings, r: Redis) -> SessionRecord:
    """The session as a reader should see it: a session whose job died is shown failed, with
    why; one whose preparation failed is shown failed at once (``failed_in`` "warm"; it still
    takes phase one, whose upload moves it on). Nothing is written (a GET never writes);
    ``reconcile`` records a dead job."""
    preparing = preparation_error(record, cfg, r)
    if preparing is not None:
        return record.model_copy(
            update={"state": "failed", "failed_in": "warm", "error": preparing}
        )
    dead = dead_job(record, cfg, r)
    if dead is None:
        return record
    kind, _, error = dead
    return record.model_copy(update={"state": "failed", "failed_in": kind, "error": error})


def reconcile(st: Store, record: SessionRecord, cfg: Settings, r: Redis) -> SessionRecord:
    """Before a change: a session whose fit or analysis job died with its worker is marked
    failed, with why, in a new generation (whatever the dead job might still write is void)."""
    dead = dead_job(record, cfg, r)
    if dead is None:
        return record
    kind, job_id, error = dead
    with st.locked(record.id) as rec:
        if rec.state == record.state and rec.jobs.get(kind) == job_id:
            rec.error, rec.failed_in = error, kind
            session_states.transition(
                rec, "failed", f"{kind} job failed", bump=True, job=job_id, error=error
            )
        return rec


def accepted(
    record: SessionRecord, kind: JobKind, cfg: Settings, r: Redis, status: str
) -> Accepted:
    job_id = record.jobs.get(kind)
    job = None
    if job_id:
        try:
            job = job_info(Job.fetch(job_id, connection=r), cfg)
        except NoSuchJobError:
            job = None
    links = {"session": f"/v1/sessions/{record.id}"}
    if job is not None:
        links["job"] = f"/v1/jobs/{job.id}"
    return Accepted(job=job, session=record.id, status=status, links=links)


def start_job(
    st: Store, record: SessionRecord, kind: JobKind, cfg: Settings, r: Redis
) -> SessionRecord:
    """Enqueue ``kind`` for the record's generation; remember its id unless the session has
    moved on meanwhile (then the job is stale and will write nothing)."""
    job = enqueue(cfg, r, kind, record.id, record.generation, session=record.id, rig=record.rig)
    with st.locked(record.id) as rec:
        if rec.generation == record.generation:
            rec.jobs[kind] = job.id
        return rec


def job_pending(record: SessionRecord, kind: str, r: Redis) -> bool:
    """Whether the session's ``kind`` job is still queued or running."""
    job_id = record.jobs.get(kind)
    if not job_id:
        return False
    try:
        status = Job.fetch(job_id, connection=r).get_status(refresh=True)
    except NoSuchJobError:
        return False
    return str(getattr(status, "value", status)) in ("queued", "started", "deferred", "scheduled")


def start_phase_job(
    phase: Phase,
    new: bool,
    rerun_possible: bool,
    record: SessionRecord,
    cfg: Settings,
    st: Store,
    r: Redis,
) -> Accepted:
    """Start the phase's job for stored trials (unless they were already received)."""
    kind = session_states.STARTED_BY[phase]
    if not new and not (rerun_possible and not job_pending(record, kind, r)):
        return accepted(record, kind, cfg, r, "already received")
    record = start_job(st, record, kind, cfg, r)
    return accepted(record, kind, cfg, r, "queued")


async def receive_phase(
    phase: Phase,
    session_id: str,
    kind: str,
    data: bytes,
    replace: bool,
    uploads: UploadPool,
    cfg: Settings,
    st: Store,
    r: Redis,
    name: str | None = None,
    recording_start: datetime | None = None,
) -> Accepted:
    """The one upload path of every phase and every format (``kind``: the body's media
    type; ``name``: the file's name, where a person chose one; ``recording_start``: when the
    phase's recording started, where the rig said). Decoding, checking, hashing
    and storing run in an upload process (the trials never enter the caller's process as
    arrays), the job starts in a thread: a caller's event loop stays responsive while a large
    upload is processed."""
    if phase != "phase3":  # a job that died is recorded first, so the upload can rerun it
        await run_sync(lambda: reconcile(st, st.get_session(session_id), cfg, r))
    expected = await run_sync(expected_ids, phase, session_id, st, cfg)
    new, record, rerun = await uploads.prepare_and_store(
        Upload(kind, data, expected, st.root, session_id, phase, replace, name, recording_start)
    )
    return await run_sync(start_phase_job, phase, new, rerun, record, cfg, st, r)


def resubmit_fit(st: Store, session_id: str, cfg: Settings, r: Redis) -> Accepted:
    """Run fit-and-select again after a failed or cancelled fit (409 saying what to do
    otherwise), in a new generation."""
    record = reconcile(st, st.get_session(session_id), cfg, r)
    if "phase1" not in record.uploads:
        raise StateConflictError("upload phase one first")
    if fit_alive(record, cfg, r):
        raise StateConflictError(
            f"the fit is still queued or running (job {record.jobs['fit']}): wait for it, or "
            "cancel it (DELETE /v1/jobs/{id}) and then fit again",
            title="Fit pending",
        )
    with st.locked(session_id) as rec:
        if not session_states.offers(rec.state, "fit_again"):
            raise StateConflictError(
                f"the session is {rec.state}: a fit reruns only after a failed or cancelled "
                "one; to fit other trials, PUT .../phase1?replace=true"
            )
        if rec.state == "failed" and rec.failed_in == "analysis":
            raise StateConflictError(
                "the analysis failed, not the fit: PUT .../phase2 again to rerun it"
            )
        rec.error = None
        session_states.transition(rec, "phase1_received", "fit resubmitted", bump=True)
        record = rec
    record = start_job(st, record, "fit", cfg, r)
    return accepted(record, "fit", cfg, r, "queued")


def fit_alive(record: SessionRecord, cfg: Settings, r: Redis) -> bool:
    """Whether the session's fit job is queued, or running on a worker that is alive (its
    heartbeat: a fit whose worker died is not in the way of another)."""
    job_id = record.jobs.get("fit")
    if not job_id:
        return False
    try:
        state = job_status(Job.fetch(job_id, connection=r), cfg)["state"]
    except NoSuchJobError:
        return False
    return state in ("queued", "started", "deferred", "scheduled")


def actions_now(record: SessionRecord, cfg: Settings, r: Redis) -> tuple[str, ...]:
    """What a person may do to the session now (the page's buttons): the state table's
    actions (``session_states.ACTIONS``), less a fit again while a fit is queued or running
    or before phase one is in."""
    actions = session_states.ACTIONS.get(record.state, ())
    if "fit_again" in actions and ("phase1" not in record.uploads or fit_alive(record, cfg, r)):
        actions = tuple(a for a in actions if a != "fit_again")
    return actions
