"""NeuroExplorer .nex files (what Plexon's Offline Sorter writes) by the format's published
layout (NeuroExplorer's NexFile.h, version 106), independently of the reader: a 544-byte file
header, one 208-byte header per variable, then each variable's data at its offset. Neurons
(type 0) hold int32 timestamps; events (type 1) likewise; markers (type 6) hold the
timestamps, then per field a 64-byte name and ``n`` strings of ``MarkerLength`` bytes."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NEURON, EVENT, MARKER = 0, 1, 6
FILE_HEADER, VAR_HEADER = 544, 208


@dataclass
class Variable:
    kind: int
    name: str
    timestamps: np.ndarray  # ticks
    wire: int = 0
    unit: int = 0
    markers: tuple[str, ...] = ()  # one field's values (markers only)


def _text(text: str, size: int) -> bytes:
    return text.encode()[:size].ljust(size, b"\0")


def var_header(v: Variable, offset: int, marker_length: int) -> bytes:
    fields = 1 if v.kind == MARKER else 0
    out = struct.pack("<ii", v.kind, 102) + _text(v.name, 64)
    out += struct.pack("<6i", offset, len(v.timestamps), v.wire, v.unit, 1, 0)
    out += struct.pack("<4d", 0.0, 0.0, 0.0, 1.0)  # XPos, YPos, WFrequency, ADtoMV
    out += struct.pack("<3i", 0, fields, marker_length if fields else 0)
    out += struct.pack("<2d", 0.0, 0.0) + b"\0" * 52  # MVOffset, Prethreshold, padding
    assert len(out) == VAR_HEADER
    return out


def var_data(v: Variable, marker_length: int) -> bytes:
    out = np.asarray(v.timestamps, "<i4").tobytes()
    if v.kind == MARKER:
        out += _text("DIO", 64) + b"".join(_text(m, marker_length) for m in v.markers)
    return out


def write_nex(path: Path, rate: float, variables: list[Variable], end: int) -> None:
    """Variables in the given order; ``end``: the recording's last tick."""
    marker_length = 6  # five digits and a terminating zero, as Offline Sorter writes codes
    head = b"NEX1" + struct.pack("<i", 106) + _text("stimloop test", 256)
    head += struct.pack("<d3ii", rate, 0, end, len(variables), 0) + b"\0" * 256
    assert len(head) == FILE_HEADER
    offset = FILE_HEADER + VAR_HEADER * len(variables)
    headers, blobs = [], []
    for v in variables:
        data = var_data(v, marker_length)
        headers.append(var_header(v, offset, marker_length))
        blobs.append(data)
        offset += len(data)
    path.write_bytes(head + b"".join(headers) + b"".join(blobs))
