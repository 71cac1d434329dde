"""The operator's day refuses early, in the operator's words: what a session needs is checked
when it is created (before the animal works), sets must be of the category they claim, a
session's failed preparation shows at once, and the rig CLI names options and commands, the
file and the row, and fits its tables in a terminal."""

from __future__ import annotations

import json
import shutil

import pytest
from stimloop.science.stimuli import generate_bodies, generate_control_bodies, generate_objects
from stimloop.storage.stimulus_sets import write_stimulus_set
from stimloop_rig import cli
from stimloop_rig.rig_client import RigClient
from typer.testing import CliRunner

from tests.support.service import is_problem, new_session, register_sets

runner = CliRunner()


@pytest.fixture
def rig(service, monkeypatch):
    """The rig CLI against the in-process service, with the rig token."""
    token = service.rig["Authorization"].split()[1]
    client = RigClient("http://testserver", token, transport=service.client._transport)
    monkeypatch.setattr(cli, "_client", lambda url, tok, retry_budget=30.0: client)

    def run(*args: str):
        result = runner.invoke(cli.app, list(args))
        return result.exit_code, " ".join(result.output.split())

    return run


@pytest.fixture(scope="module")
def op_sets(service):
    register_sets(
        service,
        {
            "opb": ("body", generate_bodies(12, seed=8)),
            "opo": ("object", generate_objects(3, seed=8)),
            "opc": ("control_body", generate_control_bodies(2, seed=8)),
        },
    )


def paper(**extra) -> dict:
    body = {"body_set": "opb", "object_set": "opo", "control_body_set": "opc", "channels": ["a"]}
    return {"backbone": "resnet50_random", "fit": {"split": [6, 3, 3]}, **body, **extra}


def test_a_backbone_without_its_weights_is_refused_at_creation_and_shown_in_health(
    service, op_sets
):
    c = service.client
    r = c.post("/v1/sessions", headers=service.rig, json=paper(backbone="resnet50_robust_l2_eps3"))
    detail = is_problem(r, 409)["detail"]
    assert "weights of backbone 'resnet50_robust_l2_eps3' are missing" in detail
    assert "imagenet_l2_3_0.pt" in detail and "resnet50_random" in detail
    health = {b["name"]: b for b in c.get("/v1/health").json()["backbones"]}
    assert health["resnet50_random"]["ready"] and health["resnet50_random"]["problem"] is None
    assert not health["resnet50_robust_l2_eps3"]["ready"]
    assert "missing" in health["resnet50_robust_l2_eps3"]["problem"]
    r = c.post(
        "/v1/activations",
        headers=service.rig,
        json={"backbone": "resnet50_robust_l2_eps3", "stimulus_set": "opb"},
    )
    is_problem(r, 409)


def test_weights_that_are_not_the_registrys_are_refused_before_any_work(service, op_sets):
    registry = service.settings.registry_path
    original = registry.read_text()
    weights = service.settings.weights_dir / "other.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(b"not the lab's file")
    registry.write_text(
        original
        + '\n[backbones.lab]\nformat = "robustness"\nweights = "other.pt"\nsha256 = "'
        + "0" * 64
        + '"\n'
    )
    try:
        r = service.client.post("/v1/sessions", headers=service.rig, json=paper(backbone="lab"))
        detail = is_problem(r, 409)["detail"]
        assert "not the registry's" in detail and "other.pt" in detail
    finally:
        registry.write_text(original)
        weights.unlink()


def test_a_split_the_set_cannot_hold_says_how_to_give_a_smaller_one(service, op_sets, rig):
    r = service.client.post("/v1/sessions", headers=service.rig, json=paper(fit={}))
    detail = is_problem(r, 409)["detail"]
    assert "needs 475 images" in detail and "--split" in detail
    code, said = rig(
        "create-session",
        "--body-set", "opb", "--object-set", "opo", "--control-body-set", "opc",
        "--channels", "a", "--backbone", "resnet50_random", "--split", "6,3,3",
    )  # fmt: skip
    assert code == 0, said


