"""A session: its typed record and its folder, the one module that names the session's files.

Layout of ``sessions/<id>/``::

    session.json                      the record: config, state, generation, history, uploads
    phase1.npz, phase2.npz, phase3.npz    the uploaded trials (columns)
    readouts.npz, readouts.json       the fitted models (arrays; config, seed, weights sha256)
    channels.json                     inclusion statistics and fit metrics per channel
    selection.json                    the picks per channel and the phase-two list
    registration.json                 its predictions, frozen with their sha256 (registration.py)
    analysis.json                     stability, selectivity, generalisation, scoring
    predictions.npz                   what the analysis compared the recording with
    saliency/<key>.npz|json|png       saliency results: arrays, metadata, figure
    saliency/sanity/<key>.json|png    their sanity checks: similarities, verdicts, cascade strip
    phase3/list.json, stimuli.zip, images/<id>.png, analysis.json    phase three

Categories are data: a session names its preferred set (the readouts are trained on it;
bodies in the paper) and its candidate sets, each of one category; candidate sets of the
preferred category (the paper's control bodies) are compared against every other category
(objects) in the selectivity test.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from stimloop_contract.sessions import (
    CandidateSet,
    Phase,
    PhaseThreeInfo,
    SessionConfig,
    SessionState,
    UploadInfo,
)

from stimloop.storage import registration
from stimloop.storage.atomic import read_json, read_npz, write_atomic, write_json, write_npz

if TYPE_CHECKING:  # torch and scipy stay out of the API process: imported where used
    from stimloop_contract.configs import Windows
    from stimloop_contract.spike_times import SpikeTrains

    from stimloop.science.readout import FittedReadout
    from stimloop.science.responses import Trials

PHASES: tuple[Phase, ...] = ("phase1", "phase2", "phase3")
SESSION_ID = re.compile(r"^[0-9a-f]{12}$")  # a session's id: 12 hex digits
__all__ = ["CandidateSet", "PhaseThreeInfo", "SessionConfig", "SessionRecord", "UploadInfo"]
SCHEMA = 2  # 1: the three fixed sets of the paper (body_set, object_set, control_body_set)


class NotFoundError(KeyError):
    """A stored thing that does not exist; the message names it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


class OutdatedSessionError(NotFoundError):
    """A session stored by an earlier version of stimloop, which this one cannot read."""


