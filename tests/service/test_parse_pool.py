"""The upload processes: a task that crashes, exhausts or holds its process costs that one
task a ``ParseFailedError``; the process is replaced, and the next task (or one running beside
it) is answered as usual."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from stimloop.runtime.parse_pool import ParseFailedError, ParsePool

MIB = 2**20


def crash(_: object) -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def allocate(mib: int) -> int:
    return len(bytearray(mib * MIB))


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def refuse(text: str) -> None:
    raise ValueError(text)


def pid(_: object) -> int:
    return os.getpid()


@pytest.fixture
def pool():
    pool = ParsePool(2, 256 * MIB, timeout_s=2.0, warm="json")
    pool.start()
    yield pool
    pool.close()


def test_a_crash_costs_one_task_and_the_next_is_answered(pool):
    with pytest.raises(ParseFailedError, match="killed by SIGSEGV"):
        pool.run(crash, None)
    started = time.monotonic()
    assert pool.run(allocate, 1) == MIB
    assert time.monotonic() - started < 5
    assert pool.replaced == 1


def test_memory_past_the_budget_is_refused_and_its_process_replaced(pool):
    with pytest.raises(ParseFailedError, match="needs more than 256 MiB"):
        pool.run(allocate, 1024)
    assert pool.run(allocate, 64) == 64 * MIB
    assert pool.replaced == 1


def test_a_task_past_its_deadline_is_ended(pool):
    with pytest.raises(ParseFailedError, match="longer than 2 s"):
        pool.run(sleep, 60)
    assert pool.run(sleep, 0) == 0
    assert pool.replaced == 1


def test_a_slow_task_holds_one_process_not_every_upload(pool):
    slow = threading.Thread(target=pool.run, args=(sleep, 1.5))
    slow.start()
    time.sleep(0.3)
    started = time.monotonic()
    assert pool.run(sleep, 0) == 0
    assert time.monotonic() - started < 1.5
    slow.join()


def test_a_tasks_own_error_is_raised_as_it_is_and_keeps_the_process(pool):
    first = {pool.run(pid, None) for _ in range(4)}
    with pytest.raises(ValueError, match="no such column"):
        pool.run(refuse, "no such column")
    assert {pool.run(pid, None) for _ in range(4)} <= first
    assert pool.replaced == 0


def test_a_closed_pool_starts_again_when_asked():
    pool = ParsePool(1, 256 * MIB, timeout_s=5.0, warm="json")
    first = pool.run(pid, None)
    pool.close()
    assert pool.run(pid, None) != first
    pool.close()
