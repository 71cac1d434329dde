"""The rig's files as trial tables (torch-free): spike times cut around stimulus onsets, NWB
files, and any supported file by its kind (``read_trials``). Trial tables themselves (CSV, NPZ)
and their checks are the contract's (``stimloop_contract.trial_tables``); every reader here
raises ``TrialFileError`` naming the file, the row and the column at fault.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from stimloop_contract.configs import Windows
from stimloop_contract.errors import TrialFileError
from stimloop_contract.trial_tables import (
    read_trial_npz,
    read_trial_table,
    reading,
    validate_columns,
)

PAPER_WINDOWS = Windows()  # A.2's baseline and response windows, written once in the science


# ------------------------------------------------------------------ spike times


def counts_from_spike_times(
    spike_times: dict[str, np.ndarray],
    onsets: np.ndarray,
    stimuli: np.ndarray,
    baseline: tuple[float, float] = PAPER_WINDOWS.baseline,
    response: tuple[float, float] = PAPER_WINDOWS.response,
) -> dict[str, np.ndarray]:
    """Cut each channel's spike train (s) around every stimulus onset into window counts.

    Windows are half-open ``[start, end)`` in seconds relative to onset (paper A.2). Returns
    trial columns: stimulus, channel, repeat, baseline_count, response_count.
    """
    onsets = np.asarray(onsets, dtype=np.float64)
    stimuli = np.asarray(stimuli).astype(str)
    if len(onsets) != len(stimuli):
        raise TrialFileError(f"{len(onsets)} onsets but {len(stimuli)} stimulus labels")
    repeat = np.zeros(len(stimuli), dtype=np.int64)
    seen: dict[str, int] = {}
    for i, s in enumerate(stimuli):
        repeat[i] = seen.get(s, 0)
        seen[s] = repeat[i] + 1
    cols: dict[str, list] = {
        k: [] for k in ("stimulus", "channel", "repeat", "baseline_count", "response_count")
    }
    for channel, times in spike_times.items():
        t = np.sort(np.asarray(times, dtype=np.float64))
        if not np.isfinite(t).all():
            raise TrialFileError(f"channel {channel!r} has NaN or infinite spike times")

        cols["stimulus"] += list(stimuli)
        cols["channel"] += [channel] * len(stimuli)
        cols["repeat"] += list(repeat)
        cols["baseline_count"] += list(_window_counts(t, onsets, baseline))
        cols["response_count"] += list(_window_counts(t, onsets, response))
    return validate_columns({k: np.asarray(v) for k, v in cols.items()}, "spike times")


def _window_counts(
    times: np.ndarray, onsets: np.ndarray, window: tuple[float, float]
) -> np.ndarray:
    """Spikes of sorted ``times`` in ``[onset + start, onset + end)`` for every onset."""
    lo = np.searchsorted(times, onsets + window[0], side="left")
    hi = np.searchsorted(times, onsets + window[1], side="left")
    return hi - lo


def read_spike_npz(path: Path, **windows: tuple[float, float]) -> dict[str, np.ndarray]:
    """Spike times per channel plus stimulus-onset events, from an NPZ with arrays
    ``spikes_<channel>`` (s), ``event_times`` (s), ``event_codes`` (int), and ``code_ids``
    (``code_ids[code]`` is the stimulus id shown for that code)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise TrialFileError(f"{path}: not a readable NPZ file ({exc})") from exc
    for key in ("event_times", "event_codes", "code_ids"):
        if key not in arrays:
            raise TrialFileError(f"{path}: missing array {key!r}")
    spikes = {k.removeprefix("spikes_"): v for k, v in arrays.items() if k.startswith("spikes_")}
    if not spikes:
        raise TrialFileError(f"{path}: no spikes_<channel> arrays")
    codes = arrays["event_codes"].astype(np.int64)
    ids = arrays["code_ids"].astype(str)
    if codes.min(initial=0) < 0 or codes.max(initial=0) >= len(ids):
        bad = codes[(codes < 0) | (codes >= len(ids))][:5]
        raise TrialFileError(f"{path}: event codes {bad.tolist()} have no entry in code_ids")
    return counts_from_spike_times(spikes, arrays["event_times"], ids[codes], **windows)


def read_nwb(
    path: Path, stimulus_column: str = "stimulus", **windows: tuple[float, float]
) -> dict[str, np.ndarray]:
    """An NWB file (the ``nwb`` extra): the Units table's spike times (channel = the unit's
    ``channel`` column if present, else its id) and the trials table's start times and
    ``stimulus_column``."""
    try:
        from pynwb import NWBHDF5IO
    except ImportError:
        raise TrialFileError(
            "reading NWB needs the nwb extra: pip install 'stimloop[nwb]'"
        ) from None
    try:
        with NWBHDF5IO(str(path), "r") as io_:
            nwb = io_.read()
            if nwb.units is None or nwb.trials is None:
                raise TrialFileError(f"{path}: needs a Units table and a trials table")
            units = nwb.units.to_dataframe()
            trials = nwb.trials.to_dataframe()
    except TrialFileError:
        raise
    except Exception as exc:
        raise TrialFileError(
            f"{path}: not a readable NWB file ({type(exc).__name__}: {exc})"
        ) from exc
    if stimulus_column not in trials:
        raise TrialFileError(
            f"{path}: the trials table has no {stimulus_column!r} column; "
            f"it has {list(trials.columns)}"
        )
    names = units["channel"] if "channel" in units.columns else units.index.astype(str)
    spikes = {str(n): np.asarray(t) for n, t in zip(names, units["spike_times"])}
    return counts_from_spike_times(
        spikes, trials["start_time"].to_numpy(), trials[stimulus_column].to_numpy(), **windows
    )


def read_trials(path: Path, **windows: tuple[float, float]) -> dict[str, np.ndarray]:
    """Any supported rig file: ``.nwb``; an NPZ of spike times (``event_times`` inside) or of
    a trial table; a MATLAB ``.mat`` trial table (``matfiles``); a CSV trial table. Every
    failure is a ``TrialFileError`` naming the file (``reading``)."""
    with reading(path):
        return _read_trials(Path(path), **windows)


def _read_trials(path: Path, **windows: tuple[float, float]) -> dict[str, np.ndarray]:
    if path.suffix.lower() == ".mat":
        from stimloop_contract.matfiles import read_trial_mat

        return read_trial_mat(path)
    if path.suffix.lower() == ".nwb":
        return read_nwb(path, "stimulus", **windows)
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                spike_file = "event_times" in data.files
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise TrialFileError(f"{path}: not a readable NPZ file ({exc})") from exc
        return read_spike_npz(path, **windows) if spike_file else read_trial_npz(path)
    return read_trial_table(path)
