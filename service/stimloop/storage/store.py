"""The durable store under ``models_store/``: stimulus sets and sessions.

Layout::

    stimulus_sets/<set>/set.json          ids, files, sha256s, category, where the images are
    stimulus_sets/<set>/images/           images of an uploaded zip
    sessions/<id>/                        one session (``storage/session.py`` names its files)

Every write is atomic (temporary file, fsync, rename), and every read-modify-write of a
session record holds an exclusive lock on the session's lock file, so the API and any number
of workers can share the folder. A restart loses nothing that was stored.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stimloop.storage import session_states
from stimloop.storage.atomic import read_json, write_atomic, write_json
from stimloop.storage.session import (
    SESSION_ID,
    NotFoundError,
    OutdatedSessionError,
    SessionConfig,
    SessionFiles,
    SessionRecord,
    walk,
)
from stimloop.storage.session_states import now
from stimloop.storage.set_record import SetRecord

log = logging.getLogger("stimloop.storage")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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

    def get_set(self, set_id: str) -> SetRecord:
        path = self.set_dir(set_id) / "set.json"
        if not path.is_file():
            raise NotFoundError(f"stimulus set {set_id!r} does not exist; register it first")
        return SetRecord.model_validate(read_json(path))

    def list_sets(self) -> list[SetRecord]:
        if not self.sets.is_dir():
            return []
        return [
            SetRecord.model_validate(read_json(p)) for p in sorted(self.sets.glob("*/set.json"))
        ]

    def put_set(self, record: SetRecord) -> None:
        write_json(self.set_dir(record.id) / "set.json", record.model_dump())

    @contextmanager
    def sets_locked(self) -> Iterator[None]:
        """An exclusive lock over stimulus-set registration: check-then-write is atomic, so
        of two racing registrations of one id exactly one wins."""
        self.sets.mkdir(parents=True, exist_ok=True)
        with _flock(self.sets / ".lock"):
            yield

    # ------------------------------------------------------------------ sessions

    def files(self, session_id: str) -> SessionFiles:
        """The session's folder (``NotFoundError`` for an id that cannot be a session's)."""
        if not SESSION_ID.fullmatch(session_id):
            raise NotFoundError(f"session {session_id!r} does not exist")
        return SessionFiles(self.sessions / session_id)

    @contextmanager
    def locked(self, session_id: str) -> Iterator[SessionRecord]:
        """The session record under an exclusive lock; written back when the block succeeds."""
        files = self.files(session_id)
        if not files.exists():
            raise NotFoundError(f"session {session_id!r} does not exist")
        with _flock(files.lock_path):
            record = files.record()
            yield record
            files.write_record(record)

    @contextmanager
    def fenced(self, session_id: str, generation: int | None) -> Iterator[SessionRecord]:
        """``locked``, for a job: ``StaleJobError`` (and nothing written) unless the job was
        started for the session's current generation. Write a job's results inside it."""
        with self.locked(session_id) as record:
            session_states.check_generation(record, generation)
            yield record

    def create_session(
        self, config: SessionConfig, provenance: dict[str, Any], key: str | None = None
    ) -> tuple[SessionRecord, bool]:
        """A new session, and whether it is new: with an idempotency ``key`` (already scoped
        to its caller), the session made for that key before is returned instead."""
        if key is None:
            return self._new_session(config, provenance), True
        keys = self.sessions / ".keys"
        keys.mkdir(parents=True, exist_ok=True)
        marker = keys / hashlib.sha256(key.encode()).hexdigest()
        with _flock(keys / ".lock"):
            if marker.is_file():
                return self.get_session(marker.read_text().strip()), False
            record = self._new_session(config, provenance)
            write_atomic(marker, record.id.encode())
            return record, True

    def _new_session(self, config: SessionConfig, provenance: dict[str, Any]) -> SessionRecord:
        session_id = uuid.uuid4().hex[:12]
        files = SessionFiles(self.sessions / session_id)
        files.folder.mkdir(parents=True)
        created = now()
        record = SessionRecord(
            id=session_id,
            created=created,
            config=config,
            provenance=provenance,
            history=[{"time": created, "event": "created", "state": "created"}],
        )
        files.write_record(record)
        return record

    def get_session(self, session_id: str) -> SessionRecord:
        return self.files(session_id).record()

    def list_sessions(self) -> list[SessionRecord]:
        """Every session this version can read (older ones are logged and left out)."""
        out = []
        for folder in walk(self.sessions):
            try:
                out.append(SessionFiles(folder).record())
            except OutdatedSessionError as exc:
                log.warning("%s", exc)
        return out


@contextmanager
def _flock(path: Path) -> Iterator[None]:
    with open(path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
