"""The ``stimloop`` command line: stimuli, backbone check, activation extraction."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from service.activations import load_activations
from service.cli import app
from service.science.backbone import file_sha256

runner = CliRunner()


def test_generate_extract_and_check(tmp_path, monkeypatch):
    out = tmp_path / "set"
    result = runner.invoke(
        app,
        [
            "stimuli",
            "generate",
            "--out",
            str(out),
            "--bodies",
            "2",
            "--objects",
            "1",
            "--control-bodies",
            "1",
            "--seed",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["id"] for e in manifest["stimuli"]] == [
        "body_0000",
        "body_0001",
        "object_0000",
        "control_body_0000",
    ]
    for entry in manifest["stimuli"]:
        assert file_sha256(out / entry["file"]) == entry["sha256"]

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
    assert act.features.shape == (4, 2048, 7, 7) and act.features.dtype == np.float16
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
