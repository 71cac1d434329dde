"""The durable store under ``models_store/``: stimulus sets, sessions and their results.

Layout::

    stimulus_sets/<set>/set.json          ids, files, sha256s, category, where the images are
    stimulus_sets/<set>/images/           images of an uploaded zip
    sessions/<id>/session.json            config, state, history, upload hashes, job ids
    sessions/<id>/phase1.npz, phase2.npz  the uploaded trials (columns)
    sessions/<id>/readouts.npz|json       fitted models; selection.json; analysis.json
    sessions/<id>/saliency/<key>.npz|json|png
    sessions/<id>/phase3/list.json, stimuli.zip, images/   the phase-three list and its images
    sessions/<id>/phase3.npz, phase3/analysis.json         its trials and their analysis

Every write is atomic (temporary file, fsync, rename), and every read-modify-write of a
session record holds an exclusive lock on ``sessions/<id>/.lock``, so the API and any number of
workers can share the folder. A restart loses nothing that was stored.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from stimloop.storage import session_states
from stimloop.storage.atomic import write_atomic

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# What each upload makes stale when it is replaced.
DERIVED = {
    "phase1": [
        "readouts.npz",
        "readouts.json",
        "selection.json",
        "channels.json",
        "phase2.npz",
        "analysis.json",
        "saliency",
        "phase3",
        "phase3.npz",
    ],
    "phase2": ["analysis.json", "saliency", "phase3", "phase3.npz"],
    "phase3": ["phase3/analysis.json"],
}


class NotFoundError(KeyError):
    """A stored thing that does not exist; the message names it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON; undefined numbers (NaN, infinities) are written as null, as JSON has none."""
    text = json.dumps(_finite(data), indent=1, default=_jsonable, allow_nan=False)
    write_atomic(path, text.encode())


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, buffer.getvalue())


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


class Store:
    """File-backed state of stimulus sets and sessions."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.sessions = self.root / "sessions"
        self.sets = self.root / "stimulus_sets"

    # ------------------------------------------------------------------ stimulus sets

    def set_dir(self, set_id: str) -> Path:
        if not NAME.match(set_id):
            raise NotFoundError(f"stimulus set {set_id!r} does not exist")
        return self.sets / set_id

    def get_set(self, set_id: str) -> dict[str, Any]:
        path = self.set_dir(set_id) / "set.json"
        if not path.is_file():
            raise NotFoundError(f"stimulus set {set_id!r} does not exist; register it first")
        return read_json(path)

    def list_sets(self) -> list[dict[str, Any]]:
        if not self.sets.is_dir():
            return []
        return [read_json(p) for p in sorted(self.sets.glob("*/set.json"))]

    def put_set(self, record: dict[str, Any]) -> None:
        write_json(self.set_dir(record["id"]) / "set.json", record)

    @contextmanager
    def sets_locked(self) -> Iterator[None]:
        """An exclusive lock over stimulus-set registration: check-then-write is atomic, so
        of two racing registrations of one id exactly one wins."""
        self.sets.mkdir(parents=True, exist_ok=True)
        with open(self.sets / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ sessions

    def session_dir(self, session_id: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{12}", session_id):
            raise NotFoundError(f"session {session_id!r} does not exist")
        return self.sessions / session_id

    @contextmanager
    def locked(self, session_id: str) -> Iterator[dict[str, Any]]:
        """The session record under an exclusive lock; written back when the block succeeds."""
        folder = self.session_dir(session_id)
        if not (folder / "session.json").is_file():
            raise NotFoundError(f"session {session_id!r} does not exist")
        with open(folder / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                record = read_json(folder / "session.json")
                yield record
                write_json(folder / "session.json", record)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextmanager
    def fenced(self, session_id: str, generation: int | None) -> Iterator[dict[str, Any]]:
        """``locked``, for a job: ``StaleJobError`` (and nothing written) unless the job was
        started for the session's current generation. Write a job's results inside it."""
        with self.locked(session_id) as record:
            session_states.check_generation(record, generation)
            yield record

    def create_session(
        self, config: dict[str, Any], provenance: dict[str, Any], key: str | None = None
    ) -> dict[str, Any]:
        """A new session; with an idempotency ``key`` (already scoped to its caller), the
        session made for that key before is returned instead, with ``"existing": True``."""
        if key is None:
            return self._new_session(config, provenance)
        keys = self.sessions / ".keys"
        keys.mkdir(parents=True, exist_ok=True)
        marker = keys / hashlib.sha256(key.encode()).hexdigest()
        with open(keys / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if marker.is_file():
                    return {**self.get_session(marker.read_text().strip()), "existing": True}
                record = self._new_session(config, provenance)
                write_atomic(marker, record["id"].encode())
                return record
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _new_session(self, config: dict[str, Any], provenance: dict[str, Any]) -> dict[str, Any]:
        session_id = uuid.uuid4().hex[:12]
        folder = self.sessions / session_id
        folder.mkdir(parents=True)
        record = {
            "id": session_id,
            "created": now(),
            "state": "created",
            "generation": 0,
            "config": config,
            "provenance": provenance,
            "uploads": {},
            "jobs": {},
            "error": None,
            "history": [{"time": now(), "event": "created", "state": "created"}],
        }
        write_json(folder / "session.json", record)
        return record

    def get_session(self, session_id: str) -> dict[str, Any]:
        path = self.session_dir(session_id) / "session.json"
        if not path.is_file():
            raise NotFoundError(f"session {session_id!r} does not exist")
        return read_json(path)

    def list_sessions(self) -> list[dict[str, Any]]:
        if not self.sessions.is_dir():
            return []
        return [read_json(p) for p in sorted(self.sessions.glob("*/session.json"))]

    @staticmethod
    def transition(
        record: dict[str, Any], state: str, event: str, bump: bool = False, **detail: Any
    ) -> None:
        """Move a (locked) record to ``state`` by the table in ``session_states`` (refusing
        any other change); ``bump`` starts a new generation (see there)."""
        session_states.transition(record, state, event, bump, **detail)

    def invalidate(self, session_id: str, upload: str) -> list[str]:
        """Delete what was derived from ``upload`` (replaced); returns what was removed."""
        folder = self.session_dir(session_id)
        removed = []
        for name in DERIVED[upload]:
            path = folder / name
            if path.is_dir():
                for child in sorted(path.rglob("*"), reverse=True):
                    child.unlink() if child.is_file() else child.rmdir()
                path.rmdir()
                removed.append(name)
            elif path.exists():
                path.unlink()
                removed.append(name)
        return removed

    def put_phase(self, session_id: str, phase: str, columns: dict[str, np.ndarray], sha: str):
        """Store a phase's trials and move the session on (a new generation), as an upload
        does; raises ``IllegalTransitionError`` when the session cannot take them now."""
        with self.locked(session_id) as rec:
            Store.transition(rec, f"{phase}_received", f"{phase} received", bump=True, sha256=sha)
            write_npz(self.path(session_id, f"{phase}.npz"), columns)
            rec["uploads"][phase] = {"sha256": sha, "trials": len(columns["stimulus"])}
            return dict(rec)

    def path(self, session_id: str, name: str) -> Path:
        return self.session_dir(session_id) / name

    def read_result(self, session_id: str, name: str, what: str) -> Any:
        """A stored JSON result, or ``NotFoundError`` saying it is not there yet."""
        path = self.path(session_id, name)
        if not path.is_file():
            state = self.get_session(session_id)["state"]
            raise NotFoundError(f"session {session_id} has no {what} yet (state: {state})")
        return read_json(path)
