"""An NWB export checked as DANDI and a reader would: the inspector's dandi configuration,
and the README's function recomputing the analysis from the file alone."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.support.paths import REPO


def dandi_problems(path: Path) -> list[tuple[str, str, str]]:
    """What ``nwbinspector --config dandi`` reports as a best-practice violation or worse:
    (importance, check, message)."""
    from nwbinspector import Importance, inspect_nwbfile, load_config

    found = inspect_nwbfile(nwbfile_path=str(path), config=load_config("dandi"))
    floor = Importance.BEST_PRACTICE_VIOLATION.value
    return [
        (m.importance.name, m.check_function_name, m.message)
        for m in found
        if m.importance.value >= floor
    ]


def readme_recompute():
    """The README's ``recompute`` function, run as written (its code block)."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### A session on the record (NWB)") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    return scope["recompute"]


def assert_recomputes(path: Path, stored: dict) -> None:
    """The README's function on the file gives the stored analysis's stability r, selectivity
    p and prediction r of every channel."""
    again = readme_recompute()(str(path))
    compared = 0
    for channel in stored["channels"]:
        mine = again[channel["channel"]]
        if _missing(channel["stability"]["r"]):  # a silent channel: no r to compute
            assert np.isnan(mine["stability_r"])
        else:
            assert mine["stability_r"] == pytest.approx(channel["stability"]["r"], abs=1e-9)
        for test in channel["selectivity"]:
            expected = test["p_two_sided"]
            got = mine[f"selectivity_p_{test['other']}"]
            assert np.isnan(got) if expected is None else got == pytest.approx(expected)
        for category, gen in channel["generalisation"].items():
            assert mine[f"prediction_r_{category}"] == pytest.approx(gen["r"], abs=1e-9)
            compared += 1
    assert compared > 0  # some channel was fitted and compared


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))
