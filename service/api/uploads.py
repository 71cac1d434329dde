"""A trial upload's bytes to checked columns and their hash, in a separate process.

Decoding 32 MiB of JSON, turning a million rows into arrays and hashing them holds Python's
interpreter lock for seconds; in the API's own process that would stall every other request.
So ``prepare`` (pure, torch-free) runs in a small process pool, and the API only awaits it.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError
from stimloop.api.errors import ApiError
from stimloop.api.schemas import TrialUpload
from stimloop.client.readers import (
    DuplicateTrialsError,
    TrialFileError,
    parse_trial_npz,
    validate_columns,
)

NPZ_TYPES = ("application/x-npz", "application/octet-stream", "application/npz")


@dataclass(frozen=True)
class Expected:
    """What a phase's trials may name: the session's channels and the allowed stimulus ids
    (``what`` says where they come from); ``required``: ids that must all have trials."""

    channels: tuple[str, ...]
    allowed: frozenset[str]
    what: str
    required: tuple[str, ...] = ()
    max_unpacked: int = 2 * 2**30  # an NPZ's columns, decompressed


def decode_trials(kind: str, data: bytes, max_unpacked: int = 2 * 2**30) -> dict[str, np.ndarray]:
    """The trial columns of a JSON or NPZ body (``kind``: its media type)."""
    if kind == "application/json":
        try:
            upload = TrialUpload.model_validate_json(data)
        except ValidationError as exc:
            parts = [
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
            ]
            raise ApiError(422, "Invalid trials", "; ".join(parts)) from None
        columns = {k: np.asarray(v) for k, v in upload.model_dump().items() if v is not None}
        try:
            return validate_columns(columns, "JSON body")
        except DuplicateTrialsError as exc:
            raise ApiError(422, "Duplicate trials", str(exc)) from None
        except TrialFileError as exc:
            raise ApiError(422, "Invalid trials", str(exc)) from None
    if kind in NPZ_TYPES:
        try:
            return parse_trial_npz(data, "NPZ body", max_unpacked)
        except DuplicateTrialsError as exc:
            raise ApiError(422, "Duplicate trials", str(exc)) from None
        except TrialFileError as exc:
            raise ApiError(400, "Invalid trials", str(exc)) from None
    raise ApiError(
        415,
        "Unsupported media type",
        "send trials as application/json (columns) or application/x-npz",
    )


def digest(columns: dict[str, np.ndarray]) -> str:
    """A content hash of the trials, the same for the JSON and the NPZ form of one table."""
    h = hashlib.sha256()
    for name in sorted(columns):
        values = columns[name]
        h.update(name.encode())
        if values.dtype.kind in "US":
            h.update("\x00".join(values.astype(str)).encode())
        else:
            h.update(values.astype(np.float64).tobytes())
    return h.hexdigest()


def check_ids(columns: dict[str, np.ndarray], expected: Expected) -> None:
    """400 naming unknown channels or stimuli, or listed images without trials."""
    channels = list(expected.channels)
    unknown_c = sorted(set(np.unique(columns["channel"]).tolist()) - set(channels))
    if unknown_c:
        raise ApiError(
            400,
            "Unknown channels",
            f"{len(unknown_c)} channels are not in the "
            f"session, e.g. {unknown_c[:5]}; the session has {channels[:5]}...",
        )
    shown = set(np.unique(columns["stimulus"]).tolist())
    unknown_s = sorted(shown - expected.allowed)
    if unknown_s:
        raise ApiError(
            400,
            "Unknown stimuli",
            f"{len(unknown_s)} stimulus ids are not {expected.what}, e.g. {unknown_s[:5]}",
        )
    missing = [s for s in expected.required if s not in shown]
    if missing:
        raise ApiError(
            400,
            "Incomplete phase two",
            f"no trials for {len(missing)} images of the phase-two list, e.g. {missing[:10]}",
        )


def prepare(kind: str, data: bytes, expected: Expected) -> tuple[dict[str, np.ndarray], str]:
    """Decode, check and hash an upload: its columns and their sha256."""
    columns = decode_trials(kind, data, expected.max_unpacked)
    check_ids(columns, expected)
    return columns, digest(columns)


class UploadPool:
    """One spawned process (made on first use) that runs ``prepare`` for the API."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    async def prepare(
        self, kind: str, data: bytes, expected: Expected
    ) -> tuple[dict[str, np.ndarray], str]:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, prepare, kind, data, expected)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
