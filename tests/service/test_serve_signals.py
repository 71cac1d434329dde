"""`stimloop serve` owns its children: SIGTERM, SIGHUP and SIGKILL of serve leave no worker and
no Redis behind, a dead worker is started again, and a second serve on the same models store
is refused while the first holds its Redis folder. Real processes, a private Redis."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.processes import free_port, user_env

pytestmark = pytest.mark.processes

STIMLOOP = str(Path(sys.executable).with_name("stimloop"))


def start_serve(cwd: Path, workers: int = 1) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        [STIMLOOP, "serve", "--workers", str(workers), "--port", str(port)],
        cwd=cwd,
        env={**user_env(), "OMP_NUM_THREADS": "1"},
        stdout=open(cwd / f"serve-{port}.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, (cwd / f"serve-{port}.log").read_text()[-3000:]
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).json()
            if health["workers"] == workers:
                return proc, port
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    pytest.fail((cwd / f"serve-{port}.log").read_text()[-3000:])


def cmd(p: psutil.Process) -> str:
    """The command line, or "" for a process that is exiting (a zombie until reaped)."""
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def children(proc: subprocess.Popen) -> list[psutil.Process]:
    kids = psutil.Process(proc.pid).children(recursive=True)
    names = " ".join(cmd(k) for k in kids)
    assert "redis" in names and "worker" in names, names
    return kids


def running(p: psutil.Process) -> bool:
    """Still running: not gone, and not a zombie. A child that exited after serve was killed
    is reparented to PID 1 and stays a zombie until PID 1 reaps it, which in a container may
    be late or never; it holds no port, file or memory."""
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gone_within(procs: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    deadline = time.monotonic() + seconds
    alive = [p for p in procs if running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if running(p)]
    for p in alive:  # do not leave them to the next test
        p.kill()
    return alive


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_serve_stopped_by_a_signal_leaves_no_process_behind(tmp_path, signum):
    proc, _ = start_serve(tmp_path)
    kids = children(proc)
    proc.send_signal(signum)
    proc.wait(timeout=30)
    alive = gone_within(kids, 10)
    assert not alive, [cmd(p) for p in alive]
    if signum != signal.SIGKILL:
        assert proc.returncode == 0, proc.returncode
    # the store can be served again at once: the folder lock went with them
    again, _ = start_serve(tmp_path, workers=0)
    again.send_signal(signal.SIGTERM)
    again.wait(timeout=30)


def test_a_dead_worker_is_replaced_and_a_second_serve_is_refused(tmp_path):
    proc, port = start_serve(tmp_path)
    try:
        worker = next(k for k in children(proc) if "worker" in cmd(k))
        worker.kill()
        deadline = time.monotonic() + 60
        while True:
            kids = [
                k for k in psutil.Process(proc.pid).children(recursive=True) if "worker" in cmd(k)
            ]
            health = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).json()
            if kids and kids[0].pid != worker.pid and health["workers"] == 1:
                break
            assert time.monotonic() < deadline, (kids, health)
            time.sleep(0.3)

        second = subprocess.run(
            [STIMLOOP, "serve", "--workers", "0", "--port", str(free_port())],
            cwd=tmp_path,
            env=user_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode != 0
        assert f"in use by process {proc.pid}" in second.stdout + second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
