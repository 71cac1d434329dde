"""The README's commands as a new user types them: relative paths, default settings, a fresh
models store, from a working directory that is not the repository."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.support.nwb_record import assert_recomputes, dandi_problems
from tests.support.paths import BIN, REPO
from tests.support.processes import free_port, user_env

pytestmark = pytest.mark.processes


def serve_health(cwd: Path) -> dict:
    """``stimloop serve --workers 0`` in ``cwd`` with default paths; its /v1/health, then stop."""
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "stimloop"), "serve", "--workers", "0", "--port", str(port)],
        cwd=cwd,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"serve exited {proc.returncode}: {proc.stdout.read()[-2000:]}")
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2)
                return {"code": r.status_code, **r.json()}
            except httpx.TransportError:
                time.sleep(0.3)
        pytest.fail("serve did not answer /v1/health within 60 s")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_serve_from_a_fresh_directory_uses_the_packaged_registry(tmp_path):
    health = serve_health(tmp_path)
    assert health["code"] == 200 and health["redis"], health
    assert {b["name"] for b in health["backbones"]} >= {"resnet50_random"}
    assert (tmp_path / "models_store" / "backbones.toml").is_file()  # copied in
    assert (tmp_path / "models_store" / "redis" / "redis.log").is_file()  # relative --dir fixed
    # no worker was started: degraded, and it says what to do
    assert health["status"] == "degraded"
    assert any("stimloop worker" in p for p in health["problems"])


def test_a_broken_registry_is_a_degraded_health_answer(tmp_path):
    (tmp_path / "models_store").mkdir()
    (tmp_path / "models_store" / "backbones.toml").write_text("[backbones.x\n")
    health = serve_health(tmp_path)
    assert health["code"] == 200 and health["status"] == "degraded"
    assert any("backbones.toml" in p and "not valid TOML" in p for p in health["problems"])


@pytest.mark.slow
def test_quick_demo_with_a_relative_output_folder(tmp_path):
    """``stimloop demo --quick --out ./demo`` from an unrelated directory (about 3 minutes)."""
    result = subprocess.run(
        [str(BIN / "stimloop"), "demo", "--quick", "--out", "./demo"],
        cwd=tmp_path,
        env={**user_env(), "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "demo" / "report.html").is_file()
    assert "resnet50_random" in result.stdout
    # all three phases: the phase-three list and its section in the report
    assert (tmp_path / "demo" / "phase_three_list.csv").read_text().startswith("order,stimulus")
    assert "Phase three" in (tmp_path / "demo" / "report.html").read_text()
    # the best channel's maps with their sanity checks, in the output and the report
    assert re.search(
        r"sanity checks of ch\d+'s maps .*: model -?[0-9.]+ \((passed|FAILED, (split|failed))\)",
        " ".join(result.stdout.split()),
    )
    assert "Sanity checks of the maps" in (tmp_path / "demo" / "report.html").read_text()
    # the session on the record: DANDI's checks pass, and the file alone gives its analysis
    record = tmp_path / "demo" / "session.nwb"
    assert dandi_problems(record) == []
    assert "the NWB export says" not in result.stdout  # every phase on the timeline
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(record), "r") as io_:
        nwb = io_.read()
        phases = ("phase1", "phase2", "phase3")
        epochs = nwb.epochs.to_dataframe().sort_values("start_time")
        assert [t for tags in epochs["tags"] for t in tags] == list(phases)
        assert (epochs["stop_time"].to_numpy()[:-1] < epochs["start_time"].to_numpy()[1:]).all()
        assert all(f"{phase}_presentations" in nwb.stimulus for phase in phases)
        channels = set(nwb.processing["stimloop"]["inclusion"]["channel"].data[:])
        assert set(nwb.units["channel"].data[:]) == channels and nwb.units.resolution > 0
    (stored,) = (tmp_path / "demo" / "models_store").glob("sessions/*/analysis.json")
    assert_recomputes(record, json.loads(stored.read_text()))


def test_the_wheel_installs_the_two_packages_by_their_folder_names(tmp_path):
    """``stimloop`` and ``stimloop_rig``, no top-level ``service`` or ``client``; the default
    registry is inside."""
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*pip, "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("stimloop-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    dist_info = next(t for t in tops if t.endswith(".dist-info"))
    assert tops == {"stimloop", "stimloop_contract", "stimloop_rig", dist_info}, tops
    assert "stimloop/defaults/backbones.toml" in names
    assert "stimloop_rig/rig_client.py" in names and "stimloop/science/readout.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "stimloop.cli:app" in text and "stimloop_rig.cli:main" in text
