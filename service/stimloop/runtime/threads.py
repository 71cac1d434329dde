"""BLAS and torch threads bounded to the cores this process may run on.

numpy's BLAS (OpenBLAS, MKL) and torch size their thread pools by the machine's CPU count, not
by the cores a process is allowed (its affinity: a container's CPU set, ``taskset``). On a
shared or busy box that oversubscribes the cores, and the threads of one pool wait on each
other: a symmetric eigendecomposition that takes a second ran for many minutes in a test with
the cores taken. BLAS reads its count once, when numpy loads, so the counts go into the
environment first (the CLI does it before any command imports numpy; child processes inherit
them); a count the user set is kept.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity on this platform: every core
        return max(1, os.cpu_count() or 1)


def bound_threads(environ: MutableMapping[str, str] = os.environ) -> int:
    """Set each pool's variable to the usable cores unless already set, and torch's pool when
    torch is already loaded; returns the number of threads a pool gets."""
    cores = usable_cores()
    for name in VARIABLES:
        environ.setdefault(name, str(cores))
    threads = max(
        1, int(environ["OMP_NUM_THREADS"]) if environ["OMP_NUM_THREADS"].isdigit() else cores
    )
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() > threads:
        torch.set_num_threads(threads)
    return threads
