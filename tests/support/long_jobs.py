"""A job that runs as a long background job does (a sanity check over many channels):
``seconds`` of work in steps of ``step`` seconds, reporting its progress after each, which is
where a running job gives way to a more urgent one."""

from __future__ import annotations

import time

from rq import get_current_job


def steps(seconds: float, step: float = 0.05) -> dict[str, float]:
    from stimloop.worker.jobs import _reporter

    report = _reporter(get_current_job())
    began = time.monotonic()
    done = 0
    while time.monotonic() - began < seconds:
        time.sleep(step)
        done += 1
        report("checking", (time.monotonic() - began) / seconds, f"step {done}")
    return {"steps": done}
