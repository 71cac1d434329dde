"""Open Ephys binary recordings written by the format's published layout (the GUI's 0.6
Binary format: structure.oebin, continuous/, events/.../TTL/, spikes/<detector>/<electrode>/),
with every key the schema of open-ephys-python-tools (``oebin_schema.json``) requires: known
signals, spikes, codes and photodiode pulses for the tests. ``test_recording`` checks each
folder with open-ephys-python-tools and neo before the project's reader sees it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

STREAM = "Acquisition_Board-100.Rhythm Data"
DETECTOR = "Spike_Detector-102.Rhythm Data"
RATE = 30000.0


@dataclass
class Planned:
    """What a written recording holds, in samples of the acquisition clock."""

    root: Path
    onsets: np.ndarray  # photodiode rises
    code_samples: np.ndarray
    codes: list[int]
    spikes: dict[str, np.ndarray] = field(default_factory=dict)


def ttl_events(
    code_samples: np.ndarray,
    codes: list[int],
    onsets: np.ndarray,
    photodiode: int,
    width: int,
    code_lines: int = 7,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The line changes of codes (lines 1 to ``code_lines``, set on one sample, cleared
    ``width`` samples later) and photodiode pulses (``photodiode``'s line): samples, states,
    full words."""
    changes: list[tuple[int, int]] = []
    for s, code in zip(code_samples, codes):
        for bit in range(code_lines):
            if code >> bit & 1:
                changes += [(int(s), bit + 1), (int(s) + width, -(bit + 1))]
    for s in onsets:
        changes += [(int(s), photodiode), (int(s) + width, -photodiode)]
    changes.sort(key=lambda c: (c[0], c[1] < 0, abs(c[1])))
    word, words = 0, []
    for _, state in changes:
        bit = 1 << (abs(state) - 1)
        word = word | bit if state > 0 else word & ~bit
        words.append(word)
    return (
        np.array([c[0] for c in changes], np.int64),
        np.array([c[1] for c in changes], np.int16),
        np.array(words, np.uint64),
    )


