"""The rig as the README's rig section runs it: a served deployment, its rig token and
commands, and synthetic cells recorded to files."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from tests.support.paths import BIN, REPO
from tests.support.processes import free_port, user_env

CHANNELS = [f"ch{i:02d}" for i in range(1, 17)]


def rig_steps() -> dict[str, str]:
    """The README's rig block, cut at its numbered comments: step number -> its lines."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Between the phases, at the rig") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    steps: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        found = re.match(r"# (\d)\. ", line)
        if found:
            current = found.group(1)
        steps[current] = steps.get(current, "") + line + "\n"
    return steps


class Rig:
    """The rig PC's shell: the README's commands, run with bash in the session folder."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env = folder, env

    def run(self, commands: str, keep: str | None = None) -> str:
        """Run ``commands`` (as written); with ``keep``, that shell variable's value after."""
        script = "set -euo pipefail\n" + commands + (f'\necho "KEEP=${keep}"\n' if keep else "")
        result = subprocess.run(
            ["bash", "-c", script],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, (commands, result.stdout[-3000:], result.stderr[-3000:])
        if keep:
            value = result.stdout.strip().splitlines()[-1].removeprefix("KEEP=")
            self.env[keep] = value
            return value
        return result.stdout


def record(folder: Path, sy, maps, ids: list[str], images: list[Image.Image], cells, name: str):
    """A recording of exactly ``ids`` (8 repeats), written as the README's trial CSV."""
    rates = sy.true_responses(cells, maps(images))
    _, cols = sy.simulate_counts(rates, ids, CHANNELS, seed=len(name))
    with open(folder / name, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(list(cols))
        writer.writerows(zip(*(cols[k].tolist() for k in cols)))


@contextlib.contextmanager
def served(tmp_path: Path) -> Iterator[tuple[str, str, Path, dict[str, str]]]:
    """The README's server commands in a fresh folder with its default paths: a rig token,
    procedural stimuli (60 bodies, 12 objects, 8 control bodies), `stimloop serve` with one
    worker. Yields the address, the token, the server's folder and the user's environment."""
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    env = {**user_env(), "PATH": f"{BIN}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    made = subprocess.run(
        ["stimloop", "token", "create", "--role", "rig"],
        cwd=server_dir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    token = made.stdout.strip().splitlines()[-1]
    subprocess.run(
        [
            *("stimloop", "stimuli", "generate", "--out", "stimuli", "--bodies", "60"),
            *("--objects", "12", "--control-bodies", "8", "--seed", "3"),
        ],
        cwd=server_dir,
        env=env,
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    serve = subprocess.Popen(
        ["stimloop", "serve", "--workers", "1", "--port", str(port)],
        cwd=server_dir,
        # on this CPU the maps cover half of s (95% by default) and the sanity checks map 8
        # features (32): the README's commands at a fraction of their cost
        env={
            **env,
            "STIMLOOP_DEVICE": "cpu",
            "STIMLOOP_JOB_STALE_S": "120",
            "STIMLOOP_SALIENCY_CPU_COVERAGE": "0.5",
            "STIMLOOP_SANITY_CPU_FEATURES": "8",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/v1/health", timeout=2).json()["workers"] >= 1:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        yield url, token, server_dir, env
    finally:
        serve.terminate()
        serve.wait(timeout=60)
        log.close()
        shutil.rmtree(server_dir / "models_store" / "redis", ignore_errors=True)


def stimulus_images(server_dir: Path) -> dict[str, dict[str, Image.Image]]:
    stimuli = server_dir / "stimuli"
    return {
        folder: {p.stem: Image.open(p) for p in sorted((stimuli / folder).glob("*.png"))}
        for folder in ("bodies", "objects", "controls")
    }


def synthetic_cells(sy, maps, images: dict) -> tuple[list, dict[str, Image.Image]]:
    """Body-selective synthetic channels (``CHANNELS``) over the served stimuli (bodies and
    control bodies preferred, objects not), and every served image by id."""
    cells = sy.make_neurons(
        np.concatenate(
            [maps(list(images["bodies"].values())), maps(list(images["controls"].values()))]
        ),
        maps(list(images["objects"].values())),
        CHANNELS,
        seed=4,
        config=sy.SyntheticConfig(peak=120.0),
    )
    return cells, {k: v for folder in images.values() for k, v in folder.items()}
