"""The MATLAB client, run by GNU Octave against a real `stimloop serve`: the README's MATLAB
block verbatim (step by step, the workspace kept between the steps), phase one and two as
MAT-files that Octave itself writes (v7) from the synthetic channels' recordings, the results
checked here; and a refused upload raising a MATLAB error that carries the server's detail.
A MAT-file upload stores the same trials as the same table in CSV."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tests.support.rig import (
    CHANNELS,
    Rig,
    record,
    rig_steps,
    served,
    stimulus_images,
    synthetic_cells,
)

pytestmark = pytest.mark.processes


def octave() -> str:
    found = shutil.which("octave") or shutil.which("octave-cli")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("no GNU Octave in CI; .ci/run should have installed it")
        pytest.skip("GNU Octave is not installed on this machine (apt-get install octave)")
    return found


def matlab_steps() -> dict[str, str]:
    """The README's MATLAB block, cut at its numbered comments (the lines before the first
    number belong to every step's start)."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### From MATLAB or GNU Octave") :]
    block = re.search(r"```matlab\n(.*?)```", section, re.S).group(1)
    steps: dict[str, str] = {"": ""}
    current = ""
    for line in block.splitlines():
        found = re.match(r"% (\d)\. ", line)
        if found:
            current = found.group(1)
        steps[current] = steps.get(current, "") + line + "\n"
    return steps


