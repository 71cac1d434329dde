"""Registered predictions: frozen, with their hash, before phase two's responses arrive.

When the phase-two list is stored, the fit job writes ``registration.json`` once: every
selected image's predictions for every included channel with their intervals, the readouts'
own sha256, the backbone's weights sha256, the selection and fit settings and the seed. The
file is canonical JSON (sorted keys, no spaces), so its sha256 is the registration's hash; the
session record keeps that hash. Once recorded, a different document is refused, and a reader
checks the file against the recorded hash, so a prediction changed afterwards (on disk or by a
second writer) is found and named, never analysed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from stimloop.storage.atomic import finite_json, write_atomic

NAME = "registration.json"


class RegistrationError(RuntimeError):
    """A registered prediction would change, or has changed."""


def encode(document: dict[str, Any]) -> bytes:
    """Canonical bytes of a registration (undefined numbers as null)."""
    return json.dumps(
        finite_json(document), sort_keys=True, separators=(",", ":"), allow_nan=False
    ).encode()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_once(folder: Path, document: dict[str, Any], recorded: str | None) -> str:
    """Register ``document`` in ``folder``; returns its sha256. ``recorded``: the hash the
    session record holds (None: nothing registered yet, and a file left by a write that never
    reached the record is replaced). With one recorded, the same document again is a no-op and
    any other is refused (``RegistrationError``)."""
    data = encode(document)
    sha = digest(data)
    if recorded is not None:
        if sha != recorded:
            raise RegistrationError(
                f"predictions are already registered for this list (sha256 {recorded}); a "
                "registered prediction cannot be changed"
            )
        return sha
    write_atomic(Path(folder) / NAME, data)
    return sha


def read_checked(folder: Path, expected: str | None) -> tuple[dict[str, Any], str]:
    """The registered document and its sha256, refused when it is not the one registered
    (``expected``, the hash the session record kept)."""
    path = Path(folder) / NAME
    if not path.is_file():
        raise RegistrationError("no predictions were registered for this session's list")
    data = path.read_bytes()
    sha = digest(data)
    if expected is not None and sha != expected:
        raise RegistrationError(
            f"the registered predictions were changed after registration: the file's sha256 "
            f"is {sha}, the one registered {expected}; the analysis reads only the registered "
            "copy, so it stops here (restore the file, or start a new session)"
        )
    return json.loads(data), sha
