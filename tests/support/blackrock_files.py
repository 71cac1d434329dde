"""Blackrock .nev files by the published NEV specification (file spec 2.3), independently of
the reader: a 336-byte basic header, 32-byte extended headers (``NEUEVWAV`` per electrode,
``NEUEVLBL`` with its label), then fixed-size data packets in time order: a spike is
``timestamp u32, packet id u16 (the electrode), unit u8, reserved u8, waveform``; a digital
input is ``timestamp u32, packet id 0, insertion reason u8 (bit 0: the digital port
changed), reserved u8, the port's word u16``, padded to the packet size."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

BASIC, EXTENDED = 336, 32
SPIKE_WIDTH = 48  # samples per waveform, 2 bytes each
PACKET = 8 + 2 * SPIKE_WIDTH


def _text(text: str, size: int) -> bytes:
    return text.encode()[:size].ljust(size, b"\0")


def basic_header(rate: int, extended: int) -> bytes:
    # additional flags, bit 0: every waveform is 16-bit (as Central writes them)
    out = b"NEURALEV" + struct.pack("<BBH", 2, 3, 1)
    out += struct.pack("<4I", BASIC + EXTENDED * extended, PACKET, rate, rate)
    out += struct.pack("<8H", 2026, 12, 3, 2, 12, 0, 0, 0)  # SYSTEMTIME of the recording
    out += _text("stimloop test", 32) + _text("", 256) + struct.pack("<I", extended)
    assert len(out) == BASIC
    return out


def waveform_header(electrode: int) -> bytes:
    """NEUEVWAV: electrode id, connector, pin, digitization (nV/bit), energy threshold,
    high and low thresholds, sorted units, bytes per sample, spike width."""
    out = b"NEUEVWAV" + struct.pack(
        "<HBBHHhhBBH", electrode, 1, electrode, 250, 0, 0, -200, 2, 2, SPIKE_WIDTH
    )
    return out + b"\0" * (EXTENDED - len(out))


def label_header(electrode: int, label: str) -> bytes:
    out = b"NEUEVLBL" + struct.pack("<H", electrode) + _text(label, 16)
    return out + b"\0" * (EXTENDED - len(out))


def spike_packet(tick: int, electrode: int, unit: int) -> bytes:
    return struct.pack("<IHBB", tick, electrode, unit, 0) + b"\0" * (2 * SPIKE_WIDTH)


def digital_packet(tick: int, word: int) -> bytes:
    out = struct.pack("<IHBBH", tick, 0, 1, 0, word)
    return out + b"\0" * (PACKET - len(out))


def write_nev(
    path: Path,
    rate: int,
    electrodes: dict[str, tuple[int, dict[int, np.ndarray]]],
    words: list[int],
    word_ticks: np.ndarray,
) -> None:
    """``electrodes``: label -> (electrode id, unit -> spike ticks at ``rate``); the digital
    port's words at ``word_ticks`` (a code, then 0 when the stimulus computer clears it)."""
    packets = [
        (int(t), spike_packet(int(t), number, unit))
        for number, units in electrodes.values()
        for unit, ticks in units.items()
        for t in ticks
    ]
    packets += [(int(t), digital_packet(int(t), w)) for t, w in zip(word_ticks, words)]
    packets.sort(key=lambda p: p[0])
    headers = [waveform_header(n) for n, _ in electrodes.values()]
    headers += [label_header(n, label) for label, (n, _) in electrodes.items()]
    path.write_bytes(
        basic_header(rate, len(headers)) + b"".join(headers) + b"".join(p for _, p in packets)
    )