class SessionRecord(BaseModel):
    """``session.json``: the state machine's record (``session_states``) and what it holds."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA
    id: str
    created: str
    state: SessionState = "created"
    generation: int = 0
    config: SessionConfig
    provenance: dict[str, Any] = Field(default_factory=dict)
    uploads: dict[Phase, UploadInfo] = Field(default_factory=dict)
    jobs: dict[str, str] = Field(default_factory=dict)
    error: str | None = None
    failed_in: str | None = None
    history: list[dict[str, Any]] = Field(default_factory=list)
    phase3: PhaseThreeInfo | None = None
    registration: str | None = None  # sha256 of the registered predictions (registration.py)

    @property
    def rig(self) -> str:
        """Whose turn the session's jobs take (``worker.scheduling``): the token that created
        it, or the session itself when that was not recorded."""
        return str(self.provenance.get("rig") or self.id)


# What each upload makes stale when it is replaced.
_DERIVED: dict[Phase, tuple[str, ...]] = {
    "phase1": (
        "readouts.npz",
        "readouts.json",
        "selection.json",
        "registration.json",
        "channels.json",
        "phase2.npz",
        "phase2-spikes.npz",
        "analysis.json",
        "predictions.npz",
        "saliency",
        "phase3",
        "phase3.npz",
        "phase3-spikes.npz",
        "live/phase2",
        "live/phase3",
    ),
    "phase2": (
        "analysis.json",
        "predictions.npz",
        "saliency",
        "phase3",
        "phase3.npz",
        "phase3-spikes.npz",
        "live/phase3",
    ),
    "phase3": ("phase3/analysis.json",),
}


def save_readout(folder: Path, fit: FittedReadout) -> None:
    """A readout's two files in ``folder``: ``readouts.npz`` (arrays) and ``readouts.json``
    (config, seed, weights sha256, split); a session's, or ``stimloop fit --out``'s."""
    write_npz(Path(folder) / "readouts.npz", fit.arrays())
    write_atomic(Path(folder) / "readouts.json", json.dumps(fit.metadata(), indent=1).encode())


def load_readout(folder: Path) -> FittedReadout:
    from stimloop.science.readout import FittedReadout

    return FittedReadout.from_arrays(
        read_npz(Path(folder) / "readouts.npz"), read_json(Path(folder) / "readouts.json")
    )


SANITY_VERDICT = (
    "passed",
    "model_passed",
    "model_verdict",
    "model_failed_on",
    "data_passed",
    "metric",
    "max_similarity",
    "model_similarity",
    "data_similarity",
)


class SessionFiles:
    """The files of one session's folder, read and written by what they hold."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.id = self.folder.name

    # ------------------------------------------------------------------ the record

    @property
    def record_path(self) -> Path:
        return self.folder / "session.json"

    @property
    def lock_path(self) -> Path:
        return self.folder / ".lock"

    def exists(self) -> bool:
        return self.record_path.is_file()

    def record(self) -> SessionRecord:
        if not self.exists():
            raise NotFoundError(f"session {self.id!r} does not exist")
        data = read_json(self.record_path)
        if data.get("schema_version", 1) != SCHEMA:
            raise OutdatedSessionError(
                f"session {self.id!r} was stored by an earlier version of stimloop (one body, "
                "object and control-body set) and cannot be read by this one; create a new "
                "session and upload its trials again (they are in "
                f"{self.folder}/phase1.npz and phase2.npz)"
            )
        return SessionRecord.model_validate(data)

    def write_record(self, record: SessionRecord) -> None:
        write_json(self.record_path, record.model_dump(mode="json"))

    def missing(self, what: str) -> NotFoundError:
        """Not there yet, saying in which state the session is."""
        try:
            state = self.record().state
        except NotFoundError as exc:
            return exc
        return NotFoundError(f"session {self.id} has no {what} yet (state: {state})")

    # ------------------------------------------------------------------ trials

    def _trials_path(self, phase: Phase) -> Path:
        return self.folder / f"{phase}.npz"

    def has_trials(self, phase: Phase) -> bool:
        return self._trials_path(phase).is_file()

    def trial_columns(self, phase: Phase) -> dict[str, np.ndarray]:
        if not self.has_trials(phase):
            raise self.missing(f"{phase} trials")
        return read_npz(self._trials_path(phase))

    def write_trials(
        self,
        phase: Phase,
        columns: dict[str, np.ndarray],
        spikes: SpikeTrains | None = None,
        calibration: frozenset[str] = frozenset(),
    ) -> None:
        """A phase's trial columns, and the spike trains they were counted from where the
        upload had them (their times on the clock of the columns' ``onset``, and their
        resolution); a phase uploaded again without spike times loses the old ones. The spike
        trains are written first: the export checks them against the trials. Trials of the
        ``calibration`` images (phase one's) are kept apart (``calibration_columns``), so that
        every reader of the phase's trials sees the preferred set's alone."""
        if spikes is not None:
            arrays = {f"spikes_{c}": t for c, t in spikes.times.items()}
            if spikes.resolution is not None:
                arrays["resolution"] = np.array([spikes.resolution])
            write_npz(self._spikes_path(phase), arrays)
        else:
            self._spikes_path(phase).unlink(missing_ok=True)
        held = np.isin(columns["stimulus"], sorted(calibration))
        if held.any():
            write_npz(self._calibration_path(phase), {k: v[held] for k, v in columns.items()})
            columns = {k: v[~held] for k, v in columns.items()}
        else:
            self._calibration_path(phase).unlink(missing_ok=True)
        write_npz(self._trials_path(phase), columns)

    def _calibration_path(self, phase: Phase) -> Path:
        return self.folder / f"{phase}-calibration.npz"

    def has_calibration(self, phase: Phase) -> bool:
        return self.has_trials(phase) and self._calibration_path(phase).is_file()

    def recorded_columns(self, phase: Phase) -> dict[str, np.ndarray]:
        """Every trial of ``phase`` as recorded: its trials and its calibration images' (in
        the order of their onsets where the trials carry them)."""
        columns = self.trial_columns(phase)
        if not self.has_calibration(phase):
            return columns
        held = self.calibration_columns(phase)
        merged = {k: np.concatenate([v, held[k]]) for k, v in columns.items() if k in held}
        if "onset" in merged:
            order = np.argsort(merged["onset"], kind="stable")
            merged = {k: v[order] for k, v in merged.items()}
        return merged

    def calibration_columns(self, phase: Phase) -> dict[str, np.ndarray]:
        """The trial columns of the calibration images shown in ``phase``."""
        if not self.has_calibration(phase):
            raise self.missing(f"{phase} calibration trials")
        return read_npz(self._calibration_path(phase))

    def _spikes_path(self, phase: Phase) -> Path:
        return self.folder / f"{phase}-spikes.npz"

    def has_spike_times(self, phase: Phase) -> bool:
        return self.has_trials(phase) and self._spikes_path(phase).is_file()

    def spike_times(self, phase: Phase) -> tuple[dict[str, np.ndarray], float | None]:
        """The spike trains ``phase``'s trials were counted from (channel -> s), as uploaded,
        and their resolution (s; None where the upload did not give it)."""
        if not self.has_spike_times(phase):
            raise self.missing(f"{phase} spike times")
        arrays = read_npz(self._spikes_path(phase))
        resolution = float(arrays.pop("resolution")[0]) if "resolution" in arrays else None
        return {k.removeprefix("spikes_"): v for k, v in arrays.items()}, resolution

    def trials(self, phase: Phase, windows: Windows) -> Trials:
        """The trials of ``phase`` as net rates, counts cut with the session's ``windows``."""
        return net_trials(self.trial_columns(phase), windows)

    # ------------------------------------------------------------------ trials followed live

    def _live(self, phase: Phase) -> Path:
        return self.folder / "live" / phase

    def live_batches(self, phase: Phase) -> list[dict[str, Any]]:
        """The batches of ``phase`` received while it was followed live, in order: per batch
        its number (1, 2, ...), the sha256 of its trials and how many rows it holds."""
        path = self._live(phase) / "batches.json"
        return list(read_json(path)) if path.is_file() else []

    def write_live_batch(
        self, phase: Phase, columns: dict[str, np.ndarray], sha: str
    ) -> list[dict[str, Any]]:
        """Append the next batch: its trials, then the index that names it (a batch is held
        once the index names it). Returns the index."""
        held = self.live_batches(phase)
        number = len(held) + 1
        write_npz(self._live(phase) / f"{number:06d}.npz", columns)
        held.append({"batch": number, "sha256": sha, "rows": len(columns["stimulus"])})
        write_json(self._live(phase) / "batches.json", held)
        return held

    def live_summary(self, phase: Phase, windows: Windows) -> dict[str, Any]:
        """Per channel the held batches' trials, their distinct stimuli and the sum of their
        net rates: ``{"batches": n, "channels": {channel: {...}}}``. Kept beside the batches
        and brought up to date with the batches it has not counted yet (each is read once)."""
        held = len(self.live_batches(phase))
        path = self._live(phase) / "summary.json"
        summary: dict[str, Any] = {"batches": 0, "channels": {}}
        if path.is_file():
            summary = read_json(path)
        if summary["batches"] > held:  # counts a batch that was never held: count again
            summary = {"batches": 0, "channels": {}}
        if summary["batches"] == held:
            return dict(summary)
        for b in range(summary["batches"] + 1, held + 1):
            _summarise(summary, read_npz(self._live(phase) / f"{b:06d}.npz"), windows)
        summary["batches"] = held
        write_json(path, summary)
        return dict(summary)

    def live_columns(self, phase: Phase) -> dict[str, np.ndarray]:
        """Every held batch's trials, concatenated in batch order."""
        held = self.live_batches(phase)
        parts = [read_npz(self._live(phase) / f"{b['batch']:06d}.npz") for b in held]
        if not parts:
            return {}
        names = parts[0].keys()
        return {k: np.concatenate([part[k] for part in parts]) for k in names}

    def discard_derived(self, upload: Phase) -> list[str]:
        """Delete what was derived from ``upload`` (replaced); returns what was removed."""
        removed = []
        for name in _DERIVED[upload]:
            path = self.folder / name
            if path.is_dir():
                shutil.rmtree(path)
                removed.append(name)
            elif path.exists():
                path.unlink()
                removed.append(name)
        return removed

    # ------------------------------------------------------------------ the fit

    def has_readouts(self) -> bool:
        return (self.folder / "readouts.npz").is_file()

    @property
    def readouts_npz(self) -> Path:
        return self.folder / "readouts.npz"

    def readouts_meta(self) -> dict[str, Any] | None:
        path = self.folder / "readouts.json"
        return read_json(path) if path.is_file() else None

    def readout(self) -> FittedReadout:
        if not self.has_readouts():
            raise self.missing("fitted models")
        return load_readout(self.folder)

    def save_readout(self, fit: FittedReadout) -> None:
        save_readout(self.folder, fit)

    def has_channels(self) -> bool:
        return (self.folder / "channels.json").is_file()

    def channels(self) -> dict[str, Any]:
        """Inclusion statistics and fit metrics per channel (``{"channels": [...], ...}``)."""
        return self._result("channels.json", "fit")

    def write_channels(self, data: dict[str, Any]) -> None:
        write_json(self.folder / "channels.json", data)

    def has_selection(self) -> bool:
        return (self.folder / "selection.json").is_file()

    def selection(self) -> dict[str, Any]:
        return self._result("selection.json", "selection")

    def write_selection(self, data: dict[str, Any]) -> None:
        write_json(self.folder / "selection.json", data)

    def register(self, document: dict[str, Any], recorded: str | None) -> str:
        """Register the list's predictions once (``registration.write_once``); their sha256."""
        return registration.write_once(self.folder, document, recorded)

    def has_registration(self) -> bool:
        return self.registration_path.is_file()

    @property
    def registration_path(self) -> Path:
        return self.folder / registration.NAME

    def registration(self, expected: str | None) -> tuple[dict[str, Any], str]:
        """The registered predictions and their sha256, checked against ``expected``."""
        return registration.read_checked(self.folder, expected)

    # ------------------------------------------------------------------ the analysis

    def has_analysis(self) -> bool:
        return (self.folder / "analysis.json").is_file()

    def analysis(self) -> dict[str, Any]:
        return self._result("analysis.json", "analysis")

    def write_analysis(self, data: dict[str, Any]) -> None:
        write_json(self.folder / "analysis.json", data)

    def has_predictions(self) -> bool:
        return (self.folder / "predictions.npz").is_file()

    def predictions(self) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
        """What the analysis compared the recording with: the readouts' channels, and per
        category of phase two's picks (and ``test``, the held-out preferred images of phase
        one) the image ids ``[n]`` and the predictions ``[n, C_fit]`` (spikes/s)."""
        if not self.has_predictions():
            raise self.missing("predictions")
        arrays = read_npz(self.folder / "predictions.npz")
        channels = [str(c) for c in arrays["channels"]]
        names = [k.removeprefix("ids_") for k in arrays if k.startswith("ids_")]
        return channels, {n: (arrays[f"ids_{n}"].astype(str), arrays[f"pred_{n}"]) for n in names}

    def write_predictions(
        self, channels: list[str], by_name: dict[str, tuple[list[str], np.ndarray]]
    ) -> None:
        """``by_name``: category (or ``test``) -> (image ids ``[n]``, predictions
        ``[n, len(channels)]``)."""
        arrays: dict[str, np.ndarray] = {"channels": np.asarray(channels)}
        for name, (ids, values) in by_name.items():
            arrays[f"ids_{name}"] = np.asarray(ids, dtype=str)
            arrays[f"pred_{name}"] = np.asarray(values, dtype=np.float64)
        write_npz(self.folder / "predictions.npz", arrays)

    # ------------------------------------------------------------------ saliency

    def saliency_results(self) -> list[dict[str, Any]]:
        """Every stored saliency result's metadata, by key."""
        folder = self.folder / "saliency"
        return [read_json(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []

    def saliency_file(self, key: str, suffix: Literal["json", "npz", "png"]) -> Path | None:
        """A saliency result's file; ``None`` unless ``key`` is a stored result's (keys are
        looked up, never used as paths)."""
        if not key.isalnum():
            return None
        path = self.folder / "saliency" / f"{key}.{suffix}"
        return path if path.is_file() else None

    def saliency_meta(self, key: str) -> dict[str, Any]:
        path = self.saliency_file(key, "json")
        if path is None:
            raise NotFoundError(f"no saliency result {key!r}")
        return read_json(path)

    def sanity_file(self, key: str, suffix: Literal["json", "png"]) -> Path | None:
        """A saliency result's sanity checks (``saliency/sanity/<key>.json|png``); ``None``
        until they are computed."""
        if not key.isalnum():
            return None
        path = self.folder / "saliency" / "sanity" / f"{key}.{suffix}"
        return path if path.is_file() else None

    def write_sanity(self, key: str, summary: dict[str, Any], png: bytes) -> None:
        """The checks of result ``key``, and their verdict in the result's metadata."""
        folder = self.folder / "saliency" / "sanity"
        write_atomic(folder / f"{key}.png", png)
        write_json(folder / f"{key}.json", summary)
        meta = self.saliency_meta(key)
        meta["sanity"] = {k: summary[k] for k in SANITY_VERDICT}
        write_json(self.folder / "saliency" / f"{key}.json", meta)

    def saliency_arrays(self, key: str) -> dict[str, np.ndarray]:
        path = self.saliency_file(key, "npz")
        if path is None:
            raise NotFoundError(f"no saliency result {key!r}")
        return read_npz(path)

    def write_saliency(
        self, key: str, arrays: dict[str, np.ndarray], png: bytes, meta: dict[str, Any]
    ) -> None:
        folder = self.folder / "saliency"
        write_npz(folder / f"{key}.npz", arrays)
        write_atomic(folder / f"{key}.png", png)
        write_json(folder / f"{key}.json", meta)  # last: the result exists once it is there

    # ------------------------------------------------------------------ phase three

    def has_phase_three_list(self) -> bool:
        return (self.folder / "phase3" / "list.json").is_file()

    def phase_three_list(self) -> dict[str, Any]:
        return self._result("phase3/list.json", "phase-three list")

    @property
    def phase_three_zip(self) -> Path:
        return self.folder / "phase3" / "stimuli.zip"

    def phase_three_image(self, stimulus: str) -> Path:
        return self.folder / "phase3" / "images" / f"{stimulus}.png"

    def write_phase_three(
        self, listed: dict[str, Any], pngs: dict[str, bytes], archive: bytes
    ) -> bool:
        """A new phase-three list with its fragment images and zip; the old list, its trials
        and analysis are void (returns whether there was one)."""
        folder = self.folder / "phase3"
        replaced = folder.is_dir()
        if replaced:
            shutil.rmtree(folder)
            self._trials_path("phase3").unlink(missing_ok=True)
            self._spikes_path("phase3").unlink(missing_ok=True)
        for fid, png in pngs.items():
            write_atomic(self.phase_three_image(fid), png)
        write_atomic(self.phase_three_zip, archive)
        write_json(folder / "list.json", listed)
        return replaced

    def has_phase_three_analysis(self) -> bool:
        return (self.folder / "phase3" / "analysis.json").is_file()

    def phase_three_analysis(self) -> dict[str, Any]:
        return self._result("phase3/analysis.json", "phase-three analysis")

    def write_phase_three_analysis(self, data: dict[str, Any]) -> None:
        write_json(self.folder / "phase3" / "analysis.json", data)

    # ------------------------------------------------------------------

    def _result(self, name: str, what: str) -> Any:
        path = self.folder / name
        if not path.is_file():
            raise self.missing(what)
        return read_json(path)


def walk(folder: Path) -> Iterator[Path]:
    """Every session folder below ``folder`` with a record."""
    if folder.is_dir():
        yield from (p.parent for p in sorted(folder.glob("*/session.json")))


def net_trials(columns: dict[str, np.ndarray], windows: Windows) -> Trials:
    """Stored trial ``columns`` as net rates, counts cut with ``windows`` (as the analysis
    reads them), for the layers that may read the store but not the science."""
    from stimloop.science.responses import trials_from_columns

    return trials_from_columns(columns, windows)


def _summarise(summary: dict[str, Any], columns: dict[str, np.ndarray], windows: Windows) -> None:
    """Add a batch's trials to a live summary (``SessionFiles.live_summary``)."""
    trials = net_trials(columns, windows)
    for channel in np.unique(trials.channel).tolist():
        mine = trials.channel == channel
        entry = summary["channels"].setdefault(
            channel, {"trials": 0, "stimuli": [], "rate_sum": 0.0}
        )
        entry["trials"] += int(mine.sum())
        entry["stimuli"] = sorted(set(entry["stimuli"]) | set(trials.stimulus[mine].tolist()))
        entry["rate_sum"] += float(trials.net_rate[mine].sum())
