"""Plexon .plx files written by the format's published layout (Plexon's PlexHeaders: a 7504-byte
file header, 1020-byte spike channel headers, 296-byte event and slow channel headers, then
16-byte data block headers each followed by its waveform words), independently of the reader:
known spike trains, strobed codes and photodiode pulses."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

STROBED = 257  # Plexon's channel number of the strobed (word) events


def _name(text: str, size: int = 32) -> bytes:
    return text.encode()[:size].ljust(size, b"\0")


def file_header(rate: int, dsp: int, events: int, slow: int, last: int) -> bytes:
    """The 7504-byte file header, version 106."""
    head = struct.pack("<Ii128s", 0x58454C50, 106, _name("stimloop test", 128))
    head += struct.pack("<14i", rate, dsp, events, slow, 0, 0, 2026, 12, 2, 12, 0, 0, 0, rate)
    head += struct.pack("<d", float(last))
    head += struct.pack("<4B3H", 1, 1, 16, 16, 3000, 5000, 1000)
    head += _name("stimloop", 18) + _name("stimloop", 18) + b"\0" * 10
    assert len(head) == 256
    return head + b"\0" * (650 * 4 * 2 + 512 * 4)


def dsp_header(name: str, channel: int) -> bytes:
    """A 1020-byte spike channel header (Name, SIGName, Channel, ..., Gain 1)."""
    out = _name(name) + _name(name) + struct.pack("<9i", channel, 0, channel, 0, 1, 0, 0, 0, 1)
    out += b"\0" * (320 * 2 + 5 * 4 + 4 + 40 * 2 + 4 + 128)
    out += struct.pack("<BBH", 0, 0, channel) + b"\0" * 40
    assert len(out) == 1020
    return out


def event_header(name: str, channel: int) -> bytes:
    out = _name(name) + struct.pack("<i", channel) + b"\0" * 128
    out += struct.pack("<BBH", 0, 0, channel) + b"\0" * (32 * 4)
    assert len(out) == 296
    return out


def block(kind: int, timestamp: int, channel: int, unit: int) -> bytes:
    """A data block header without waveform words."""
    return struct.pack(
        "<HHiHHHH", kind, timestamp >> 32, timestamp & 0x7FFFFFFF, channel, unit, 0, 0
    )


def write_plx(
    path: Path,
    rate: int,
    spikes: dict[str, dict[int, np.ndarray]],
    codes: list[int],
    code_ticks: np.ndarray,
    photodiode: str,
    pulse_ticks: np.ndarray,
    silent: tuple[str, ...] = (),
) -> None:
    """``spikes``: channel name -> unit -> spike ticks (``rate`` per second); strobed codes at
    ``code_ticks``; photodiode pulses on the event channel named ``photodiode`` (channel 8);
    ``silent``: spike channels with no spikes at all."""
    names = [*spikes, *silent]
    blocks: list[tuple[int, bytes]] = []
    for k, name in enumerate(names):
        for unit, ticks in spikes.get(name, {}).items():
            blocks += [(int(t), block(1, int(t), k + 1, unit)) for t in ticks]
    blocks += [(int(t), block(4, int(t), STROBED, code)) for t, code in zip(code_ticks, codes)]
    blocks += [(int(t), block(4, int(t), 8, 0)) for t in pulse_ticks]
    blocks.sort(key=lambda b: b[0])
    last = blocks[-1][0] if blocks else 0
    with open(path, "wb") as out:
        out.write(file_header(rate, len(names), 2, 0, last))
        for k, name in enumerate(names):
            out.write(dsp_header(name, k + 1))
        out.write(event_header(photodiode, 8))
        out.write(event_header("Strobed", STROBED))
        for _, data in blocks:
            out.write(data)
