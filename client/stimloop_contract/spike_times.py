"""Spike times cut around stimulus onsets into the window counts of a trial table, and the
spike-times NPZ the rig and the session page upload (``spikes_<channel>``, ``event_times``,
``event_codes``, ``code_ids``). Every refusal is a ``TrialFileError`` naming the source."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

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


@dataclass(frozen=True)
class SpikeTrains:
    """Spike trains and the presentations they are cut around: ``times`` channel -> spike
    times (s, any order), ``onsets`` (n,) each presentation's onset (s, the same clock),
    ``stimuli`` (n,) what it showed, and ``resolution`` the smallest step between two spike
    times (s, one sample of the acquisition; None where not known). What the rig uploads
    when it has spike times, and what the server keeps of such an upload for the session's
    NWB file."""

    times: dict[str, np.ndarray]
    onsets: np.ndarray
    stimuli: np.ndarray
    resolution: float | None = None

    def columns(
        self,
        baseline: tuple[float, float] = PAPER_WINDOWS.baseline,
        response: tuple[float, float] = PAPER_WINDOWS.response,
    ) -> dict[str, np.ndarray]:
        """The trial columns these spikes give in the windows (``counts_from_spike_times``)."""
        return counts_from_spike_times(
            self.times, self.onsets, self.stimuli, baseline=baseline, response=response
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """The spike-times NPZ's arrays: ``spikes_<channel>``, ``event_times``,
        ``event_codes`` (index into ``code_ids``, the stimuli in order of first showing)."""
        stimuli = np.asarray(self.stimuli).astype(str)
        ids, first, codes = np.unique(stimuli, return_index=True, return_inverse=True)
        order = np.argsort(first)  # codes numbered in the order the stimuli were first shown
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        arrays: dict[str, np.ndarray] = {
            f"spikes_{c}": np.asarray(t, dtype=np.float64) for c, t in self.times.items()
        }
        arrays["event_times"] = np.asarray(self.onsets, dtype=np.float64)
        arrays["event_codes"] = rank[codes.reshape(-1)]
        arrays["code_ids"] = ids[order]
        if self.resolution is not None:
            arrays["resolution"] = np.array([self.resolution], dtype=np.float64)
        return arrays


def parse_spike_npz(data: bytes, source: str, max_bytes: int) -> SpikeTrains:
    """A spike-times NPZ's bytes (an upload named ``source``), as ``read_spike_npz``; its
    members checked from their headers before any is decompressed (``npz_arrays``)."""
    return spike_trains(npz_arrays(data, source, max_bytes), source)


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
    return spike_trains(arrays, source).columns(**windows)


def spike_trains(arrays: dict[str, np.ndarray], source: str) -> SpikeTrains:
    """The spike trains and presentations of a spike-times NPZ's arrays, checked: every
    array there, at least one channel, every event code named in ``code_ids``."""
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
    onsets = np.asarray(arrays["event_times"], dtype=np.float64)
    return SpikeTrains(spikes, onsets, ids[codes], spike_resolution(arrays, source))


def spike_resolution(arrays: dict[str, np.ndarray], source: str) -> float | None:
    """A spike-times NPZ's optional ``resolution``: one number of seconds, over 0 and under
    one second (one sample of the acquisition: 1/30000 at 30 kHz)."""
    if "resolution" not in arrays:
        return None
    value = np.asarray(arrays["resolution"])
    if value.size != 1 or value.dtype.kind not in "fiu":
        raise TrialFileError(f"{source}: 'resolution' must be one number of seconds")
    resolution = float(value.reshape(-1)[0])
    if not 0 < resolution < 1:
        raise TrialFileError(
            f"{source}: 'resolution' is {resolution!r} s; give one sample's duration in "
            "seconds (1/30000 for 30 kHz), over 0 and under 1"
        )
    return resolution
