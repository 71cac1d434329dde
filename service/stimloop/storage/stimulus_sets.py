"""Stimulus sets on disk: a folder of PNG/JPEG files, optionally with a ``manifest.json``.

The manifest lists each image's id, file, category, generator parameters and sha256; a folder
without one is read as every image file in it, ids being the file names without extension.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stimloop_contract.ids import STIMULUS_ID

from stimloop.science.stimuli import Stimulus
from stimloop.storage.atomic import write_atomic
from stimloop.storage.image_checks import check_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class StimulusEntry:
    id: str
    file: str
    category: str | None
    sha256: str
    params: dict[str, Any] = field(default_factory=dict)


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


IMAGE_ID = re.compile(STIMULUS_ID)  # 1-128 safe characters: every derived name fits 255 bytes
ID_RULE = (
    "ids are 1-128 letters, digits, '_', '.', '+' or '-', starting with a letter or digit (so "
    "that every name made from one fits a file name); rename the files, or give each an "
    "'id' in a manifest.json"
)


def read_stimulus_set(
    folder: Path, *, verify: bool = False, max_pixels: int | None = None
) -> list[StimulusEntry]:
    """The entries of a stimulus folder (manifest if present, else its image files, sorted).

    Every file is resolved (symbolic links followed) and must lie inside ``folder`` itself;
    ids must be unique and free of slashes and control characters. With ``verify`` (the API's
    registration), a manifest's sha256 must match the file, and every image is checked by
    content and pixel count (``image_checks``). Raises ``ValueError`` naming the file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"stimulus folder {folder} does not exist")
    root = folder.resolve()
    manifest = folder / MANIFEST
    if manifest.is_file():
        listed = _manifest_entries(manifest)
    else:
        listed = [
            {"id": path.stem, "file": path.name}
            for path in sorted(folder.iterdir())
            if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
        ]
        if not listed:
            raise FileNotFoundError(f"no PNG/JPEG images and no {MANIFEST} in {folder}")
    entries, seen = [], set()
    for item in listed:
        image_id, file = item["id"], item["file"]
        if not IMAGE_ID.match(image_id):
            raise ValueError(f"image id {image_id[:80]!r} (file {file[:80]!r}): {ID_RULE}")
        if image_id in seen:
            raise ValueError(f"image ids in {folder} are not unique: {image_id!r} twice")
        seen.add(image_id)
        path = (folder / file).resolve()
        if not path.is_relative_to(root) or path == root:
            raise ValueError(
                f"{file[:200]!r} resolves outside the set's folder {folder} (a symbolic link "
                "or '..'); copy the image into the folder"
            )
        if not path.is_file():
            raise ValueError(f"{file[:200]!r} listed for {image_id!r} is not a file in {folder}")
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        if verify:
            if item.get("sha256") not in (None, sha):
                raise ValueError(
                    f"{file!r}: the manifest's sha256 {item['sha256'][:16]}... does not match "
                    f"the file ({sha[:16]}...); fix the manifest or the file"
                )
            check_image(file, data, max_pixels or 4096 * 4096)
        entries.append(
            StimulusEntry(
                id=image_id,
                file=file,
                category=item.get("category"),
                sha256=sha if verify or "sha256" not in item else item["sha256"],
                params=item.get("params") or {},
            )
        )
    return entries


NAMED = re.compile(r"^(?P<category>[a-z][a-z_]*[a-z])_\d+$")  # e.g. object_0007, face_0001


def category_mismatch(entries: list[StimulusEntry], category: str) -> str | None:
    """Why a folder's images are not of ``category``, where its manifest (an entry's
    ``category``) or its file names (``<category>_<number>``, as ``stimloop stimuli generate``
    names them) say what they are; None when nothing says otherwise."""
    said: dict[str, int] = {}
    for e in entries:
        named = NAMED.match(e.id)
        found = e.category or (named.group("category") if named else None)
        if found:
            said[found] = said.get(found, 0) + 1
    if not said or set(said) == {category}:
        return None
    counts = ", ".join(f"{n} {c}" for c, n in sorted(said.items()))
    if len(said) > 1:
        return (
            f"the folder mixes categories ({counts}, by its manifest or file names); a set "
            "holds images of one category: give each its own folder (`stimloop stimuli "
            "generate` writes one per set) and register each with its category"
        )
    (other,) = said
    return (
        f"the folder's images are {other} images ({counts}, by its manifest or file names), "
        f"not {category}: register it with category {other}, or name the folder of the "
        f"{category} images"
    )


def _manifest_entries(manifest: Path) -> list[dict[str, Any]]:
    """The ``stimuli`` of a manifest, each with a string ``id`` and ``file``."""
    try:
        data = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{manifest} is not valid JSON: {exc}") from None
    stimuli = data.get("stimuli") if isinstance(data, dict) else None
    if not isinstance(stimuli, list) or not stimuli:
        raise ValueError(f"{manifest} needs a non-empty list 'stimuli' of {{id, file}} objects")
    for k, entry in enumerate(stimuli):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("id"), str)
            and isinstance(entry.get("file"), str)
            and isinstance(entry.get("sha256", ""), str)
            and isinstance(entry.get("params", {}) or {}, dict)
        ):
            raise ValueError(
                f"{manifest}: stimuli[{k}] needs string 'id' and 'file' (and optionally a "
                "string 'sha256', 'category' and an object 'params')"
            )
    return stimuli
