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

from tests.support.paths import REPO


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    found = shutil.which("docker-compose")
    return [found] if found else None


def compose_config(tmp_path: Path, env: dict[str, str], gpus: list[str] | None = None) -> dict:
    """``docker compose config`` of the repository's files in a fresh folder, with .env made
    from .env.example and ``env``'s lines; with ``gpus``, the file docker/gpu-workers.sh
    writes for them added. Returns the rendered configuration."""
    import yaml

    command = compose_command()
    if command is None:
        if os.environ.get("CI"):
            pytest.fail("no docker compose client in CI; .ci/run should have installed one")
        pytest.skip("no docker compose client on this machine")
    shutil.copy(REPO / "docker-compose.yml", tmp_path)
    shutil.copytree(REPO / "docker", tmp_path / "docker")
    lines = (REPO / ".env.example").read_text().splitlines()
    lines = [line for line in lines if line.split("=")[0] not in env]
    (tmp_path / ".env").write_text("\n".join([*lines, *(f"{k}={v}" for k, v in env.items())]))
    files = ["-f", "docker-compose.yml"]
    if gpus is not None:
        written = subprocess.run(
            ["sh", "docker/gpu-workers.sh", *gpus], cwd=tmp_path, capture_output=True, text=True
        )
        assert written.returncode == 0, written.stderr
        (tmp_path / "docker-compose.gpus.yml").write_text(written.stdout)
        files += ["-f", "docker-compose.gpus.yml"]
    profile = env.get("COMPOSE_PROFILES", "gpu")
    result = subprocess.run(
        [*command, *files, "--profile", profile, "config"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "STIMLOOP_"))},
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    # Compose v1 renders every service; v2 only those of the active profile: keep those
    config["services"] = {
        name: service
        for name, service in config["services"].items()
        if not service.get("profiles") or profile in service["profiles"]
    }
    return config


def gpu_ids(service: dict) -> list[str]:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    return [i for d in devices.get("devices", []) for i in d.get("device_ids", [])]


def test_the_gpu_variant_pins_one_worker_to_gpu_0(tmp_path):
    config = compose_config(tmp_path, {})
    services = config["services"]
    assert set(services) == {"redis", "api", "worker-0"}
    assert "--appendonly" in services["redis"]["command"]
    assert services["api"]["command"] == ["stimloop", "serve", "--workers", "0"]
    assert services["worker-0"]["command"] == ["stimloop", "worker"]
    assert gpu_ids(services["worker-0"]) == ["0"] and gpu_ids(services["api"]) == []
    assert services["worker-0"]["environment"]["STIMLOOP_DEVICE"] == "cuda"
    assert services["api"]["user"] == "1000:1000" == services["worker-0"]["user"]


def test_two_gpus_give_two_workers_on_two_device_ids(tmp_path):
    config = compose_config(tmp_path, {"COMPOSE_PROFILES": "gpus"}, gpus=["0", "1"])
    services = config["services"]
    assert set(services) == {"redis", "api", "worker-gpu0", "worker-gpu1"}
    assert gpu_ids(services["worker-gpu0"]) == ["0"]
    assert gpu_ids(services["worker-gpu1"]) == ["1"]
    for name in ("worker-gpu0", "worker-gpu1"):
        assert services[name]["environment"]["STIMLOOP_REDIS_URL"] == "redis://redis:6379/0"
        assert services[name]["command"] == ["stimloop", "worker"]


def test_the_cpu_variant_needs_no_gpu_and_runs_as_the_folders_owner(tmp_path):
    config = compose_config(
        tmp_path, {"COMPOSE_PROFILES": "cpu", "STIMLOOP_UID": "1234", "STIMLOOP_GID": "99"}
    )
    services = config["services"]
    assert set(services) == {"redis", "api-cpu", "worker-cpu"}
    assert all(gpu_ids(s) == [] for s in services.values())
    assert services["api-cpu"]["build"]["dockerfile"].endswith("Dockerfile.cpu")
    assert services["worker-cpu"]["environment"]["STIMLOOP_DEVICE"] == "cpu"
    assert services["worker-cpu"]["user"] == "1234:99"


def test_the_worker_file_refuses_odd_gpu_lists(tmp_path):
    for args, words in (([], "usage"), (["0", "0"], "twice"), (["a"], "not a GPU index")):
        result = subprocess.run(
            ["sh", str(REPO / "docker/gpu-workers.sh"), *args], capture_output=True, text=True
        )
        assert result.returncode == 2 and words in result.stderr, (args, result.stderr)


def test_the_build_context_leaves_out_the_store_and_the_environment():
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    for entry in (".venv", "models_store", "stimuli", "demo_output", ".git", ".env"):
        assert entry in ignored, entry


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


def test_entrypoint_refuses_a_store_it_cannot_write_and_says_how_to_fix_it(tmp_path):
    """A store the container's user cannot write (here: below a file, which even root cannot
    make a folder in): exit 78 with the owner, the user, and the two fixes."""
    (tmp_path / "file").write_text("")
    result = subprocess.run(
        ["sh", str(REPO / "docker/entrypoint.sh"), "echo", "ran"],
        env={**os.environ, "STIMLOOP_MODELS_STORE": str(tmp_path / "file" / "store")},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 78 and result.stdout == ""
    assert "cannot be written" in result.stderr and "STIMLOOP_UID" in result.stderr
    assert "chown" in result.stderr
