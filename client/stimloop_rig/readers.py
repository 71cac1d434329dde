"""The rig's files as trial tables (torch-free): spike-times NPZ files, NWB files, and any
supported file by its kind (``read_trials``). Trial tables themselves (CSV, NPZ), their checks
and the counting of spike times in windows are the contract's (``stimloop_contract.
trial_tables``, ``spike_times``: the server counts an uploaded spike-times NPZ with the same
code); every reader here raises ``TrialFileError`` naming the file, the row and the column at
fault.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from stimloop_contract.errors import TrialFileError
from stimloop_contract.spike_times import SpikeTrains, is_spike_npz, parse_spike_npz
from stimloop_contract.trial_tables import (
    MAX_NPZ_BYTES,
    parse_trial_npz,
    read_trial_table,
    reading,
)

# ------------------------------------------------------------------ spike times


def read_spike_npz(path: Path, **windows: tuple[float, float]) -> dict[str, np.ndarray]:
    """Spike times per channel plus stimulus-onset events, from an NPZ with arrays
    ``spikes_<channel>`` (s), ``event_times`` (s), ``event_codes`` (int), and ``code_ids``
    (``code_ids[code]`` is the stimulus id shown for that code), counted in ``windows``."""
    return read_spike_trains(path).columns(**windows)


def read_spike_trains(path: Path) -> SpikeTrains:
    """The spike trains and presentations of a spike-times NPZ (``read_spike_npz``), its
    members checked from their headers before any is decompressed, as the server checks an
    uploaded one (``parse_spike_npz``)."""
    return parse_spike_npz(Path(path).read_bytes(), str(path), MAX_NPZ_BYTES)


def read_nwb(
    path: Path, stimulus_column: str = "stimulus", **windows: tuple[float, float]
) -> dict[str, np.ndarray]:
    """An NWB file's trials (``read_nwb_spikes``) counted in ``windows``."""
    return read_nwb_spikes(path, stimulus_column).columns(**windows)


def read_nwb_spikes(path: Path, stimulus_column: str = "stimulus") -> SpikeTrains:
    """An NWB file (the ``nwb`` extra): the Units table's spike times (channel = the unit's
    ``channel`` column if present, else its id) and the trials table's start times and
    ``stimulus_column``; the Units' resolution where it is set (between 0 and 1 s)."""
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
            step = float(nwb.units.resolution or "nan")  # unset: None, NaN or -1
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
    stimuli = trials[stimulus_column].to_numpy().astype(str)
    onsets = trials["start_time"].to_numpy(dtype=np.float64)
    return SpikeTrains(spikes, onsets, stimuli, step if 0 < step < 1 else None)


def read_trials(path: Path, **windows: tuple[float, float]) -> dict[str, np.ndarray]:
    """Any supported rig file's trial columns (``read_rig_file``)."""
    return read_rig_file(path, **windows)[0]


def read_rig_file(
    path: Path, **windows: tuple[float, float]
) -> tuple[dict[str, np.ndarray], SpikeTrains | None]:
    """Any supported rig file: ``.nwb``; an NPZ of spike times (``event_times`` inside) or of
    a trial table; a MATLAB ``.mat`` trial table (``matfiles``); a CSV trial table. Its trial
    columns (spike times counted in ``windows``), and its spike trains where it has them
    (NWB, spike-times NPZ). Every failure is a ``TrialFileError`` naming the file
    (``reading``)."""
    with reading(path):
        return _read_rig_file(Path(path), **windows)


def _read_rig_file(
    path: Path, **windows: tuple[float, float]
) -> tuple[dict[str, np.ndarray], SpikeTrains | None]:
    if path.suffix.lower() == ".mat":
        from stimloop_contract.matfiles import read_trial_mat

        return read_trial_mat(path), None
    trains = None
    if path.suffix.lower() == ".nwb":
        trains = read_nwb_spikes(path, "stimulus")
    elif path.suffix.lower() == ".npz":
        data = path.read_bytes()  # read once: a trial table or spike times
        if not is_spike_npz(data):
            return parse_trial_npz(data, str(path)), None
        trains = parse_spike_npz(data, str(path), MAX_NPZ_BYTES)
    if trains is not None:
        return trains.columns(**windows), trains
    return read_trial_table(path), None