def run_octave(folder: Path, script: str, env: dict[str, str]) -> str:
    """``script`` in Octave in ``folder``; its output, or a failure showing it."""
    path = folder / "step.m"
    path.write_text(script)
    result = subprocess.run(
        [octave(), "--no-gui", "--quiet", "--norc", "--no-window-system", str(path)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        pytest.fail(
            f"Octave failed:\n{result.stderr[-3000:]}\n--- output:\n{result.stdout[-3000:]}"
        )
    return result.stdout


CSV_TO_MAT = """
fid = fopen('{csv}');
fgetl(fid);
c = textscan(fid, '%s %s %f %f %f', 'Delimiter', ',');
fclose(fid);
stimulus = c{{1}}; channel = c{{2}}; repeat = c{{3}};
baseline_count = c{{4}}; response_count = c{{5}};
save('-v7', '{mat}', 'stimulus', 'channel', 'repeat', 'baseline_count', 'response_count');
"""


@pytest.fixture(scope="module")
def rig(tmp_path_factory, neurons):
    """A served session's world: the sets registered (the rig README's step 0), the rig's
    folder with the package, the synthetic channels and what they see."""
    sy, maps = neurons
    tmp_path = tmp_path_factory.mktemp("matlab")
    folder = tmp_path / "rig"
    folder.mkdir()
    (folder / "client").mkdir()
    (folder / "client" / "matlab").symlink_to(REPO / "client" / "matlab")
    with served(tmp_path) as (url, token, server_dir, env):
        env = {**env, "STIMLOOP_URL": url, "STIMLOOP_TOKEN": token}
        env["STIMLOOP_BACKBONE"] = "resnet50_random"
        Rig(folder, env).run(rig_steps()["0"])
        images = stimulus_images(server_dir)
        cells, everything = synthetic_cells(sy, maps, images)

        def recording(ids: list[str], name: str) -> None:
            record(folder, sy, maps, ids, [everything[i] for i in ids], cells, name)

        yield (
            {"folder": folder, "env": env, "url": url, "bodies": list(images["bodies"])},
            (recording),
        )


def test_the_readme_matlab_block_runs_in_octave(rig):
    world, recording = rig
    folder, env = world["folder"], world["env"]
    (folder / "session.json").write_text(
        json.dumps(
            {"fit": {"split": [40, 10, 10], "epochs": 40, "lr": 0.001},
             "selection": {"stability_images": 10, "repeats": 2}}
        )
    )  # fmt: skip
    steps = matlab_steps()
    keep = "save('-v7', 'state.mat', 's', 'channels');\n"
    resume = "load('state.mat');\n" + steps[""].splitlines()[0] + "\n"  # the package's path

    recording(world["bodies"], "phase1.csv")
    run_octave(folder, CSV_TO_MAT.format(csv="phase1.csv", mat="phase1.mat"), env)
    said = run_octave(folder, steps[""] + steps["1"] + keep, env)
    found = re.search(r"session ([0-9a-f]{12}) created \(16 channels\)", said)
    assert found, said
    assert "phase 1 uploaded" in said
    from stimloop_contract.service_client import ServiceClient

    made = ServiceClient(env["STIMLOOP_URL"], env["STIMLOOP_TOKEN"]).session(found.group(1))
    assert made.config.label == "M1 day 12"  # the README's name-value pairs reached it
    assert made.config.subject and made.config.subject.species == "Macaca mulatta"

    said = run_octave(
        folder,
        resume
        + steps["2"]
        + "fid = fopen('sequence.txt', 'w'); fprintf(fid, '%s\\n', sequence.stimulus{:});"
        + " fclose(fid);\nfprintf('listed %d\\n', numel(list.stimulus));\n"
        + "fprintf('stability %d\\n', sum(strcmp(list.role, 'stability')));\n",
        env,
    )
    assert "phase-two list of" in said and "stimloop: job" in said  # progress was printed
    sequence = (folder / "sequence.txt").read_text().split()
    shown = sorted(set(sequence))
    # the README's call returns every image to show, the stability images among them
    assert f"listed {len(shown)}" in said and "stability 10" in said, said
    assert len(sequence) == 2 * len(shown)  # two repeats of each listed image
    recording(shown, "phase2.csv")
    run_octave(folder, CSV_TO_MAT.format(csv="phase2.csv", mat="phase2.mat"), env)
    run_octave(
        folder,
        resume
        + steps["3"]
        + "fid = fopen('analysis.json', 'w'); fputs(fid, jsonencode(a)); fclose(fid);\n",
        env,
    )
    analysis = json.loads((folder / "analysis.json").read_text())
    assert [c["channel"] for c in analysis["channels"]] == CHANNELS
    assert analysis["categories"]["preferred"] == "body"
    stable = analysis["summary"]["stable"]
    assert stable["of"] == 16 and stable["passed"] >= 8, stable

    # other trials for phase one again: 409, in MATLAB's words
    said = run_octave(
        folder,
        resume
        + "t = struct('stimulus', {{'body_0000', 'body_0001'}}, "
        + "'channel', {{'ch01', 'ch01'}}, 'rate', [1 2]);\n"
        + "try\n  stimloop.uploadPhase(s, 1, t);\ncatch err\n"
        + "  printf('MESSAGE=%s\\n', err.message);\nend\n",
        env,
    )
    assert "pass 'replace', true to stimloop.uploadPhase" in said and "?replace" not in said

    # a fitted channel's maps and the report, from Octave
    fitted = next(c["channel"] for c in analysis["channels"] if c["generalisation_preferred"])
    said = run_octave(
        folder,
        resume
        + f"meta = stimloop.saliency(s, '{fitted}', 'maps.png', 'coverage', 0.05);\n"
        + "stimloop.report(s, 'session.html');\nprintf('S=%.4f\\n', meta.s);\n",
        env,
    )
    assert (folder / "maps.png").read_bytes()[:4] == b"\x89PNG" and "S=" in said
    assert "How to read this report" in (folder / "session.html").read_text()

    # the MAT-file Octave wrote stores the same trials as the same table in CSV
    from stimloop.sessions.uploads import digest
    from stimloop_rig.readers import read_trials

    state = json.loads(
        run_octave(folder, "load('state.mat'); disp(jsonencode(s));\n", env)
        .strip()
        .splitlines()[-1]
    )
    session = (
        __import__("httpx")
        .get(
            f"{world['url']}/v1/sessions/{state['id']}",
            headers={"Authorization": f"Bearer {env['STIMLOOP_TOKEN']}"},
        )
        .json()
    )
    for phase in ("phase1", "phase2"):
        assert session["uploads"][phase]["sha256"] == digest(read_trials(folder / f"{phase}.csv"))
        assert digest(read_trials(folder / f"{phase}.mat")) == session["uploads"][phase]["sha256"]


REFUSED = """
addpath('client/matlab');
s = stimloop.createSession('body_set', 'bodies', 'object_set', 'objects', ...
    'control_body_set', 'controls', 'channels', {'ch01', 'ch02'}, ...
    'fit', struct('split', [40 10 10]));
printf('CALIBRATED=%d\\n', numel(fieldnames(s.calibration)));
trials = struct('stimulus', {{'body_0000', 'body_0001'}}, 'channel', {{'ch01', 'ch99'}}, ...
    'rate', [1.5 2.5]);
try
  stimloop.uploadPhase(s, 1, trials);
  disp('UPLOADED');
catch err
  printf('ID=%s\\nMESSAGE=%s\\n', err.identifier, err.message);
end
try
  stimloop.waitForList(s, 'timeout', 1);
catch err
  printf('ID=%s\\nMESSAGE=%s\\n', err.identifier, err.message);
end
try
  stimloop.waitForJob(s, 'abc', 'tiemout', 1);
catch err
  printf('ID=%s\\nMESSAGE=%s\\n', err.identifier, err.message);
end
x = 1;
save('-text', 'octave_text.mat', 'x');
try
  stimloop.uploadPhase(s, 1, 'octave_text.mat');
catch err
  printf('ID=%s\\nMESSAGE=%s\\n', err.identifier, err.message);
end
h = stimloop.health('backbone', 'resnet50_random');
printf('CAN_RUN=%d\\n', h.can_run);
h = stimloop.health('backbone', 'no_such_backbone');
printf('CAN_RUN=%d\\n', h.can_run);
"""


def test_a_refused_upload_raises_a_matlab_error_with_the_servers_detail(rig):
    world, _ = rig
    said = run_octave(world["folder"], REFUSED, world["env"])
    assert "UPLOADED" not in said
    assert "CALIBRATED=0" in said and "for calibration" not in said, said  # none asked for
    ids = re.findall(r"ID=(\S+)", said)
    messages = re.findall(r"MESSAGE=(.*)", said)
    assert ids[0] == "stimloop:http422", said
    assert "ch99" in messages[0] and "channel" in messages[0], messages
    assert ids[1] == "stimloop:http404" and "no selection yet" in messages[1], said
    # a misspelt option is refused with the known names (inputParser), not ignored
    assert ids[2] == "stimloop:option" and "timeout, poll" in messages[2], said
    # Octave's default text format is refused naming -v7
    assert ids[3] == "stimloop:http422" and "'-v7'" in messages[3], said
    assert "CAN_RUN=1" in said and "CAN_RUN=0" in said, said
    assert "no, the backbone no_such_backbone is not registered" in said, said


CALIBRATED = """
addpath('client/matlab');
s = stimloop.createSession('body_set', 'bodies', 'object_set', 'objects', ...
    'control_body_set', 'controls', 'channels', {'ch01', 'ch02'}, ...
    'fit', struct('split', [40 10 10]), 'selection', struct('calibration', 3));
fid = fopen('calibration.json', 'w'); fputs(fid, jsonencode(struct('id', s.id, ...
    'object', {s.calibration.object}, 'control_body', {s.calibration.control_body}))); fclose(fid);
"""


def test_a_session_with_calibration_images_returns_them_to_matlab(rig):
    world, _ = rig
    said = run_octave(world["folder"], CALIBRATED, world["env"])
    assert "phase one also shows 3 object images for calibration (s.calibration.object)" in said
    assert "phase one also shows 3 control_body images for calibration" in said, said
    got = json.loads((world["folder"] / "calibration.json").read_text())
    from stimloop_contract.service_client import ServiceClient

    env = world["env"]
    made = ServiceClient(env["STIMLOOP_URL"], env["STIMLOOP_TOKEN"]).session(got["id"])
    assert made.config.calibration == {"object": got["object"], "control_body": got["control_body"]}
    assert len(set(got["object"])) == 3 and len(set(got["control_body"])) == 3
