"""Processes that parse untrusted uploads, where a crash costs one request and nothing more.

A file built to hurt a parser (a compiled reader's recursion, an allocation its header
declares, a bomb that takes seconds to refuse) may kill the process that reads it, grow it
without end, or hold it. So uploads are parsed in a small pool of spawned processes: each has
an address-space limit (``RLIMIT_AS``, the budget above what its imports took) and each task a
deadline. A process that dies, runs out of memory or runs past its deadline is replaced, that
one request is told why (``ParseFailedError``), and the other processes go on serving every
other upload meanwhile.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from stimloop.runtime.child_processes import watch_parent

log = logging.getLogger("stimloop.parse_pool")
T = TypeVar("T")
A = TypeVar("A")


class ParseFailedError(Exception):
    """The process reading an upload could not finish it; the message says why, in a
    person's words (nothing was stored)."""


def _address_space() -> int | None:
    """This process's mapped address space in bytes (Linux), else None."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def limit_memory(budget: int) -> int | None:
    """Cap this process's address space at what it maps now plus ``budget`` bytes; the
    limit set, or None where the system has no such limit."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    mapped = _address_space()
    if mapped is None:
        return None
    limit = mapped + budget
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return limit


def _serve(conn: Connection, parent: int, budget: int, warm: str) -> None:
    """A pool process: import ``warm``, cap the memory, then run (function, argument) pairs
    and send back ("ok", value), ("error", exception) or ("memory", message) until the pipe
    closes. After a MemoryError it exits, so the next task gets a fresh process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the API, which stops us
    watch_parent(parent)
    importlib.import_module(warm)
    limit_memory(budget)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        fn, arg = task
        try:
            answer: tuple[str, Any] = ("ok", fn(arg))
        except MemoryError:
            conn.send(("memory", None))
            return
        except Exception as exc:
            answer = ("error", exc)
        try:
            conn.send(answer)
        except Exception as exc:  # an answer that cannot be pickled
            conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection


class ParsePool:
    """``size`` spawned processes that each run one task at a time; ``run`` blocks the
    calling thread until a process is free and has answered (call it from a thread pool)."""

    def __init__(self, size: int, memory_bytes: int, timeout_s: float, warm: str) -> None:
        self.size, self.memory_bytes, self.timeout_s, self.warm = (
            size,
            memory_bytes,
            timeout_s,
            warm,
        )
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._started = False
        self.replaced = 0  # processes replaced after a crash, a memory error or a deadline

    def start(self) -> None:
        """Spawn the processes (their imports run over there, in the background)."""
        with self._lock:
            if self._started:
                return
            self._started = True
            for _ in range(self.size):
                self._idle.put(self._spawn())

    def _spawn(self) -> _Worker:
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe()
        process = ctx.Process(
            target=_serve,
            args=(theirs, os.getpid(), self.memory_bytes, self.warm),
            daemon=True,
            name="stimloop-upload",
        )
        process.start()
        theirs.close()
        worker = _Worker(process, ours)
        self._workers.append(worker)
        return worker

    def _replace(self, worker: _Worker) -> _Worker:
        """End ``worker`` (killed if still running) and start another in its place."""
        with contextlib.suppress(OSError):
            worker.conn.close()
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=5)
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
            self.replaced += 1
            return self._spawn()

    def run(self, fn: Callable[[A], T], arg: A) -> T:
        """``fn(arg)`` in a pool process: its value, or its exception raised here, or
        ``ParseFailedError`` when the process died, ran out of memory or ran out of time (it
        is then replaced)."""
        self.start()
        worker = self._idle.get()
        back = worker
        try:
            status, value, failure = self._ask(worker, fn, arg)
            if failure is not None:
                back = self._replace(worker)
                raise ParseFailedError(failure)
        finally:
            with self._lock:
                if back in self._workers:  # not a process that close() ended meanwhile
                    self._idle.put(back)
        if status == "error":
            raise value
        return value

    def _ask(self, worker: _Worker, fn: Callable[[A], T], arg: A) -> tuple[str, Any, str | None]:
        """(status, value, why the process must be replaced, or None)."""
        try:
            worker.conn.send((fn, arg))
            if not worker.conn.poll(self.timeout_s):
                log.warning("an upload ran past %g s; its process is replaced", self.timeout_s)
                return (
                    "",
                    None,
                    (
                        f"reading it took longer than {self.timeout_s:g} s "
                        "(STIMLOOP_UPLOAD_TIMEOUT_S); nothing was stored"
                    ),
                )
            status, value = worker.conn.recv()
        except (EOFError, OSError):
            how = _exit_code(worker)
            log.warning("an upload's process ended (%s); it is replaced", how)
            return "", None, f"the process reading it ended ({how}); nothing was stored"
        if status == "memory":
            return (
                status,
                None,
                (
                    f"reading it needs more than {self.memory_bytes // 2**20} MiB "
                    "(STIMLOOP_UPLOAD_MEMORY_MIB); nothing was stored"
                ),
            )
        return status, value, None

    def close(self) -> None:
        """Stop every process (the pipes close; a process still busy is killed). A later
        ``run`` starts the pool again."""
        with self._lock:
            workers, self._workers = self._workers, []
            self._started = False
            while not self._idle.empty():
                self._idle.get_nowait()
        for worker in workers:
            with contextlib.suppress(OSError):
                worker.conn.close()
        for worker in workers:
            worker.process.join(timeout=2)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=2)


def _exit_code(worker: _Worker) -> str:
    """How a pool process ended, in words (its signal's name where a signal ended it)."""
    worker.process.join(timeout=2)
    code = worker.process.exitcode
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"
