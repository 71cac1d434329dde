"""Shared fixtures: the seeded random backbone (built once) and a tiny procedural set."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REGISTRY = REPO / "models_store" / "backbones.toml"


@pytest.fixture(scope="session")
def random_spec():
    from service.registry import load_registry

    return load_registry(REGISTRY)["resnet50_random"]


@pytest.fixture(scope="session")
def random_backbone(random_spec, tmp_path_factory):
    """The labelled stand-in backbone on the CPU (about a second to build)."""
    from service.science.backbone import load_backbone

    return load_backbone(random_spec, tmp_path_factory.mktemp("weights"), device="cpu")


@pytest.fixture(scope="session")
def tiny_stimuli():
    """4 bodies, 3 objects, 2 control bodies for seed 0."""
    from service.science.stimuli import generate_set

    return generate_set(4, 3, 2, seed=0)
