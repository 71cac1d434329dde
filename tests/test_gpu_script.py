"""``benchmarks/gpu.sh --cpu-smoke``: the GPU box's measurement script runs, end to end."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.paths import REPO

pytestmark = pytest.mark.processes


def test_gpu_script_smoke_run_appends_every_part(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# earlier results\n")
    run = subprocess.run(
        ["bash", str(REPO / "benchmarks/gpu.sh"), "--cpu-smoke", "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    text = results.read_text()
    assert text.startswith("# earlier results\n")  # appended, not replaced
    for part in ("extraction", "fit", "selection", "saliency", "turnaround"):
        assert f"**{part}**" in text and f"({part}:" in text, part
    assert "CPU smoke run" in text and "vs baseline" in text
    assert "graph vs eager: same best epoch in 100% of channels" in text
    assert "eq. 7 check" in text
