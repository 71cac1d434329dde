"""MAT-files as MATLAB and Octave write them (written by scipy, an independent writer), and
damaged ones."""

from __future__ import annotations

import io
import struct

import numpy as np
from scipy.io import savemat


def mat_bytes(variables: dict, **options) -> bytes:
    buffer = io.BytesIO()
    savemat(buffer, variables, **options)
    return buffer.getvalue()


def cells(values: list) -> np.ndarray:
    """A MATLAB cell array (an object array for scipy)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def v73_file() -> bytes:
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116, b" ")
    return header + b"\0" * 8 + b"\x00\x02IM" + b"\0" * 384 + b"\x89HDF\r\n\x1a\n" + b"\0" * 64


def declared_huge() -> bytes:
    """A matrix element whose tag declares 2 GiB in a 200-byte file."""
    data = bytearray(mat_bytes({"rate": [1.0]}))
    kind, _ = struct.unpack("<II", data[128:136])
    data[128:136] = struct.pack("<II", kind, 2**31)
    return bytes(data)


def nested() -> bytes:
    return mat_bytes(
        {
            "stimulus": cells([cells(["a", "b"]), "c"]),
            "channel": cells(["x", "y"]),
            "rate": [1.0, 2.0],
        }
    )
