"""Deployment files: the compose file validates, the Dockerfiles lint clean, the entry point
works; the images' commands themselves run in tests/service/test_processes.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    found = shutil.which("docker-compose")
    return [found] if found else None


def test_compose_file_validates(tmp_path):
    command = compose_command()
    if command is None:
        if os.environ.get("CI"):
            pytest.fail("no docker compose client in CI; .ci/run should have installed one")
        pytest.skip("no docker compose client on this machine")
    shutil.copy(REPO / "docker-compose.yml", tmp_path)
    shutil.copytree(REPO / "docker", tmp_path / "docker")
    shutil.copy(REPO / ".env.example", tmp_path / ".env")
    result = subprocess.run([*command, "config"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    config = result.stdout
    assert "--appendonly" in config and "capabilities:" in config and "gpu" in config
    assert "- serve\n    - --workers\n    - '0'" in config
    assert "- stimloop\n    - worker" in config


def test_dockerfiles_lint_clean():
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run(
        [str(hadolint), str(REPO / "docker/Dockerfile"), str(REPO / "docker/Dockerfile.cpu")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_images_download_no_weights():
    """The only addresses the images reach are PyTorch's wheel index (at build time) and their
    own health endpoint; weights come from the mounted models store."""
    for name in ("Dockerfile", "Dockerfile.cpu", "entrypoint.sh"):
        text = (REPO / "docker" / name).read_text()
        for url in re.findall(r"https?://[^\s\"]+", text):
            assert url.startswith(("https://download.pytorch.org/whl/", "http://127.0.0.1")), url
        assert "wget" not in text
    env = (REPO / ".env.example").read_text().upper()
    assert "TOKEN=" not in env and "PASSWORD" not in env


def test_entrypoint_prepares_the_store_and_runs_the_command(tmp_path):
    env = {
        **os.environ,
        "STIMLOOP_MODELS_STORE": str(tmp_path / "store"),
    }
    result = subprocess.run(
        ["sh", str(REPO / "docker/entrypoint.sh"), "echo", "ran"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ran"
    assert (tmp_path / "store/weights").is_dir()
    assert "no weight files" in result.stderr
