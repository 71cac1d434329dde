"""Real processes as a user starts them: their environment, a free port, the commands."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


def user_env() -> dict[str, str]:
    """The environment without any STIMLOOP_ setting a test run may have made."""
    return {k: v for k, v in os.environ.items() if not k.startswith("STIMLOOP_")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STIMLOOP = str(Path(sys.executable).with_name("stimloop"))


@contextlib.contextmanager
def cores_busy(count: int | None = None) -> Iterator[None]:
    """``count`` (default: every core) busy loops at normal priority for the block, as a lab's
    box often runs something else beside the service."""
    loops = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(count or os.cpu_count() or 2)
    ]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
