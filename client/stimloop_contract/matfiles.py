"""MATLAB MAT-files (v5 and v7, read with scipy) as trial tables (torch-free).

Two layouts, as MATLAB rigs write them:

* a **trial table**: the columns of ``trial_tables`` (``stimulus``, ``channel``, optional
  ``repeat`` and ``onset``, ``rate`` or ``baseline_count`` and ``response_count``) as variables
  of the file, or as the fields of one struct (``T = table2struct(trials, 'ToScalar', true); save(f,
  '-struct', ...)`` or ``save(f, 'T')``); text as cell arrays of strings or char rows;
* **XDream's**: ``stimulusID`` (one image name per presentation, ``N``) and ``tEvokedResp``
  (the evoked response per channel and presentation: ``[channels, N]``, ``[N, channels]`` or
  ``[N]`` for one channel; when square, rows are channels), with channel names from
  ``channelNames`` if present, else ``ch01``, ``ch02``, ...; the repeat is the presentation's
  count of its image so far, the rate the evoked response.

Version 7.3 files are HDF5 and refused with how to save them (``-v7``). Before scipy reads
anything, the file's element tree is walked (``mat_elements``): nesting, declared sizes and
counts are checked against what a trial table can need, and compressed elements are inflated
in bounded steps, so a bomb is refused at the limit, not after it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from stimloop_contract.errors import TrialFileError
from stimloop_contract.mat_elements import walk_mat
from stimloop_contract.trial_tables import MAX_NPZ_BYTES, NPZ_FLOOR, NPZ_RATIO, validate_columns

MAT_MEDIA_TYPE = "application/x-matlab-data"
MAT_V5 = b"MATLAB 5.0 MAT-file"
HDF5 = b"\x89HDF\r\n\x1a\n"
COLUMNS = ("stimulus", "channel", "repeat", "onset", "rate", "baseline_count", "response_count")


def is_mat(data: bytes) -> bool:
    """A MAT-file of any version (v5/v7, or v7.3's HDF5 with its MATLAB header)."""
    return data[:10] == b"MATLAB 5.0" or data[:10] == b"MATLAB 7.3" or data[512:520] == HDF5


def check_mat_elements(data: bytes, source: str, max_bytes: int) -> None:
    """Walk the file's element tree before scipy reads it (``mat_elements``): nesting,
    declared sizes and element counts against what a trial table can need, and at most
    ``max_bytes`` of variables (fewer for a small file that inflates far beyond itself)."""
    limit = min(max_bytes, max(NPZ_FLOOR, NPZ_RATIO * len(data)))
    walk_mat(data, limit, lambda reason: TrialFileError(f"{source}: {reason}"))


def parse_trial_mat(
    data: bytes, source: str = "MAT-file", max_bytes: int = MAX_NPZ_BYTES
) -> dict[str, np.ndarray]:
    """MAT-file bytes -> validated trial columns (either layout of the module docstring)."""
    if data[:10] == b"MATLAB 7.3" or data[512:520] == HDF5:
        raise TrialFileError(
            f"{source}: a MATLAB v7.3 (HDF5) file; save it as v7 instead: save(file, ..., '-v7')"
        )
    if data[:10] != b"MATLAB 5.0":
        raise TrialFileError(
            f"{source}: not a MAT-file stimloop reads (it does not start with {MAT_V5!r}); "
            "save it with save(file, ..., '-v7') (Octave's default text format and -hdf5 "
            "are not MAT-files)"
        )
    check_mat_elements(data, source, max_bytes)
    try:
        from scipy.io import loadmat
    except ImportError:  # the base client is numpy only
        raise TrialFileError(
            f"{source}: reading MAT-files needs scipy: pip install 'stimloop[mat]'"
        ) from None
    try:
        variables = loadmat(io.BytesIO(data), squeeze_me=True, simplify_cells=True)
    except Exception as exc:  # scipy raises many kinds on a damaged file
        raise TrialFileError(
            f"{source}: not a readable MAT-file ({type(exc).__name__}: {exc})"
        ) from None
    variables = {k: v for k, v in variables.items() if not k.startswith("__")}
    return validate_columns(mat_columns(variables, source), source)


def read_trial_mat(path: Path) -> dict[str, np.ndarray]:
    return parse_trial_mat(Path(path).read_bytes(), str(path))


def mat_columns(variables: dict[str, Any], source: str) -> dict[str, np.ndarray]:
    """The trial columns of a file's variables, by layout."""
    if "stimulusID" in variables and "tEvokedResp" in variables:
        return xdream_columns(variables, source)
    structs = [k for k, v in variables.items() if isinstance(v, dict)]
    if "stimulus" not in variables and len(structs) == 1:
        variables, source = variables[structs[0]], f"{source}, struct {structs[0]!r}"
    if "stimulus" not in variables:
        raise TrialFileError(
            f"{source}: holds {sorted(variables)[:10]}; expected the columns {list(COLUMNS)} "
            "(as variables or the fields of one struct) or XDream's stimulusID and tEvokedResp"
        )
    return {name: column(variables[name], name, source) for name in COLUMNS if name in variables}


def column(value: Any, name: str, source: str) -> np.ndarray:
    """One column as a 1-D array of numbers or strings; whole-number ids become text."""
    if type(value).__name__ == "MatlabOpaque" or (
        isinstance(value, np.ndarray) and value.dtype.names is not None
    ):
        raise TrialFileError(
            f"{source}: {name!r} is a MATLAB object (a table?); save its columns instead: "
            "T = table2struct(trials, 'ToScalar', true)"
        )
    if isinstance(value, list | tuple):  # a cell array: checked below, item by item
        cells = np.empty(len(value), dtype=object)
        cells[:] = list(value)
        value = cells
    array = np.atleast_1d(np.asarray(value))
    if array.dtype.hasobject:
        items = array.ravel()
        if not all(isinstance(v, str | int | float | np.number) for v in items):
            raise TrialFileError(
                f"{source}: {name!r} holds nested cells or structs; give text or numbers"
            )
        array = array.astype(str if any(isinstance(v, str) for v in items) else float)
    if array.ndim != 1:
        raise TrialFileError(f"{source}: {name!r} must be a vector, not {array.shape}")
    if name in ("stimulus", "channel") and array.dtype.kind in "biuf":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise TrialFileError(f"{source}: {name!r} holds numbers that are not whole ids")
        array = np.array([str(int(v)) for v in array])
    return array


def xdream_columns(variables: dict[str, Any], source: str) -> dict[str, np.ndarray]:
    """XDream's ``stimulusID`` and ``tEvokedResp`` as one trial per channel and presentation."""
    stimuli = column(variables["stimulusID"], "stimulusID", source).astype(str)
    responses = np.asarray(variables["tEvokedResp"])
    if responses.dtype.kind not in "biuf":
        raise TrialFileError(f"{source}: tEvokedResp must be numeric, not {responses.dtype}")
    n = len(stimuli)
    if responses.ndim == 1:
        responses = responses[None, :]
    if responses.ndim != 2 or n not in responses.shape:
        raise TrialFileError(
            f"{source}: tEvokedResp is {responses.shape}; one axis must be the {n} "
            "presentations of stimulusID"
        )
    if responses.shape[1] != n:  # [N, channels]
        responses = responses.T
    channels_n = responses.shape[0]
    if "channelNames" in variables:
        names = column(variables["channelNames"], "channelNames", source).astype(str)
        if len(names) != channels_n:
            raise TrialFileError(
                f"{source}: {len(names)} channelNames for {channels_n} channels of tEvokedResp"
            )
    else:
        names = np.array([f"ch{k + 1:02d}" for k in range(channels_n)])
    seen: dict[str, int] = {}
    repeats = []
    for s in stimuli:
        repeats.append(seen.get(s, 0))
        seen[s] = repeats[-1] + 1
    return {
        "stimulus": np.tile(stimuli, channels_n),
        "channel": np.repeat(names, n),
        "repeat": np.tile(np.asarray(repeats, float), channels_n),
        "rate": responses.astype(float).ravel(),
    }
