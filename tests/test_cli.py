"""The ``stimloop`` command line: stimuli, backbone check, activation extraction."""

from __future__ import annotations

import json

import numpy as np
import pytest
from stimloop.cli import app
from stimloop.science.backbone import file_sha256
from stimloop.storage.activations import load_activations
from typer.testing import CliRunner

runner = CliRunner()


def test_generate_extract_and_check(tmp_path, monkeypatch):
    sets = tmp_path / "stimuli"
    result = runner.invoke(
        app,
        [
            "stimuli",
            "generate",
            "--out",
            str(sets),
            "--bodies",
            "2",
            "--objects",
            "1",
            "--control-bodies",
            "1",
            "--faces",
            "2",
            "--control-faces",
            "1",
            "--seed",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    expected = {
        "bodies": ("body", ["body_0000", "body_0001"]),
        "objects": ("object", ["object_0000"]),
        "controls": ("control_body", ["control_body_0000"]),
        "faces": ("face", ["face_0000", "face_0001"]),
        "control_faces": ("control_face", ["control_face_0000"]),
    }
    assert sorted(p.name for p in sets.iterdir()) == sorted(expected)  # one folder per set
    for folder, (category, ids) in expected.items():
        manifest = json.loads((sets / folder / "manifest.json").read_text())
        assert manifest["category"] == category
        assert [e["id"] for e in manifest["stimuli"]] == ids
        for entry in manifest["stimuli"]:
            assert entry["category"] == category
            assert file_sha256(sets / folder / entry["file"]) == entry["sha256"]
    out = sets / "bodies"

    npz = tmp_path / "act.npz"
    result = runner.invoke(
        app,
        [
            "activations",
            "extract",
            "--backbone",
            "resnet50_random",
            "--images",
            str(out),
            "--out",
            str(npz),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "stand-in" in result.output
    act = load_activations(npz)
    assert act.features.shape == (2, 2048, 7, 7) and act.features.dtype == np.float16
    assert act.ids[0] == "body_0000" and len(act.weights_sha256) == 64

    result = runner.invoke(
        app, ["backbone", "check", "resnet50_random", "--images", "1", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert "[2048, 7, 7]" in result.output and "19,045,440" in result.output
    assert load_activations(npz).weights_sha256 in result.output.replace("\n", "").replace(
        "│", ""
    ).replace(" ", "")


def test_check_reports_a_missing_weights_file():
    result = runner.invoke(app, ["backbone", "check", "resnet50_robust_l2_eps3"])
    assert result.exit_code == 2
    assert "imagenet_l2_3_0.pt" in result.output and "not found" in result.output


def test_extract_names_a_bad_image(tmp_path):
    (tmp_path / "ok.png").write_bytes(b"not really a png")
    result = runner.invoke(
        app,
        [
            "activations",
            "extract",
            "--images",
            str(tmp_path),
            "--out",
            str(tmp_path / "a.npz"),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 2
    assert "ok.png" in result.output


@pytest.mark.backbone
def test_fit_from_activations_and_a_trial_table(tmp_path):
    import csv

    from stimloop.science import synthetic as sy

    bodies = tmp_path / "bodies"
    assert (
        runner.invoke(
            app,
            [
                "stimuli",
                "generate",
                "--out",
                str(tmp_path),
                "--bodies",
                "32",
                "--objects",
                "0",
                "--control-bodies",
                "0",
            ],
        ).exit_code
        == 0
    )
    sil = tmp_path / "sil"
    assert (
        runner.invoke(
            app, ["stimuli", "silhouettes", "--images", str(bodies), "--out", str(sil)]
        ).exit_code
        == 0
    )
    for folder in (bodies, sil):
        result = runner.invoke(
            app,
            [
                "activations",
                "extract",
                "--images",
                str(folder),
                "--out",
                str(folder) + ".npz",
                "--precision",
                "fp32",
            ],
        )
        assert result.exit_code == 0, result.output
    act = load_activations(str(bodies) + ".npz")
    neurons = sy.make_neurons(act.features, act.features[::-1], ["e1", "e2"], seed=0)
    rates = sy.true_responses(neurons, act.features)
    _, cols = sy.simulate_counts(rates, act.ids, ["e1", "e2"], seed=0)
    with open(tmp_path / "trials.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(list(cols))
        writer.writerows(zip(*cols.values()))
    out = tmp_path / "fit"
    result = runner.invoke(
        app,
        [
            "fit",
            "--activations",
            str(bodies) + ".npz",
            "--trials",
            str(tmp_path / "trials.csv"),
            "--out",
            str(out),
            "--silhouette-activations",
            str(sil) + ".npz",
            "--epochs",
            "5",
            "--lr",
            "1e-3",
            "--split",
            "20,6,6",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    with open(out / "channels.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["channel"] for r in rows] == ["e1", "e2"]
    for r in rows:
        assert float(r["selective_p"]) <= 1 and r["reliable_statistic"]
    meta = json.loads((out / "readouts.json").read_text())
    assert meta["seed"] == 0 and meta["weights_sha256"] == act.weights_sha256
    assert len(meta["split_ids"]["train"]) == 20


def test_fit_reports_trials_without_activations(tmp_path):
    np.savez(
        tmp_path / "act.npz",
        ids=np.array(["a"]),
        features=np.zeros((1, 2048, 7, 7), np.float16),
        image_sha256=np.array(["x"]),
        backbone=np.array("b"),
        weights_sha256=np.array("w"),
        precision=np.array("fp32"),
    )
    (tmp_path / "t.csv").write_text("stimulus,channel,rate\na,c,1\nmystery,c,2\n")
    result = runner.invoke(
        app,
        [
            "fit",
            "--activations",
            str(tmp_path / "act.npz"),
            "--trials",
            str(tmp_path / "t.csv"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2 and "mystery" in result.output
