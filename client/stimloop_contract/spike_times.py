"""Spike times cut around stimulus onsets into the window counts of a trial table, and the
spike-times NPZ the rig and the session page upload (``spikes_<channel>``, ``event_times``,
``event_codes``, ``code_ids``). Every refusal is a ``TrialFileError`` naming the source."""

from __future__ import annotations

import io
import zipfile

import numpy as np

from stimloop_contract.configs import Windows
from stimloop_contract.errors import TrialFileError
from stimloop_contract.trial_tables import npz_arrays, validate_columns

PAPER_WINDOWS = Windows()  # A.2's baseline and response windows, written once in the science


def counts_from_spike_times(
    spike_times: dict[str, np.ndarray],
    onsets: np.ndarray,
    stimuli: np.ndarray,
    baseline: tuple[float, float] = PAPER_WINDOWS.baseline,
    response: tuple[float, float] = PAPER_WINDOWS.response,
) -> dict[str, np.ndarray]:
    """Cut each channel's spike train (s) around every stimulus onset into window counts.

    Windows are half-open ``[start, end)`` in seconds relative to onset (paper A.2). Returns
    trial columns: stimulus, channel, repeat, onset (each presentation's, as given),
    baseline_count, response_count.
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
        k: []
        for k in ("stimulus", "channel", "repeat", "onset", "baseline_count", "response_count")
    }
    for channel, times in spike_times.items():
        t = np.sort(np.asarray(times, dtype=np.float64))
        if not np.isfinite(t).all():
            raise TrialFileError(f"channel {channel!r} has NaN or infinite spike times")

        cols["stimulus"] += list(stimuli)
        cols["channel"] += [channel] * len(stimuli)
        cols["repeat"] += list(repeat)
        cols["onset"] += list(onsets)
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


def parse_spike_npz(
    data: bytes, source: str, max_bytes: int, **windows: tuple[float, float]
) -> dict[str, np.ndarray]:
    """A spike-times NPZ's bytes (an upload named ``source``), as ``read_spike_npz``; its
    members checked from their headers before any is decompressed (``npz_arrays``)."""
    return spike_npz_columns(npz_arrays(data, source, max_bytes), source, **windows)


def is_spike_npz(data: bytes) -> bool:
    """Whether NPZ bytes hold spike times (an ``event_times`` array), not a trial table."""
    try:
        return "event_times.npy" in zipfile.ZipFile(io.BytesIO(data)).namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def spike_npz_columns(
    arrays: dict[str, np.ndarray], source: str, **windows: tuple[float, float]
) -> dict[str, np.ndarray]:
    """The trial columns of a spike-times NPZ's arrays (``read_spike_npz``)."""
    for key in ("event_times", "event_codes", "code_ids"):
        if key not in arrays:
            raise TrialFileError(f"{source}: missing array {key!r}")
    spikes = {k.removeprefix("spikes_"): v for k, v in arrays.items() if k.startswith("spikes_")}
    if not spikes:
        raise TrialFileError(f"{source}: no spikes_<channel> arrays")
    codes = arrays["event_codes"].astype(np.int64)
    ids = arrays["code_ids"].astype(str)
    if codes.min(initial=0) < 0 or codes.max(initial=0) >= len(ids):
        bad = codes[(codes < 0) | (codes >= len(ids))][:5]
        raise TrialFileError(f"{source}: event codes {bad.tolist()} have no entry in code_ids")
    return counts_from_spike_times(spikes, arrays["event_times"], ids[codes], **windows)
