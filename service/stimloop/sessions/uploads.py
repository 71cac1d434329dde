"""A phase's trials received: the upload's bytes to checked columns and their hash, in
separate processes, then stored under the session's lock.

Decoding 32 MiB of JSON, turning a million rows into arrays and hashing them holds Python's
interpreter lock for seconds; in the API's own process that would stall every other request.
And a hostile file may crash or exhaust the process that reads it. So ``prepare`` (pure,
torch-free) runs in a small pool of bounded, replaceable processes, and the API only awaits it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from anyio.to_thread import run_sync
from pydantic import ValidationError
from stimloop_contract.configs import Windows
from stimloop_contract.errors import TrialFileError
from stimloop_contract.matfiles import MAT_MEDIA_TYPE, is_mat, parse_trial_mat
from stimloop_contract.spike_times import (
    PAPER_WINDOWS,
    SpikeTrains,
    is_spike_npz,
    parse_spike_npz,
)
from stimloop_contract.trial_tables import (
    DuplicateTrialsError,
    parse_trial_csv,
    parse_trial_npz,
    validate_columns,
)
from stimloop_contract.trials import NPZ_MEDIA_TYPES, TrialUpload

from stimloop.runtime.parse_pool import ParseFailedError, ParsePool
from stimloop.runtime.settings import Settings
from stimloop.sessions.errors import InvalidInputError, StateConflictError, UnsupportedMediaError
from stimloop.storage.session import Phase, SessionRecord, UploadInfo
from stimloop.storage.session_states import (
    RECEIVED,
    STARTED_BY,
    IllegalTransitionError,
    note,
    transition,
)
from stimloop.storage.store import Store


@dataclass(frozen=True)
class Expected:
    """What a phase's trials may name: the session's channels and the allowed stimulus ids
    (``what`` says where they come from); ``required``: ids that must all have trials."""

    channels: tuple[str, ...]
    allowed: frozenset[str]
    what: str
    required: tuple[str, ...] = ()
    max_unpacked: int = 2 * 2**30  # an NPZ's columns, decompressed
    windows: Windows = PAPER_WINDOWS  # the session's, for counting uploaded spike times


CSV_MEDIA_TYPES = ("text/csv", "text/tab-separated-values")


def decode(
    kind: str,
    data: bytes,
    max_unpacked: int = 2 * 2**30,
    name: str | None = None,
    windows: Windows = PAPER_WINDOWS,
) -> tuple[dict[str, np.ndarray], SpikeTrains | None]:
    """The trial columns of a JSON, NPZ, MAT-file or CSV body (``kind``: its media type; a
    MAT-file is recognised by its header under application/octet-stream too; an NPZ of spike
    times, ``stimloop_contract.spike_times.SpikeTrains.arrays``, is counted in the session's
    ``windows``), and the spike trains where the body had them. ``name``: the
    file's name where a person chose one (the live pages), so that a refusal names it."""
    if kind in CSV_MEDIA_TYPES:
        try:
            return parse_trial_csv(data, name or "the uploaded CSV file"), None
        except DuplicateTrialsError as exc:
            raise InvalidInputError(str(exc), title="Duplicate trials") from None
        except TrialFileError as exc:
            raise InvalidInputError(str(exc)) from None
    if kind == "application/json":
        try:
            upload = TrialUpload.model_validate_json(data)
        except ValidationError as exc:
            parts = [
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
            ]
            raise InvalidInputError("; ".join(parts)) from None
        columns = {k: np.asarray(v) for k, v in upload.model_dump().items() if v is not None}
        try:
            return validate_columns(columns, "JSON body"), None
        except DuplicateTrialsError as exc:
            raise InvalidInputError(str(exc), title="Duplicate trials") from None
        except TrialFileError as exc:
            raise InvalidInputError(str(exc)) from None
    if kind == MAT_MEDIA_TYPE or (kind in NPZ_MEDIA_TYPES and is_mat(data)):
        try:
            return parse_trial_mat(data, name or "the uploaded MAT-file", max_unpacked), None
        except TrialFileError as exc:
            raise InvalidInputError(str(exc)) from None
    if kind in NPZ_MEDIA_TYPES and is_spike_npz(data):
        try:
            trains = parse_spike_npz(data, name or "NPZ body", max_unpacked)
            columns = trains.columns(baseline=windows.baseline, response=windows.response)
            return columns, trains
        except DuplicateTrialsError as exc:
            raise InvalidInputError(str(exc), title="Duplicate trials") from None
        except TrialFileError as exc:
            raise InvalidInputError(str(exc)) from None
    if kind in NPZ_MEDIA_TYPES:
        try:
            return parse_trial_npz(data, name or "NPZ body", max_unpacked), None
        except DuplicateTrialsError as exc:
            raise InvalidInputError(str(exc), title="Duplicate trials") from None
        except TrialFileError as exc:
            raise InvalidInputError(str(exc)) from None
    raise UnsupportedMediaError(
        "send trials as application/json (columns), application/x-npz, a MAT-file "
        "(application/x-matlab-data) or a CSV table (text/csv)"
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
    """422 naming unknown channels or stimuli, or listed images without trials."""
    channels = list(expected.channels)
    unknown_c = sorted(set(np.unique(columns["channel"]).tolist()) - set(channels))
    if unknown_c:
        raise InvalidInputError(
            f"{len(unknown_c)} channels are not in the "
            f"session, e.g. {unknown_c[:5]}; the session has {channels[:5]}...",
            title="Unknown channels",
        )
    shown = set(np.unique(columns["stimulus"]).tolist())
    unknown_s = sorted(shown - expected.allowed)
    if unknown_s:
        raise InvalidInputError(
            f"{len(unknown_s)} stimulus ids are not {expected.what}, e.g. {unknown_s[:5]}",
            title="Unknown stimuli",
        )
    missing = [s for s in expected.required if s not in shown]
    if missing:
        raise InvalidInputError(
            f"no trials for {len(missing)} images of the phase-two list, e.g. {missing[:10]}",
            title="Incomplete phase two",
        )


def prepare(
    kind: str, data: bytes, expected: Expected, name: str | None = None
) -> tuple[dict[str, np.ndarray], str, SpikeTrains | None]:
    """Decode, check and hash an upload: its columns, their sha256 and its spike trains
    (``decode``)."""
    columns, spikes = decode(kind, data, expected.max_unpacked, name, expected.windows)
    check_ids(columns, expected)
    return columns, digest(columns), spikes


def store_upload(
    st: Store,
    session_id: str,
    phase: Phase,
    columns: dict[str, np.ndarray],
    info: UploadInfo,
    replace: bool,
    spikes: SpikeTrains | None = None,
) -> tuple[bool, SessionRecord, bool]:
    """Store a phase's trials (``info``: their digest, count and recording start) and the
    spike trains they were counted from (if any) atomically; (new?, record, may its job run
    again?). Same payload (trials and start): not new."""
    if phase == "phase3":
        return store_phase_three(st, session_id, columns, info, replace, spikes)
    sha = info.sha256
    files = st.files(session_id)
    with st.locked(session_id) as rec:
        held = rec.config.calibration_ids if phase == "phase1" else frozenset()
        if held and np.isin(columns["stimulus"], sorted(held)).all():
            raise InvalidInputError(
                "every trial names a calibration image; phase one's trials must include the "
                f"preferred set {rec.config.preferred_set!r}, which the readouts are fitted on",
                title="No preferred-set trials",
            )
        previous = rec.uploads.get(phase)
        if previous and same_payload(previous, info):
            if rec.state == "failed" and rec.failed_in == STARTED_BY[phase]:
                # the same trials again after a failed job: run that job again
                rec.error = None
                transition(rec, RECEIVED[phase], f"{phase} resubmitted", bump=True)
                return True, rec, False
            return False, rec, False
        if previous and not replace:
            raise StateConflictError(
                f"{phase} was already uploaded with other data "
                f"(sha256 {previous.sha256[:12]}...); add ?replace=true to replace "
                "it, which discards everything derived from it"
            )
        if previous and phase == "phase1" and "phase2" in rec.uploads:
            raise StateConflictError(
                "phase two was recorded against the predictions registered for this list "
                f"(sha256 {str(rec.registration)[:12]}...); replacing phase one would refit "
                "and change them after the responses came in. Start a new session for other "
                "phase-one trials"
            )
        event = f"{phase} replaced" if previous else f"{phase} received"
        try:  # refused before anything is written
            transition(rec, RECEIVED[phase], event, bump=True, sha256=sha)
        except IllegalTransitionError as exc:
            raise StateConflictError(f"{phase} cannot be uploaded now: {exc}") from None
        removed = files.discard_derived(phase) if previous else []
        rec.history[-1]["invalidated"] = removed
        if previous and phase == "phase1":
            rec.uploads.pop("phase2", None)
            rec.registration = None  # its file went with the list
        if previous:
            rec.uploads.pop("phase3", None)
            rec.phase3 = None
        files.write_trials(phase, columns, spikes, held)
        rec.uploads[phase] = info
        rec.error = None
        return True, rec, False


def same_payload(previous: UploadInfo, info: UploadInfo) -> bool:
    """The same trials with the same recording start: an upload sent again."""
    return previous.sha256 == info.sha256 and previous.recording_start == info.recording_start


def store_phase_three(
    st: Store,
    session_id: str,
    columns: dict[str, np.ndarray],
    info: UploadInfo,
    replace: bool,
    spikes: SpikeTrains | None = None,
) -> tuple[bool, SessionRecord, bool]:
    """Phase three's trials: stored beside the session's state (phase three is a track of
    its own: the session stays as it is, and no generation starts). Same payload: not new,
    and its job may run again while it has no analysis; other data: 409 unless ``replace``,
    which discards the phase-three analysis."""
    sha = info.sha256
    files = st.files(session_id)
    with st.locked(session_id) as rec:
        previous = rec.uploads.get("phase3")
        analysed = files.has_phase_three_analysis()
        if previous and same_payload(previous, info):
            # not new; without an analysis its job may be rerun (the API looks at the job)
            return False, rec, not analysed
        if previous and not replace:
            raise StateConflictError(
                f"phase three was already uploaded with other data (sha256 "
                f"{previous.sha256[:12]}...); add ?replace=true to replace it, which "
                "discards its analysis"
            )
        removed = files.discard_derived("phase3") if previous else []
        files.write_trials("phase3", columns, spikes)
        rec.uploads["phase3"] = info
        note(
            rec,
            "phase3 replaced" if previous else "phase3 received",
            sha256=sha,
            invalidated=removed,
        )
        return True, rec, False


def expected_ids(phase: Phase, session_id: str, st: Store, cfg: Settings) -> Expected:
    """What the phase's trials may name: phase one the preferred set, phase two its list (all
    of it), phase three its list."""
    record = st.get_session(session_id)
    files = st.files(session_id)
    config = record.config
    channels = tuple(config.channels)
    limit = 4 * cfg.max_upload_bytes
    if phase == "phase1":
        shown = frozenset(st.get_set(config.preferred_set).ids) | config.calibration_ids
        held = " or among the session's calibration images" if config.calibration else ""
        return Expected(
            channels,
            shown,
            f"in the preferred set {config.preferred_set!r}{held}",
            (),
            limit,
            config.windows,
        )
    if phase == "phase3":
        if not files.has_phase_three_list():
            raise StateConflictError(
                "no phase-three list yet: POST .../phase3 and wait for its job first"
            )
        listed = files.phase_three_list()
        images = [e["stimulus"] for e in listed["entries"]]
        images += [b for b in listed["stability_images"] if b not in set(images)]
        return Expected(
            channels,
            frozenset(images),
            "on the phase-three list",
            tuple(images),
            limit,
            config.windows,
        )
    if not files.has_selection():
        raise StateConflictError(
            f"no phase-two list yet (state {record.state}); wait for the selection"
        )
    phase_two = files.selection()["phase_two"]
    images = [e["stimulus"] for e in phase_two["entries"]] + phase_two["stability_images"]
    return Expected(
        channels, frozenset(images), "on the phase-two list", tuple(images), limit, config.windows
    )


@dataclass(frozen=True)
class Upload:
    """One upload as the upload process receives it: the body, its media type, what its
    trials may name, and where it goes."""

    kind: str
    data: bytes
    expected: Expected
    store_root: Path
    session_id: str
    phase: Phase
    replace: bool
    name: str | None = None  # the file's name, where a person chose one
    recording_start: datetime | None = None  # when the phase's recording started


def prepare_and_store(upload: Upload) -> tuple[bool, SessionRecord, bool]:
    """In the upload process: decode, check, hash, and store atomically under the session's
    (cross-process) lock; (new?, session record, may its job run again?)."""
    columns, sha, spikes = prepare(upload.kind, upload.data, upload.expected, upload.name)
    info = UploadInfo(
        sha256=sha, trials=len(columns["stimulus"]), recording_start=upload.recording_start
    )
    return store_upload(
        Store(upload.store_root),
        upload.session_id,
        upload.phase,
        columns,
        info,
        upload.replace,
        spikes,
    )


class UploadPool:
    """The processes that run ``prepare_and_store`` for the API (``runtime.parse_pool``):
    several, each with a memory limit and each upload a deadline, so that a file which
    crashes, exhausts or holds its reader costs that one request a 422 and every other upload
    goes on. Started with the app (spawning must not block a request), else on first use."""

    def __init__(self, settings: Settings) -> None:
        self.pool = ParsePool(
            settings.upload_processes,
            settings.upload_memory_mib * 2**20,
            settings.upload_timeout_s,
            warm=__name__,
        )

    def start(self) -> None:
        self.pool.start()

    async def prepare_and_store(self, upload: Upload) -> tuple[bool, SessionRecord, bool]:
        try:
            return await run_sync(self.pool.run, prepare_and_store, upload)
        except ParseFailedError as exc:
            raise InvalidInputError(
                f"the file could not be read: {exc}. Check that it is a trial table (CSV, "
                "NPZ, or a MAT-file saved with -v7) as the README describes; other uploads "
                "are not affected",
                title="Unreadable file",
            ) from None

    def close(self) -> None:
        self.pool.close()
