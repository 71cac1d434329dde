"""The README's rig section, run verbatim with one rig token against a real `stimloop serve`
in a fresh folder (default, relative paths): each step's commands as the README writes them,
the recordings between the steps made by synthetic channels from exactly the images each
list names, from set registration to the phase-three analysis and the report."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.test_fresh_clone import user_env

pytestmark = pytest.mark.processes
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def test_the_readme_rig_section_runs_as_written_with_one_rig_token(tmp_path, neurons):
    sy, maps = neurons
    rig_dir = tmp_path / "rig"
    rig_dir.mkdir()
    with served(tmp_path) as (url, token, server_dir, env):
        images = stimulus_images(server_dir)
        cells, everything = synthetic_cells(sy, maps, images)
        (rig_dir / "session.toml").write_text(
            "[fit]\nsplit = [40, 10, 10]\nepochs = 40\nlr = 0.001\n"
            "[selection]\nstability_images = 10\nrepeats = 2\n"
        )
        rig = Rig(
            rig_dir,
            {
                **env,
                "STIMLOOP_URL": url,
                "STIMLOOP_TOKEN": token,
                "STIMLOOP_BACKBONE": "resnet50_random",
            },
        )
        steps = rig_steps()
        assert list(steps) == ["0", "1", "2", "3", "4", "5", "6"], list(steps)

        rig.run(steps["0"])
        session = rig.run(steps["1"], keep="SESSION")
        assert re.fullmatch(r"[0-9a-f]{12}", session), session
        bodies = list(images["bodies"])
        record(rig_dir, sy, maps, bodies, [everything[b] for b in bodies], cells, "phase1.csv")
        rig.run(steps["2"] + steps["3"])
        table = (rig_dir / "phase2_list.csv").read_text().splitlines()
        listed = [row["stimulus"] for row in csv.DictReader(table)]
        shown = sorted(set(listed))
        record(rig_dir, sy, maps, shown, [everything[s] for s in shown], cells, "phase2.csv")
        said = " ".join(rig.run(steps["4"] + steps["5"]).split())  # the terminal wraps lines
        assert "model randomisation" in said and "data randomisation" in said, said
        assert (rig_dir / "ch03.png").read_bytes()[:4] == b"\x89PNG"
        assert (rig_dir / "ch03.sanity.png").read_bytes()[:4] == b"\x89PNG"  # the checks' strip
        stored = server_dir / "models_store" / "sessions" / session / "saliency" / "sanity"
        checks = [__import__("json").loads(f.read_text()) for f in stored.glob("*.json")]
        assert [c["max_features"] for c in checks] == [8]  # STIMLOOP_SANITY_CPU_FEATURES
        metas = [__import__("json").loads(f.read_text()) for f in stored.parent.glob("*.json")]
        assert [m["coverage_requested"] for m in metas] == [0.5]  # ..._SALIENCY_CPU_COVERAGE
        archive = zipfile.ZipFile(rig_dir / "phase3_stimuli.zip")
        manifest = __import__("json").loads(archive.read("manifest.json"))
        fragments = [Image.open(io.BytesIO(archive.read(m["file"]))) for m in manifest]
        record(rig_dir, sy, maps, [m["id"] for m in manifest], fragments, cells, "phase3.csv")
        rig.run(steps["6"])
        header = (rig_dir / "phase3_analysis.csv").read_text().splitlines()[0]
        assert header.startswith("channel,retained_salient")
        assert "r_body" in (rig_dir / "analysis.csv").read_text().splitlines()[0]
        assert "Phase three" in (rig_dir / "session.html").read_text()
