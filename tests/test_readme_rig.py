"""The README's rig section, run verbatim with one rig token against a real `stimloop serve`
in a fresh folder (default, relative paths): each step's commands as the README writes them,
the recordings between the steps made by synthetic channels from exactly the images each
list names, from set registration to the phase-three analysis and the report."""

from __future__ import annotations

import csv
import io
import re
import zipfile

import pytest
from PIL import Image

from tests.support.rig import (
    Rig,
    record,
    rig_steps,
    served,
    stimulus_images,
    synthetic_cells,
)

pytestmark = pytest.mark.processes


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
