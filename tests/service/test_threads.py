"""Thread pools bounded to the process's cores (``runtime.threads``)."""

from __future__ import annotations

import os
import subprocess
import sys

from stimloop.runtime.threads import VARIABLES, bound_threads, usable_cores


def test_the_pools_get_the_cores_of_the_affinity_and_a_users_setting_is_kept():
    environ = {"MKL_NUM_THREADS": "3"}
    assert bound_threads(environ) == usable_cores()
    assert environ["OMP_NUM_THREADS"] == environ["OPENBLAS_NUM_THREADS"] == str(usable_cores())
    assert environ["MKL_NUM_THREADS"] == "3"


def test_a_process_on_one_core_runs_blas_and_torch_with_one_thread():
    """Pinned to one core (as a container's CPU set would), the CLI's first act leaves numpy's
    BLAS and torch with one thread each, whatever the machine's CPU count."""
    code = (
        "import os, sys; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))});"
        "import stimloop.cli; import numpy, torch;"
        "print(torch.get_num_threads(), os.environ['OPENBLAS_NUM_THREADS'])"
    )
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1"]
