"""Real processes as a user starts them: their environment, a free port, the commands."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path


def user_env() -> dict[str, str]:
    """The environment without any STIMLOOP_ setting a test run may have made."""
    return {k: v for k, v in os.environ.items() if not k.startswith("STIMLOOP_")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STIMLOOP = str(Path(sys.executable).with_name("stimloop"))
