"""The worker process's own housekeeping (``worker.jobs.StimloopWorker``): RQ's command channel
(stop, kill a job) is listened to on a thread whose stop flag is looked at every second, so a
burst run or a stopping worker ends within seconds of its last job, not up to a minute later."""

from __future__ import annotations

import time

import pytest
from stimloop.worker.jobs import make_worker

pytestmark = pytest.mark.redis


def test_the_command_listener_stops_within_its_wake_interval(deployment):
    """Stopped while it waits for a message that never comes (no unsubscribe reply to wake
    it), the listener ends within its wake interval; RQ's own waits up to 60 s."""
    worker = make_worker(*deployment)
    worker.subscribe()
    thread = worker.pubsub_thread
    try:
        time.sleep(0.5)  # the listener is waiting on the channel now
        assert thread.is_alive()
        began = time.monotonic()
        thread.stop(timeout=10)
        took = time.monotonic() - began
        assert not thread.is_alive() and took < worker.command_wake_s + 2, took
    finally:
        worker.pubsub.close()


def test_a_burst_run_with_nothing_queued_ends_within_seconds(deployment):
    """The service's tests and the demo run their jobs in bursts: each ends once the lanes are
    empty, its teardown (the listener's stop among it) in seconds, every time."""
    for _ in range(5):
        began = time.monotonic()
        make_worker(*deployment).work(burst=True, logging_level="WARNING")
        assert time.monotonic() - began < 10
