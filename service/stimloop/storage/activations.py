"""Activation files: backbone features of a stimulus set, ``[N, 2048, 7, 7]`` float16, in NPZ.

Each file carries what is needed to trust it: the image ids and sha256s, the backbone name and
the sha256 of its weights, and the forward precision.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stimloop.storage.atomic import write_atomic


@dataclass(frozen=True)
class Activations:
    ids: list[str]
    features: np.ndarray  # [N, 2048, 7, 7] float16
    image_sha256: list[str]
    backbone: str
    weights_sha256: str
    precision: str = "fp32"

    def index(self, ids: list[str]) -> np.ndarray:
        """Rows for ``ids``; raises ``KeyError`` naming the ids that are not here."""
        position = {stim_id: i for i, stim_id in enumerate(self.ids)}
        missing = [i for i in ids if i not in position]
        if missing:
            raise KeyError(f"{len(missing)} ids have no activations, e.g. {missing[:5]}")
        return np.array([position[i] for i in ids], dtype=np.int64)


def save_activations(path: Path, act: Activations) -> None:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        ids=np.array(act.ids),
        features=act.features.astype(np.float16, copy=False),
        image_sha256=np.array(act.image_sha256),
        backbone=np.array(act.backbone),
        weights_sha256=np.array(act.weights_sha256),
        precision=np.array(act.precision),
    )
    write_atomic(Path(path), buffer.getvalue())


def load_activations(path: Path) -> Activations:
    with np.load(path, allow_pickle=False) as data:
        return Activations(
            ids=[str(i) for i in data["ids"]],
            features=data["features"],
            image_sha256=[str(s) for s in data["image_sha256"]],
            backbone=str(data["backbone"]),
            weights_sha256=str(data["weights_sha256"]),
            precision=str(data["precision"]),
        )