def write_recording(
    folder: Path,
    signal: np.ndarray,
    code_samples: np.ndarray,
    codes: list[int],
    onsets: np.ndarray,
    *,
    first_sample: int = 1000,
    photodiode: int = 8,
    spikes: dict[str, np.ndarray] | None = None,
    bit_volts: float = 0.195,
    words: bool = True,
    event_rate: float = RATE,
    code_lines: int = 7,
    second_stream: bool = False,
    software_ms: int | None = None,
) -> Planned:
    """A recording below ``folder/Record Node 101/experiment1/recording1``: ``signal``
    ``[samples, channels]`` int16; sample numbers start at ``first_sample`` (the given event
    and spike samples are on that clock)."""
    root = folder / "Record Node 101" / "experiment1" / "recording1"
    n, channels = signal.shape
    names = [f"CH{k + 1}" for k in range(channels)]
    cont = root / "continuous" / STREAM
    cont.mkdir(parents=True)
    np.ascontiguousarray(signal, dtype="<i2").tofile(cont / "continuous.dat")
    numbers = np.arange(first_sample, first_sample + n, dtype=np.int64)
    np.save(cont / "sample_numbers.npy", numbers)
    np.save(cont / "timestamps.npy", numbers / RATE)
    ttl = root / "events" / STREAM / "TTL"
    ttl.mkdir(parents=True)
    samples, states, full = ttl_events(code_samples, codes, onsets, photodiode, 30, code_lines)
    np.save(ttl / "sample_numbers.npy", samples)
    np.save(ttl / "states.npy", states)
    np.save(ttl / "timestamps.npy", samples / RATE)
    if words:
        np.save(ttl / "full_words.npy", full)
    structure: dict = {
        "GUI version": "0.6.7",
        "continuous": [
            {
                "folder_name": STREAM + "/",
                "sample_rate": RATE,
                "source_processor_name": "Acquisition Board",
                "source_processor_id": 100,
                "stream_name": "Rhythm Data",
                "recorded_processor": "Acquisition Board",
                "recorded_processor_id": 100,
                "num_channels": channels,
                "channels": [
                    {
                        "channel_name": name,
                        "description": "Headstage data channel",
                        "identifier": "genericdata.continuous",
                        "history": "Acquisition Board -> Record Node",
                        "bit_volts": bit_volts,
                        "units": "uV",
                    }
                    for name in names
                ],
            }
        ],
        "events": [
            {
                "folder_name": STREAM + "/TTL/",
                "channel_name": "Rhythm Data TTL Input",
                "description": "TTL events from the acquisition board's digital inputs",
                "identifier": "acquisitionboard.events",
                "sample_rate": event_rate,
                "type": "int16",
                "source_processor": "Acquisition Board",
                "stream_name": "Rhythm Data",
                "initial_state": 0,
            }
        ],
        "spikes": [],
    }
    for k, (name, times) in enumerate((spikes or {}).items()):
        electrode = f"{DETECTOR}/Electrode {k + 1}"  # the GUI's spikes/<detector>/<electrode>
        where = root / "spikes" / electrode
        where.mkdir(parents=True)
        n_spikes = len(times)
        np.save(where / "sample_numbers.npy", np.asarray(times, np.int64))
        np.save(where / "timestamps.npy", np.asarray(times) / RATE)
        np.save(where / "electrode_indices.npy", np.full(n_spikes, k, np.int16))
        np.save(where / "clusters.npy", np.zeros(n_spikes, np.int16))
        np.save(where / "waveforms.npy", np.zeros((n_spikes, 1, 40), np.int16))
        structure["spikes"].append(
            {
                "name": f"Electrode {k + 1}",
                "description": "Single electrode from Spike Detector 102",
                "identifier": f"100|Rhythm Data|102|Electrode {k + 1}",
                "source_processor_id": 102,
                "stream_name": "Rhythm Data",
                "sample_rate": RATE,
                "num_channels": 1,
                "pre_peak_samples": 8,
                "post_peak_samples": 32,
                "folder": electrode + "/",
                "source_channels": [
                    {"name": name, "local_index": names.index(name), "bit_volts": bit_volts}
                ],
            }
        )
    if second_stream:  # a NI-DAQ board beside the headstages: its own clock and TTL lines
        add_second_stream(root, structure)
    if software_ms is not None:  # as the GUI writes it when the recording starts (CRLF)
        lines = [
            f"Software Time (milliseconds since midnight Jan 1st 1970 UTC): {software_ms}",
            f"Start Time for Acquisition Board (100) - Rhythm Data @ {RATE:g} Hz: {first_sample}",
        ]
        if second_stream:  # the DAQ's own clock started earlier than the headstages'
            lines.append("Start Time for NI-DAQmx (102) - PXIe-6341 @ 40000 Hz: 0")
        (root / "sync_messages.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    (root / "structure.oebin").write_text(json.dumps(structure, indent=1))
    return Planned(root, np.asarray(onsets), np.asarray(code_samples), codes, spikes or {})


def planted_signal(
    seconds: float, channels: int, rate_hz: float, noise_uv: float, amplitude_uv: float, seed: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """White noise (``noise_uv`` SD) with spikes planted at Poisson times (at least 3 ms
    apart): a 0.3 ms negative trough of ``amplitude_uv`` then a slower positive lobe. Returns
    the int16 signal (0.195 uV per count) and the planted trough samples per channel."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    volts = 0.195
    x = rng.normal(0, noise_uv, (n, channels))
    t = np.arange(-30, 60) / RATE
    shape = -np.exp(-0.5 * (t / 0.00015) ** 2) + 0.35 * np.exp(-0.5 * ((t - 0.0006) / 0.0004) ** 2)
    planted = []
    for c in range(channels):
        gaps = rng.exponential(1 / rate_hz, int(seconds * rate_hz * 1.5)) + 0.003
        times = np.cumsum(gaps)
        samples = (times[times < seconds - 0.01] * RATE).astype(np.int64) + 30
        samples = samples[samples < n - 60]
        for s in samples:
            x[s - 30 : s + 60, c] += amplitude_uv * shape
        planted.append(samples)
    return np.clip(np.round(x / volts), -32768, 32767).astype(np.int16), planted


SECOND = "NI-DAQmx-102.PXIe-6341"


def add_second_stream(root: Path, structure: dict) -> None:
    """A second stream (a NI-DAQ board at 40 kHz, two analog channels, its own sample
    numbers) whose TTL line 1 pulses every second: codes the reader must not take."""
    rate, n = 40000.0, 800000
    cont = root / "continuous" / SECOND
    cont.mkdir(parents=True)
    np.zeros((n, 2), "<i2").tofile(cont / "continuous.dat")
    numbers = np.arange(n, dtype=np.int64)
    np.save(cont / "sample_numbers.npy", numbers)
    np.save(cont / "timestamps.npy", numbers / rate)
    ttl = root / "events" / SECOND / "TTL"
    ttl.mkdir(parents=True)
    rises = np.arange(1, 20) * int(rate)
    samples = np.sort(np.concatenate([rises, rises + 40]))
    states = np.tile(np.array([1, -1], np.int16), len(rises))
    np.save(ttl / "sample_numbers.npy", samples)
    np.save(ttl / "states.npy", states)
    np.save(ttl / "timestamps.npy", samples / rate)
    np.save(ttl / "full_words.npy", (states > 0).astype(np.uint64))
    structure["continuous"].append(
        {
            "folder_name": SECOND + "/",
            "sample_rate": rate,
            "source_processor_name": "NI-DAQmx",
            "source_processor_id": 102,
            "stream_name": "PXIe-6341",
            "recorded_processor": "NI-DAQmx",
            "recorded_processor_id": 102,
            "num_channels": 2,
            "channels": [
                {
                    "channel_name": f"AI{k}",
                    "description": "Analog input",
                    "identifier": "daq.continuous",
                    "history": "NI-DAQmx -> Record Node",
                    "bit_volts": 0.0003,
                    "units": "V",
                }
                for k in range(2)
            ],
        }
    )
    structure["events"].append(
        {
            "folder_name": SECOND + "/TTL/",
            "channel_name": "PXIe-6341 TTL Input",
            "description": "TTL events from the DAQ's digital inputs",
            "identifier": "daq.events",
            "sample_rate": rate,
            "type": "int16",
            "source_processor": "NI-DAQmx",
            "stream_name": "PXIe-6341",
            "initial_state": 0,
        }
    )
