"""A running job's heartbeat: a thread beside the job, independent of what the job does.

While a job runs, its worker keeps a Redis key (``queueing.beat_key``) alive: it is set when
the job starts, with a lifetime of ``stale_s`` seconds, and renewed every ``interval`` seconds
by a thread that does nothing else. The API counts a started job as dead exactly when that key
is gone, so a job that computes for an hour without reporting progress is alive for as long as
its process runs, and a worker that is killed or frozen (SIGSTOP) loses the key within
``stale_s`` seconds.

Once the key has lapsed the API may already have shown the job as failed, so the lapse is
final: the key is renewed only while it still exists (``SET ... XX``), never recreated. A
frozen worker that resumes finds it gone, stops beating, and its job is told it was lost
(``check`` raises ``JobLostError``): at its next progress report or fenced write it ends and
writes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from types import TracebackType

from redis import Redis
from redis.exceptions import RedisError

from stimloop.storage.session_states import StaleJobError

log = logging.getLogger("stimloop.worker.heartbeat")


class JobLostError(StaleJobError):
    """The job's heartbeat lapsed (its worker was frozen, starved or cut off from Redis for
    longer than the stale window): the job may have been reported failed, so it writes
    nothing."""


def beat_interval(stale_s: float) -> float:
    """How often the key is renewed: a quarter of its lifetime, at most every 5 s."""
    return max(0.05, min(5.0, stale_s / 4))


class Heartbeat:
    """``with Heartbeat(redis, key, stale_s):`` keeps ``key`` alive while the block runs."""

    def __init__(self, redis: Redis, key: str, stale_s: float) -> None:
        self.redis, self.key, self.stale_ms = redis, key, max(1, int(stale_s * 1000))
        self.interval = beat_interval(stale_s)
        self.value = f"{socket.gethostname()}:{threading.get_native_id()}"
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{key}", daemon=True)

    def __enter__(self) -> Heartbeat:
        try:
            self.redis.set(self.key, self.value, px=self.stale_ms)
        except RedisError as exc:  # the job will fail on its own Redis calls; say why here
            log.warning("heartbeat %s not started: %s", self.key, exc)
            self.lost.set()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
        with contextlib.suppress(RedisError):
            self.redis.delete(self.key)

    def _run(self) -> None:
        while not self._stop.wait(self.interval) and not self.lost.is_set():
            try:
                renewed = self.redis.set(self.key, self.value, px=self.stale_ms, xx=True)
            except RedisError as exc:
                log.warning("heartbeat %s not renewed: %s", self.key, exc)
                continue  # the key lapses on its own if Redis stays away
            if not renewed:
                log.warning(
                    "heartbeat %s lapsed (frozen or cut off for over %.0f s): the job is "
                    "treated as lost and writes nothing",
                    self.key,
                    self.stale_ms / 1000,
                )
                self.lost.set()

    def check(self, confirm: bool = False) -> None:
        """``JobLostError`` once the heartbeat has lapsed; with ``confirm`` (before a fenced
        write) the key itself is looked at too, so a lapse the thread has not seen yet counts."""
        if confirm and not self.lost.is_set() and not self.redis.exists(self.key):
            self.lost.set()
        if self.lost.is_set():
            raise JobLostError(
                f"this job's heartbeat lapsed for over {self.stale_ms / 1000:.0f} s (its worker "
                "was frozen or cut off): it may have been reported failed, so it writes nothing"
            )
