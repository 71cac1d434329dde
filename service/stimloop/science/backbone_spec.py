"""What a backbone is, before any weights are loaded: its registry entry and its errors.

Torch-free, so the API (which never runs a network) can read and validate the registry;
``backbone.py`` loads the weights and runs the network.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Format = Literal["robustness", "torchvision", "random"]


class BackboneError(ValueError):
    """A backbone cannot be loaded; the message says what to do about it."""


class WeightsNotFoundError(BackboneError):
    """The weights file named in the registry is not where it should be."""


class ChecksumMismatchError(BackboneError):
    """The weights file's sha256 differs from the registry's."""


class CheckpointKeysError(BackboneError):
    """The checkpoint's tensors do not match a ResNet-50 (missing or unexpected keys)."""


class NotACheckpointError(BackboneError):
    """The file is not a PyTorch checkpoint holding a state dict."""


@dataclass(frozen=True)
class BackboneSpec:
    """One entry of ``models_store/backbones.toml``."""

    name: str
    format: Format
    architecture: str = "resnet50"
    layer: str = "layer4.1"
    weights: str | None = None
    seed: int | None = None
    sha256: str | None = None
    trusted: bool = False
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    description: str = ""

    @classmethod
    def from_mapping(cls, name: str, entry: Mapping[str, Any]) -> BackboneSpec:
        """Validate a registry entry; raise ``BackboneError`` naming the bad field."""
        known = {f for f in cls.__dataclass_fields__ if f != "name"}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise BackboneError(
                f"backbone {name!r}: unknown field(s) {unknown}; allowed: {sorted(known)}"
            )
        fmt = entry.get("format")
        if fmt not in ("robustness", "torchvision", "random"):
            raise BackboneError(
                f"backbone {name!r}: format must be 'robustness', 'torchvision' or 'random', "
                f"not {fmt!r}"
            )
        if entry.get("architecture", "resnet50") != "resnet50":
            raise BackboneError(f"backbone {name!r}: only architecture 'resnet50' is supported")
        if fmt == "random" and entry.get("seed") is None:
            raise BackboneError(f"backbone {name!r}: format 'random' needs an integer seed")
        if fmt != "random" and not entry.get("weights"):
            raise BackboneError(f"backbone {name!r}: format {fmt!r} needs a weights file name")
        parse_layer(entry.get("layer", "layer4.1"))
        values = dict(entry)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
                if len(values[key]) != 3:
                    raise BackboneError(f"backbone {name!r}: {key} needs 3 values (R, G, B)")
        return cls(name=name, **values)


def parse_layer(layer: str) -> tuple[int, int]:
    """``"layer4.1"`` -> (4, 1): the stage and the block after which the network is cut."""
    try:
        stage, block = layer.removeprefix("layer").split(".")
        stage_i, block_i = int(stage), int(block)
    except ValueError:
        raise BackboneError(f"layer must look like 'layer4.1', not {layer!r}") from None
    blocks_per_stage = {1: 3, 2: 4, 3: 6, 4: 3}
    if stage_i not in blocks_per_stage or not 0 <= block_i < blocks_per_stage[stage_i]:
        raise BackboneError(f"layer {layer!r} does not exist in a ResNet-50")
    return stage_i, block_i


def file_sha256(path: Path) -> str:
    """sha256 of a file (a weights file), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
