"""Child processes that die with their parent, even when the parent is killed with SIGKILL.

On Linux a child asks the kernel for a signal when its parent dies (``PR_SET_PDEATHSIG``);
``prctl`` is looked up here, in the parent, because a child forked from a threaded process
must not load libraries itself. A child that finds its parent already gone exits at once.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


_PRCTL = _load_prctl()


def tie_to_parent(parent: int, signum: int = signal.SIGTERM) -> None:
    """In a child: get ``signum`` when ``parent`` dies; exit now if it already has."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:
        os._exit(1)


def die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child dies with ``parent``."""
    return lambda: tie_to_parent(parent)


def watch_parent(
    parent: int, poll_s: float = 1.0, on_gone: Callable[[], None] | None = None
) -> None:
    """In a child: once ``parent`` (the process) is gone, call ``on_gone`` (default: exit)
    within ``poll_s``. For other systems than Linux, and for children started from threads
    that may end before the parent does (the kernel's parent-death signal follows the
    creating *thread*; this watches the process)."""
    import threading
    import time

    def gone() -> None:
        (on_gone or (lambda: os._exit(1)))()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        gone()

    if os.getppid() != parent:
        gone()
        return
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