def test_create_session_names_the_calibration_images_phase_one_shows(service, op_sets, rig):
    base = (
        "create-session", "--body-set", "opb", "--object-set", "opo",
        "--control-body-set", "opc", "--channels", "a", "--split", "6,3,3",
        "--backbone", "resnet50_random",
    )  # fmt: skip
    code, said = rig(*base, "--calibration", "1")
    assert code == 0, said
    session = said.split("session ", 1)[1].split()[0]  # "session <id> created"
    config = service.client.get(f"/v1/sessions/{session}", headers=service.rig).json()["config"]
    assert config["selection"]["calibration"] == 1
    for category, ids in config["calibration"].items():
        assert f"phase one also shows 1 {category} images for calibration" in said
        assert ids[0] in said
    code, said = rig(*base, "--calibration", "2")  # the control bodies hold 2: none to pick
    assert code != 0 and "less the 2 shown in phase one for calibration" in said
    assert "Traceback" not in said


def test_a_bad_settings_file_is_one_line_saying_how_to_write_it(tmp_path, rig):
    bad = tmp_path / "session.toml"
    bad.write_text("[fit\nsplit = ")
    code, said = rig(
        "create-session", "--body-set", "x", "--object-set", "y", "--control-body-set", "z",
        "--channels", "a", "--config", str(bad),
    )  # fmt: skip
    assert code == 2 and "not valid TOML" in said and "Traceback" not in said
    assert '"split": [80, 20, 20]' in said
    code, said = rig("create-session", "--preferred-set", "x", "--candidate-sets", "y",
                     "--channels", "a", "--split", "80,20")  # fmt: skip
    assert code == 2 and "give three numbers" in said


def test_a_mixed_or_mislabelled_folder_is_refused_as_a_set(service):
    root = service.settings.stimulus_root
    write_stimulus_set(
        root / "mixed", generate_bodies(3, seed=1) + generate_objects(2, seed=1), {"seed": 1}
    )
    write_stimulus_set(root / "only-objects", generate_objects(2, seed=1))
    c = service.client

    def register(set_id: str, category: str, folder: str):
        body = {"id": set_id, "category": category, "directory": folder}
        return c.post("/v1/stimulus-sets", headers=service.rig, json=body)

    detail = is_problem(register("m", "body", "mixed"), 409)["detail"]
    assert "mixes categories (3 body, 2 object" in detail and "its own folder" in detail
    detail = is_problem(register("o", "body", "only-objects"), 409)["detail"]
    assert "are object images" in detail and "register it with category object" in detail
    assert register("o", "object", "only-objects").status_code == 201


def test_a_failed_preparation_shows_at_once(service):
    session = new_session(service, "prep", 2, 8, channels=["a"], fit={"split": [2, 2, 3]})
    record = service.client.get(f"/v1/sessions/{session}", headers=service.rig).json()
    shutil.rmtree(service.settings.stimulus_root / "prepo")  # the objects' images are gone
    service.work()  # the warm job fails
    seen = service.client.get(f"/v1/sessions/{session}", headers=service.rig).json()
    assert seen["state"] == "failed" and seen["failed_in"] == "warm"
    assert seen["error"].startswith("preparing the session (the candidates' features) failed")
    assert "What to do: fix the named image or set" in seen["error"]
    assert record["error"] is None and record["state"] == "created"
    listed = service.client.get("/v1/sessions", headers=service.rig).json()
    assert [s["state"] for s in listed if s["id"] == session] == ["failed"]


