"""Recordings as the acquisition systems write them (their own formats, checked by their
readers), with planted trials."""

from __future__ import annotations

import numpy as np

from tests.support.openephys_files import RATE, write_recording
from tests.support.plexon_files import write_plx

STIMULI = ["body_0000", "body_0001", "body_0002", "body_0003"]


def session_like(tmp_path, photodiode_pulses: bool = True, **options):
    """12 presentations of 4 stimuli (codes 1-4), a photodiode pulse 17 ms after each code,
    three channels' sorted spikes, 20 s at 30 kHz; and the codes file."""
    rng = np.random.default_rng(0)
    order = [k % 4 for k in range(12)]
    code_samples = 30000 + np.arange(12) * 45000 + 1000
    onsets = code_samples + 500
    spikes = {
        f"CH{c + 1}": np.sort(rng.choice(np.arange(1000, 601000), 3000, replace=False))
        for c in range(3)
    }
    signal = np.zeros((600000, 3), np.int16)
    planned = write_recording(
        tmp_path,
        signal,
        code_samples,
        [k + 1 for k in order],
        onsets if photodiode_pulses else onsets[:0],
        spikes=spikes,
        **options,
    )
    codes = codes_file(tmp_path)
    return planned, codes, order


def codes_file(folder):
    """``codes.csv``: codes 1-4 name the four stimuli."""
    codes = folder / "codes.csv"
    codes.write_text("code,stimulus\n" + "".join(f"{k + 1},{s}\n" for k, s in enumerate(STIMULI)))
    return codes


def spike_npz(path, planned, order: list[int], names: list[str]):
    """Today's spike-times NPZ of a written recording's spikes and photodiode onsets, its
    channels named ``names`` (in the recording's order)."""
    np.savez(
        path,
        event_times=planned.onsets / RATE,
        event_codes=np.array(order),
        code_ids=np.array(STIMULI),
        **{f"spikes_{n}": v / RATE for n, v in zip(names, planned.spikes.values())},
    )
    return path


PLX_RATE = 40000


def plexon_like(tmp_path, pulses: bool = True):
    """A .plx file: ch A with units 1 and 2 (merged: multi-unit), ch B unsorted, ch C silent;
    12 strobed codes, a photodiode pulse on EVT08 12.5 ms after each; and today's spike NPZ of
    the same spikes and onsets."""
    rng = np.random.default_rng(3)
    order = [k % 4 for k in range(12)]
    code_ticks = 40000 + np.arange(12) * 60000
    pulse_ticks = code_ticks + 500
    units = {
        "sigA": {
            1: np.sort(rng.integers(0, 800000, 900)),
            2: np.sort(rng.integers(0, 800000, 400)),
        },
        "sigB": {0: np.sort(rng.integers(0, 800000, 600))},
    }
    path = tmp_path / "session.plx"
    write_plx(
        path,
        PLX_RATE,
        units,
        [k + 1 for k in order],
        code_ticks,
        "EVT08",
        pulse_ticks if pulses else pulse_ticks[:0],
        silent=("sigC",),
    )
    npz = tmp_path / "same.npz"
    merged = {n: np.sort(np.concatenate(list(u.values()))) / PLX_RATE for n, u in units.items()}
    np.savez(
        npz,
        event_times=pulse_ticks / PLX_RATE,
        event_codes=np.array(order),
        code_ids=np.array(STIMULI),
        spikes_sigA=merged["sigA"],
        spikes_sigB=merged["sigB"],
        spikes_sigC=np.zeros(0),
    )
    codes = codes_file(tmp_path)
    return path, npz, codes, order


def planted_phase(tmp_path, stimuli: list[str], repeats: int, seed: int, channels: int = 3):
    """A recording of ``stimuli`` (codes 1, 2, ... in the codes file), each shown ``repeats``
    times in a shuffled order, 0.3 s apart: codes on lines 1-9, the photodiode on line 10
    17 ms after each code, and per channel sorted spikes at 5 spikes/s plus a planted response
    of 0-80 spikes/s to each stimulus in its response window (+50..+250 ms); a silent
    continuous signal (the spikes are sorted). Returns the planned
    recording, the codes file and the presentation order (indices into ``stimuli``)."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(stimuli)) for _ in range(repeats)])
    step = int(0.3 * RATE)
    code_samples = 30000 + np.arange(len(order)) * step
    onsets = code_samples + 500
    end = int(code_samples[-1] + RATE)
    tuning = rng.uniform(0, 80, (channels, len(stimuli)))
    spikes = {}
    for c in range(channels):
        background = rng.uniform(1000, end, rng.poisson(5 * end / RATE))
        evoked = [
            onset + rng.uniform(0.05 * RATE, 0.25 * RATE, rng.poisson(tuning[c, s] * 0.2))
            for onset, s in zip(onsets, order)
        ]
        times = np.unique(np.concatenate([background, *evoked]).astype(np.int64))
        spikes[f"CH{c + 1}"] = times
    signal = np.zeros((end - 1000, channels), np.int16)
    planned = write_recording(
        tmp_path,
        signal,
        code_samples,
        [int(k) + 1 for k in order],
        onsets,
        spikes=spikes,
        photodiode=10,
        code_lines=9,
    )
    codes = tmp_path / "codes.csv"
    codes.write_text("code,stimulus\n" + "".join(f"{k + 1},{s}\n" for k, s in enumerate(stimuli)))
    return planned, codes, order
