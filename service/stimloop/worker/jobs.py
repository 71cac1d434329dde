"""Jobs on RQ: what the API enqueues and what workers run.

Workers are ``StimloopWorker``s, RQ ``SimpleWorker``s: a job runs in the worker's own process,
which loaded the backbone once and keeps it on its GPU (no fork after CUDA has initialised).
One worker per GPU; any machine pointed at the same Redis and models store adds workers.

Liveness is a heartbeat, not progress: while a job runs, a thread of its worker keeps the
job's heartbeat key alive (``worker/heartbeat.py``), and the API reports a started job failed
only when that key has lapsed (``STIMLOOP_JOB_STALE_S`` seconds without a beat: the worker was
killed, frozen or cut off). Jobs report ``stage``, ``progress`` (0..1) and ``message`` in
``job.meta`` for people to watch. A job reported failed has its session marked failed (a new
generation) and can be resubmitted; the queue never runs a job again on its own, and every
session job carries the generation it was started for: a stale or lost one writes nothing and
changes no state.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import SimpleWorker, get_current_job, worker_registration
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.worker import WorkerStatus
from stimloop_contract.phase_three import PhaseThreeRequest
from stimloop_contract.saliency import SaliencyRequest, SanityRequest

from stimloop.runtime.settings import Settings
from stimloop.storage.cache import ActivationCache
from stimloop.storage.session import PhaseThreeInfo
from stimloop.storage.session_states import StaleJobError, State, note, transition
from stimloop.worker import analysis, fit_select, phase_three, precompute, saliency, sanity
from stimloop.worker.context import WorkerContext
from stimloop.worker.heartbeat import Heartbeat, JobLostError
from stimloop.worker.queue import LANES, beat_key, cancel_key, connect, get_queue, lanes
from stimloop.worker.scheduling import least_served_first, record_duration, record_served

log = logging.getLogger("stimloop.worker.jobs")
_RESOURCES: WorkerContext | None = None  # the worker process's long-lived state


def install_resources(held: WorkerContext) -> None:
    global _RESOURCES
    _RESOURCES = held


def resources() -> WorkerContext:
    """The worker's resources, made on first use from the environment's settings."""
    global _RESOURCES
    if _RESOURCES is None:
        settings = Settings()
        _RESOURCES = WorkerContext(
            settings, ActivationCache(connect(settings), settings.key_prefix)
        )
    return _RESOURCES


def _reporter(job: Job | None) -> Callable[[str, float, str], None]:
    """The job's progress for people (stage, 0..1, message), at most every 0.2 s; a job whose
    heartbeat lapsed is stopped here (``JobLostError``) at its next report."""
    last = {"t": 0.0}
    res = resources()

    def report(stage: str, progress: float, message: str) -> None:
        res.check_lease()
        if res.give_way is not None:
            res.give_way()
        if job is None:
            return
        now = time.monotonic()
        if now - last["t"] < 0.2 and progress < 1.0:
            return
        last["t"] = now
        job.meta.update(stage=stage, progress=float(min(max(progress, 0.0), 1.0)), message=message)
        job.save_meta()

    return report


def _should_stop(job: Job | None, res: WorkerContext) -> Callable[[], bool]:
    if job is None:
        return lambda: False
    key = cancel_key(res.settings, job.id)
    return lambda: bool(res.cache.redis.exists(key))


def _fail_session(
    res: WorkerContext,
    session_id: str,
    generation: int | None,
    error: str,
    failed_in: str,
    state: State = "failed",
) -> None:
    """Mark the session failed (or back to phase1_received when cancelled), unless the job is
    stale: then a newer generation owns the session and nothing changes. Fenced by the
    generation alone, not the heartbeat: a job failing because Redis went away records its
    own failure, which is what the API shows of it anyway."""
    try:
        with res.store.fenced(session_id, generation) as rec:
            if rec.state not in ("fitting", "phase2_received", "phase1_received"):
                return
            rec.error, rec.failed_in = error, failed_in
            event = "job failed" if state == "failed" else "fit cancelled"
            transition(rec, state, event, bump=True, error=error)
    except StaleJobError:
        log.info(
            "stale %s job of session %s failed; the session has moved on", failed_in, session_id
        )


def _stale(exc: StaleJobError) -> dict[str, Any]:
    """A stale job ends quietly, writing nothing; a lost one (its heartbeat lapsed, so the API
    has reported it failed) ends failed, as it was reported."""
    if isinstance(exc, JobLostError):
        raise exc
    log.info("%s", exc)
    return {"stale": True, "message": str(exc)}


# ------------------------------------------------------------------ job functions


def run_precompute(backbone: str, set_id: str) -> dict[str, Any]:
    job = get_current_job()
    return precompute.precompute(resources(), backbone, set_id, _reporter(job))


def run_warm(session_id: str) -> dict[str, Any]:
    return precompute.warm_session(resources(), session_id, _reporter(get_current_job()))


def run_fit(session_id: str, generation: int | None = None) -> dict[str, Any]:
    job, res = get_current_job(), resources()
    try:
        return fit_select.fit_and_select(
            res, session_id, _reporter(job), _should_stop(job, res), generation
        )
    except StaleJobError as exc:
        return _stale(exc)
    except InterruptedError:
        _fail_session(
            res,
            session_id,
            generation,
            "cancelled; POST .../fit to run it again",
            "fit",
            "phase1_received",
        )
        raise
    except (Exception, SystemExit) as exc:  # SystemExit: the worker was stopped mid-job
        _fail_session(res, session_id, generation, _describe(exc), "fit")
        raise


def run_analysis(session_id: str, generation: int | None = None) -> dict[str, Any]:
    job, res = get_current_job(), resources()
    try:
        return analysis.analyse(res, session_id, _reporter(job), generation)
    except StaleJobError as exc:
        return _stale(exc)
    except (Exception, SystemExit) as exc:
        _fail_session(res, session_id, generation, _describe(exc), "analysis")
        raise


def run_saliency(
    session_id: str, request: SaliencyRequest, key: str, generation: int | None = None
) -> dict[str, Any]:
    try:
        return saliency.saliency(
            resources(), session_id, request, key, _reporter(get_current_job()), generation
        )
    except StaleJobError as exc:
        return _stale(exc)


def run_sanity(
    session_id: str, key: str, options: SanityRequest, generation: int | None = None
) -> dict[str, Any]:
    try:
        return sanity.check_saliency(
            resources(), session_id, key, options, _reporter(get_current_job()), generation
        )
    except StaleJobError as exc:
        return _stale(exc)


def _phase_three_failed(
    res: WorkerContext, session_id: str, generation: int | None, what: str, exc: BaseException
) -> None:
    """Phase three has no state of its own in the session: its failure is kept beside it
    (``phase3.error``, shown by GET .../sessions/{id}) and in the history; a stale job's is
    not."""
    error = _describe(exc)
    try:
        with res.store.fenced(session_id, generation) as rec:
            info = rec.phase3 or PhaseThreeInfo()
            rec.phase3 = info.model_copy(update={"error": f"{what}: {error}"})
            note(rec, f"phase3 {what} failed", error=error)
    except StaleJobError:
        log.info("stale phase-three %s job of session %s failed", what, session_id)


def run_phase3(
    session_id: str, request: PhaseThreeRequest, key: str, generation: int | None = None
) -> dict[str, Any]:
    res = resources()
    try:
        return phase_three.build(
            res, session_id, request, key, _reporter(get_current_job()), generation
        )
    except StaleJobError as exc:
        return _stale(exc)
    except (Exception, SystemExit) as exc:
        _phase_three_failed(res, session_id, generation, "list", exc)
        raise


def run_phase3_analysis(session_id: str, generation: int | None = None) -> dict[str, Any]:
    res = resources()
    try:
        return phase_three.analyse(res, session_id, _reporter(get_current_job()), generation)
    except StaleJobError as exc:
        return _stale(exc)
    except (Exception, SystemExit) as exc:
        _phase_three_failed(res, session_id, generation, "analysis", exc)
        raise


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return "the worker was stopped during the job; POST .../fit (or upload again) to rerun"
    return f"{type(exc).__name__}: {exc}"


class StimloopWorker(SimpleWorker):
    """A non-forking RQ worker that keeps each job's heartbeat (a thread beside the job) and
    outlives a Redis restart: it reconnects within seconds, registers itself again if Redis
    came back empty, and a job cut off mid-way is left to the API's heartbeat judgement
    instead of ending the worker."""

    max_connection_wait_time = 5.0  # RQ's default backs off to 60 s between reconnects
    command_wake_s = 1.0  # how often the command channel's listener looks at its stop flag

    def subscribe(self) -> None:
        """Listen on this worker's command channel (RQ's stop and kill-job commands) on a
        thread that wakes every ``command_wake_s``: RQ's own listener waits up to 60 s for a
        message, and its teardown waits for the listener, so a burst run or a stopping worker
        could hang for up to a minute after its last job."""
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]  # RQ: None
            sleep_time=self.command_wake_s,
            daemon=True,
            exception_handler=self._pubsub_exception_handler,
        )

    def __init__(self, *args: Any, settings: Settings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings
        self._yielded = 0.0  # s the running jobs gave to more urgent ones (for run times)

    def execute_job(self, job: Job, queue: Queue) -> None:
        key = beat_key(self.settings, job.id)
        res = resources()
        outer = (res.lease, res.give_way)  # a job run while another gives way
        record_served(self.settings, self.connection, job)
        started, yielded = time.monotonic(), self._yielded
        try:
            with Heartbeat(self.connection, key, self.settings.job_stale_s) as beat:
                res.lease, res.give_way = beat.check, self._give_way_for(job)
                try:
                    super().execute_job(job, queue)
                finally:
                    res.lease, res.give_way = outer
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.error(
                "Redis went away during job %s (%s): its heartbeat lapses, so the API reports "
                "it failed; waiting for Redis",
                job.id,
                exc,
            )
            self._wait_for_redis()
            return
        if job.get_status(refresh=True) == JobStatus.FINISHED:
            own = time.monotonic() - started - (self._yielded - yielded)
            record_duration(self.settings, self.connection, job, own)

    def _give_way_for(self, job: Job) -> Callable[[], None] | None:
        """For a job of a lane below the most urgent: a check, at most once a second and on
        the main thread only (the job timeout's alarm lives there), that runs every job
        waiting in the more urgent lanes before the job goes on."""
        lane = job.meta.get("lane")
        if lane not in LANES or LANES.index(lane) == 0:
            return None
        urgent = [
            get_queue(self.settings, self.connection, ln) for ln in LANES[: LANES.index(lane)]
        ]
        last = {"t": time.monotonic()}

        def give_way() -> None:
            now = time.monotonic()
            if now - last["t"] < 1.0 or threading.current_thread() is not threading.main_thread():
                return
            last["t"] = now
            if any(q.count for q in urgent):
                self._run_waiting(job, urgent)
                last["t"] = time.monotonic()

        return give_way

    def _run_waiting(self, paused: Job, queues: list[Queue]) -> None:
        """Run the jobs waiting in ``queues`` (most urgent first) inside the paused job: each
        with its own heartbeat and RQ bookkeeping; the paused job's heartbeat goes on beating
        meanwhile, and its timeout is put back, less the time given away."""
        began = time.monotonic()
        remaining = signal.alarm(0)
        paused.meta.update(message="paused: a more urgent job runs first")
        paused.save_meta()
        try:
            while True:
                found = Queue.dequeue_any(
                    queues, None, connection=self.connection, job_class=self.job_class
                )
                if found is None:
                    break
                waiting, queue = found
                log.info("job %s gives way to %s (%s)", paused.id, waiting.id, queue.name)
                self.execute_job(waiting, queue)
        finally:
            spent = time.monotonic() - began
            self._yielded += spent
            self.set_state(WorkerStatus.BUSY)
            if remaining:
                signal.alarm(max(1, remaining - int(spent)))
            paused.meta.update(message="resumed after a more urgent job")
            paused.save_meta()

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """RQ's dequeue, after the rigs' turns are put first in each lane (``scheduling``)."""
        for lane in LANES:
            try:
                least_served_first(self.settings, self.connection, lane)
            except (RedisConnectionError, RedisTimeoutError):
                break  # RQ's own loop below waits for Redis
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def _wait_for_redis(self) -> None:
        """Until Redis answers again (every second), or a stop is asked for."""
        while not self._stop_requested:
            try:
                self.connection.ping()
                return
            except (RedisConnectionError, RedisTimeoutError):
                time.sleep(1.0)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        super().heartbeat(timeout, pipeline)
        if pipeline is None and not self.connection.hexists(self.key, "birth"):
            # Redis came back without our registration (restarted empty): register again,
            # so health and RQ see this worker without a restart
            log.warning("worker %s: registering again after Redis lost it", self.name)
            self.connection.hset(self.key, mapping=self.serialize())
            worker_registration.register(self)


def make_worker(settings: Settings, redis: Redis, name: str | None = None) -> StimloopWorker:
    """A worker on the stimloop lanes, most urgent first, with this process's resources
    installed."""
    install_resources(WorkerContext(settings, ActivationCache(redis, settings.key_prefix)))
    return StimloopWorker(lanes(settings, redis), connection=redis, name=name, settings=settings)