def test_the_cli_speaks_its_own_words_and_names_the_file_and_row(service, op_sets, rig, tmp_path):
    session = new_session(service, "cw", 5, 8, channels=["a", "b"], fit={"split": [2, 2, 3]})
    table = tmp_path / "phase1.csv"
    table.write_text(
        "stimulus,channel,rate\nbody_0000,a,1\nbody_0001,a,2\nnope_1,a,3\nbody_0002,zz,1\n"
    )
    code, said = rig("phase1", session, str(table), "--no-wait")
    assert code == 2 and f"{table}: row 4 (and 0 more rows)" not in said
    assert f"{table}: row 4: channel 'zz' is not a channel of the session" in said
    table.write_text("stimulus,channel,rate\nbody_0000,a,1\nnope_1,a,3\nnope_2,b,3\n")
    code, said = rig("phase1", session, str(table), "--no-wait")
    assert code == 2 and f"{table}: row 2 (and 1 more rows): stimulus 'nope_1'" in said
    good = tmp_path / "good.csv"
    rows = [f"body_{i:04d},{ch},{i + k}" for i in range(8) for ch in "ab" for k in range(2)]
    good.write_text("stimulus,channel,rate\n" + "\n".join(rows) + "\n")
    assert rig("phase1", session, str(good), "--no-wait")[0] == 0
    other = tmp_path / "other.csv"
    other.write_text("stimulus,channel,rate\n" + "\n".join(r + "1" for r in rows) + "\n")
    code, said = rig("phase1", session, str(other), "--no-wait")
    assert code == 2 and "add --replace" in said and "?replace=true" not in said
    service.work()  # the fit: phase three now waits only for saliency maps
    code, said = rig("phase-three-list", session, "--out", str(tmp_path / "p3.csv"))
    assert code == 2 and "`stimloop-rig saliency`" in said and "POST ..." not in said


def test_the_analysis_table_fits_a_terminal(service, monkeypatch):
    """The key columns on an 80-column screen; every column with --wide and in the CSV."""
    from stimloop_contract.analysis import Analysis

    analysis = json.loads(
        (
            __import__("pathlib").Path(__file__).parents[1] / "science/data/paper_default.json"
        ).read_text()
    )
    from tests.support.pinned import in_categories

    data = in_categories(analysis)["analysis"]
    data["categories"] = {
        "preferred": "body",
        "preferred_candidates": ["control_body"],
        "others": ["object"],
    }
    data["provenance"] = {
        "stimloop_version": "x",
        "seed": 0,
        "backbone": "resnet50_random",
        "weights_sha256": "0" * 64,
        "torch_version": "x",
    }
    model = Analysis.model_validate(data)

    class Fake:
        def analysis(self, session: str):
            return model

        def saliency_results(self, session: str):
            return []

    monkeypatch.setattr(cli, "_client", lambda url, tok, retry_budget=30.0: Fake())
    narrow = runner.invoke(cli.app, ["analysis", "0123456789ab"], terminal_width=80)
    assert narrow.exit_code == 0, narrow.output
    assert "…" not in narrow.output and "more columns" in narrow.output
    lines = narrow.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "mw p object" in narrow.output and "r body" in narrow.output


