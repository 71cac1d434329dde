"""Stimulus sets on disk: a folder of PNG/JPEG files, optionally with a ``manifest.json``.

The manifest lists each image's id, file, category, generator parameters and sha256; a folder
without one is read as every image file in it, ids being the file names without extension.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from service.science.stimuli import Stimulus

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class StimulusEntry:
    id: str
    file: str
    category: str | None
    sha256: str
    params: dict[str, Any] = field(default_factory=dict)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename (all or nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_stimulus_set(
    out_dir: Path, stimuli: Iterable[Stimulus], extra: dict[str, Any] | None = None
) -> list[StimulusEntry]:
    """Write each stimulus as ``<id>.png`` and a manifest; returns the manifest entries."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for stimulus in stimuli:
        data = stimulus.png()
        file = f"{stimulus.id}.png"
        write_atomic(out_dir / file, data)
        entries.append(
            StimulusEntry(
                id=stimulus.id,
                file=file,
                category=stimulus.category,
                sha256=hashlib.sha256(data).hexdigest(),
                params=stimulus.params,
            )
        )
    manifest = {**(extra or {}), "stimuli": [asdict(e) for e in entries]}
    write_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=1).encode())
    return entries


def read_stimulus_set(folder: Path) -> list[StimulusEntry]:
    """The entries of a stimulus folder (manifest if present, else its image files, sorted)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"stimulus folder {folder} does not exist")
    manifest = folder / MANIFEST
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        return [StimulusEntry(**entry) for entry in data["stimuli"]]
    entries = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            entries.append(StimulusEntry(id=path.stem, file=path.name, category=None, sha256=sha))
    if not entries:
        raise FileNotFoundError(f"no PNG/JPEG images and no {MANIFEST} in {folder}")
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise ValueError(f"image ids in {folder} are not unique (same name, other extension?)")
    return entries
