"""The committed registry and the stimulus-folder reader."""

from __future__ import annotations

import pytest
from stimloop.science.backbone import BackboneError
from stimloop.storage.registry import load_registry, spec_for
from stimloop.storage.stimulus_sets import read_stimulus_set, write_stimulus_set

from tests.support.paths import REGISTRY


def test_committed_registry_has_the_papers_backbone_and_the_stand_in():
    registry = load_registry(REGISTRY)
    robust = registry["resnet50_robust_l2_eps3"]
    assert (robust.format, robust.weights, robust.layer) == (
        "robustness",
        "imagenet_l2_3_0.pt",
        "layer4.1",
    )
    assert not robust.trusted and robust.input_size == 224
    assert registry["resnet50_random"].format == "random"


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(BackboneError, match="resnet50_random"):
        spec_for("nope", load_registry(REGISTRY))


def test_bad_registry_is_reported(tmp_path):
    path = tmp_path / "b.toml"
    path.write_text("[backbones.x]\nformat = 'onnx'\n")
    with pytest.raises(BackboneError, match="format must be"):
        load_registry(path)
    path.write_text("[backbones.x\n")
    with pytest.raises(BackboneError, match="not valid TOML"):
        load_registry(path)


def test_folder_without_manifest_is_read_by_file_name(tiny_stimuli, tmp_path):
    write_stimulus_set(tmp_path / "with", tiny_stimuli)
    entries = read_stimulus_set(tmp_path / "with")
    assert [e.id for e in entries] == [s.id for s in tiny_stimuli]
    plain = tmp_path / "plain"
    plain.mkdir()
    for e in entries[:2]:
        (plain / e.file).write_bytes((tmp_path / "with" / e.file).read_bytes())
    again = read_stimulus_set(plain)
    assert [(e.id, e.sha256) for e in again] == [(e.id, e.sha256) for e in entries[:2]]
    with pytest.raises(FileNotFoundError, match="no PNG/JPEG"):
        read_stimulus_set(tmp_path / "with" / ".." / "plain" / "..")