def test_files_that_break_a_reader_are_one_line_and_exit_2(service, op_sets, rig, tmp_path):
    """Files built to hurt the rig's readers, and the ordinary slips, through `stimloop-rig
    phase1` and `create-session`: each one line naming the file and the fix, exit 2, no
    traceback."""
    import numpy as np

    from tests.support import mat_bombs
    from tests.support.openephys_files import write_recording

    session = new_session(service, "br", 6, 8, channels=["a"], fit={"split": [2, 2, 3]})

    def recording(name: str, **options) -> str:
        folder = tmp_path / name
        samples = 30000 + np.arange(4) * 30000
        planned = write_recording(
            folder, np.zeros((200000, 1), np.int16), samples, [1, 2, 3, 4], samples + 300,
            spikes={"CH1": np.arange(1000, 190000, 997)}, **options,
        )  # fmt: skip
        return str(planned.root)

    def codes(name: str, content: bytes) -> str:
        (tmp_path / name).write_bytes(content)
        return str(tmp_path / name)

    good_codes = codes("codes.csv", b"code,stimulus\n1,body_0000\n2,body_0001\n3,b\n4,c\n")
    big_cell = codes("big.csv", b"code,stimulus\n1," + b"x" * 200_000 + b"\n")
    latin = codes("latin.csv", "code,stimulus\n1,k\xf6rper\n".encode("latin-1"))
    no_folder = recording("no-folder")
    oebin = next((tmp_path / "no-folder").rglob("structure.oebin"))
    oebin.write_text(oebin.read_text().replace('"folder_name"', '"folder_nom"', 1))
    line_zero = recording("line-zero", words=False)
    states = next((tmp_path / "line-zero").rglob("states.npy"))
    np.save(states, np.where(np.load(states) == 1, 0, np.load(states)).astype(np.int16))
    (tmp_path / "nested.mat").write_bytes(mat_bombs.nested_cells(20_000))
    (tmp_path / "declared.mat").write_bytes(mat_bombs.declared_cells(2**27))
    (tmp_path / "phase1.cvs").write_text("stimulus,channel,rate\nbody_0000,a,1\n")
    deep, deeper = tmp_path / "deep.json", tmp_path / "deeper.json"
    deep.write_text("[" * 20_000 + "]" * 20_000)
    deeper.write_text("[" * 100_000 + "]" * 100_000)
    rec = recording("fine")
    rows = {
        "nested MAT-file": (["phase1", session, str(tmp_path / "nested.mat")], "nested deeper"),
        "declared MAT-file": (["phase1", session, str(tmp_path / "declared.mat")], "134,217,728"),
        "oebin without folder_name": (
            ["phase1", session, no_folder, "--codes", good_codes],
            "a continuous entry without 'folder_name'",
        ),
        "TTL line 0 without full words": (
            ["phase1", session, line_zero, "--codes", good_codes],
            "TTL lines are numbered 1 to 64",
        ),
        "a 200 KiB cell in codes.csv": (
            ["phase1", session, rec, "--codes", big_cell],
            "malformed CSV",
        ),
        "non-UTF-8 codes.csv": (
            ["phase1", session, rec, "--codes", latin],
            "not UTF-8 text (byte 17); save it as 'CSV UTF-8'",
        ),
        "a mistyped path": (["phase1", session, str(tmp_path / "phase1.csvv")], "no such file"),
        "a wrong extension": (
            ["phase1", session, str(tmp_path / "phase1.cvs")],
            ".cvs is not a trial table (.csv, .npz, .nwb, .mat)",
        ),
        "--config nested 20,000 deep": (
            ["create-session", "--body-set", "opb", "--object-set", "opo",
             "--control-body-set", "opc", "--channels", "a", "--config", str(deep)],
            "nested too deep",
        ),
        "--config nested 100,000 deep": (
            ["create-session", "--body-set", "opb", "--object-set", "opo",
             "--control-body-set", "opc", "--channels", "a", "--config", str(deeper)],
            "over 64 KiB",
        ),
    }  # fmt: skip
    rows["--out into a missing folder"] = (
        ["phase-two-list", session, "--out", str(tmp_path / "no-such-folder" / "list.csv")],
        "no-such-folder does not exist; create it, or write elsewhere",
    )
    rows["a mistyped session id"] = (["phase1", session[:-1] + "x", good_codes], "not a session id")
    for row, (args, words) in rows.items():
        code, said = rig(*args, "--no-wait") if args[0] == "phase1" else rig(*args)
        assert code == 2, (row, said)
        assert words in said and "Traceback" not in said, (row, said)
        assert said.startswith("error:") and len(said) < 600, (row, said)


def test_channels_with_spaces_and_a_missing_token_in_the_operators_words(service, op_sets, rig):
    from stimloop_rig.cli_words import in_cli_words

    code, said = rig(
        "create-session", "--body-set", "opb", "--object-set", "opo", "--control-body-set",
        "opc", "--channels", "ch01, ch02", "--backbone", "resnet50_random", "--split", "6,3,3",
    )  # fmt: skip
    assert code == 0, said
    r = service.client.get("/v1/sessions", headers={})
    words = in_cli_words(is_problem(r, 401)["detail"])
    assert "give the token with --token or STIMLOOP_TOKEN" in words and "Bearer" not in words
