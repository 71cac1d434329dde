"""``set.json``: a registered stimulus set's record, typed as a session's is.

A set is registered from a folder below the stimulus root or from an uploaded zip; its record
names each image's id, file and sha256 (the activation cache's key), where the files are, and
when and how it was registered. The images themselves are never moved or renamed.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from stimloop.storage.session_states import now

Source = Literal["directory", "upload", "benchmark"]


class SetEntry(BaseModel):
    """One image of a set: its id (what every table names), its file and its sha256."""

    id: str
    file: str
    sha256: str


class SetRecord(BaseModel):
    """A registered stimulus set. ``count`` is ``len(entries)``, kept for readers of the file."""

    model_config = ConfigDict(extra="ignore")  # records written by earlier versions

    id: str
    category: str
    source: Source
    images_dir: str
    count: int
    created: str
    entries: list[SetEntry]

    @classmethod
    def new(
        cls,
        set_id: str,
        category: str,
        source: Source,
        images_dir: Path,
        entries: Iterable[tuple[str, str, str]],
    ) -> SetRecord:
        """A record made now from (id, file, sha256) triples, in their order."""
        listed = [SetEntry(id=i, file=f, sha256=s) for i, f, s in entries]
        return cls(
            id=set_id,
            category=category,
            source=source,
            images_dir=str(images_dir),
            count=len(listed),
            created=now(),
            entries=listed,
        )

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.entries]

    def paths(self) -> dict[str, Path]:
        """Each image's file by id."""
        base = Path(self.images_dir)
        return {e.id: base / e.file for e in self.entries}

    def entry(self, image_id: str) -> SetEntry | None:
        return next((e for e in self.entries if e.id == image_id), None)

    def same_images(self, other: SetRecord) -> bool:
        """Same category and the same images (ids and contents, in order)."""
        return self.category == other.category and [(e.id, e.sha256) for e in self.entries] == [
            (e.id, e.sha256) for e in other.entries
        ]
