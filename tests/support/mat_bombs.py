"""Hostile MAT v5 files, written from the MAT-File Format document's layout: cells nested
thousands deep, a cell array declaring more cells than its bytes hold, and a flat array of
millions of empty cells. scipy cannot write them (its writer recurses too), so they are made
here; ``test_mat_bombs_are_what_scipy_reads`` reads small ones back with scipy, so the large
ones are the same layout at a hostile size."""

from __future__ import annotations

import struct
import zlib

MI_INT8, MI_INT32, MI_UINT32, MI_DOUBLE, MI_MATRIX, MI_COMPRESSED = 1, 5, 6, 9, 14, 15
CELL, DOUBLE = 1, 6


def header() -> bytes:
    text = b"MATLAB 5.0 MAT-file, written by stimloop's tests".ljust(116, b" ")
    return text + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"


def element(kind: int, data: bytes) -> bytes:
    return struct.pack("<II", kind, len(data)) + data + b"\0" * (-len(data) % 8)


def matrix_head(cls: int, dims: tuple[int, ...], name: bytes = b"") -> bytes:
    """Array flags, dimensions and name: the start of every matrix's body."""
    flags = element(MI_UINT32, struct.pack("<II", cls, 0))
    return flags + element(MI_INT32, struct.pack(f"<{len(dims)}i", *dims)) + element(MI_INT8, name)


def matrix(cls: int, dims: tuple[int, ...], body: bytes, name: bytes = b"") -> bytes:
    return element(MI_MATRIX, matrix_head(cls, dims, name) + body)


def double(value: float) -> bytes:
    return matrix(DOUBLE, (1, 1), element(MI_DOUBLE, struct.pack("<d", value)))


def compressed(variable: bytes) -> bytes:
    return struct.pack("<II", MI_COMPRESSED, len(packed := zlib.compress(variable, 9))) + packed


def nested_cells(depth: int, name: bytes = b"stimulus", compress: bool = True) -> bytes:
    """A 1 x 1 cell holding a 1 x 1 cell ... ``depth`` levels, around one double."""
    inner = double(1.0)
    heads = [matrix_head(CELL, (1, 1), name if level == 0 else b"") for level in range(depth)]
    sizes, size = [], len(inner)
    for head in reversed(heads):
        size += len(head)
        sizes.append(size)
        size += 8  # the miMATRIX tag around it
    sizes.reverse()
    parts = [struct.pack("<II", MI_MATRIX, s) + h for s, h in zip(sizes, heads)]
    variable = b"".join(parts) + inner
    return header() + (compressed(variable) if compress else variable)


def declared_cells(declared: int, held: int = 0, name: bytes = b"stimulus") -> bytes:
    """A 1 x ``declared`` cell array holding ``held`` cells (one double each)."""
    body = b"".join(double(float(k)) for k in range(held))
    return header() + matrix(CELL, (1, declared), body, name)


def flat_cells(count: int, names: tuple[bytes, ...] = (b"stimulus",)) -> bytes:
    """Compressed 1 x ``count`` cell arrays of empty cells (an 8-byte tag each), one per
    name."""
    empty = struct.pack("<II", MI_MATRIX, 0)
    return header() + b"".join(
        compressed(matrix(CELL, (1, count), empty * count, name)) for name in names
    )
