"""Readers for the rig's trial tables: CSV or NPZ, one row per trial (torch-free).

Columns: ``stimulus`` (id), ``channel`` (name), optional ``repeat``, and either ``rate`` (the
net rate in spikes/s) or ``baseline_count`` and ``response_count`` (spikes in the baseline and
response windows). Every reader returns plain numpy columns and raises ``TrialFileError``
naming the file, the row and the column at fault.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np

ID_COLUMNS = ("stimulus", "channel")
COUNT_COLUMNS = ("baseline_count", "response_count")


class TrialFileError(ValueError):
    """A trial file cannot be used; the message says where and why."""


def validate_columns(columns: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    missing = [c for c in ID_COLUMNS if c not in columns]
    if missing:
        raise TrialFileError(f"{source}: missing column(s) {missing}; found {sorted(columns)}")
    has_rate = "rate" in columns
    has_counts = all(c in columns for c in COUNT_COLUMNS)
    if not has_rate and not has_counts:
        raise TrialFileError(
            f"{source}: needs a 'rate' column or both 'baseline_count' and 'response_count'"
        )
    n = len(columns["stimulus"])
    for name, values in columns.items():
        if len(values) != n:
            raise TrialFileError(f"{source}: column {name!r} has {len(values)} rows, not {n}")
    if n == 0:
        raise TrialFileError(f"{source}: no trials")
    out = {"stimulus": columns["stimulus"].astype(str), "channel": columns["channel"].astype(str)}
    numeric = ["rate"] if has_rate else list(COUNT_COLUMNS)
    if "repeat" in columns:
        numeric.append("repeat")
    for name in numeric:
        try:
            values = np.asarray(columns[name], dtype=np.float64)
        except ValueError:
            bad = next(i for i, v in enumerate(columns[name]) if not _is_number(v))
            value = str(columns[name][bad])
            raise TrialFileError(
                f"{source}: row {bad + 1}, column {name!r}: {value!r} is not a number"
            ) from None
        if not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise TrialFileError(f"{source}: row {bad + 1}, column {name!r} is NaN or infinite")
        out[name] = values
    for name in COUNT_COLUMNS:
        if name in out and ((out[name] < 0).any() or (out[name] % 1 != 0).any()):
            raise TrialFileError(f"{source}: column {name!r} must hold whole, non-negative counts")
    empty = np.flatnonzero((out["stimulus"] == "") | (out["channel"] == ""))
    if len(empty):
        raise TrialFileError(f"{source}: row {int(empty[0]) + 1} has an empty stimulus or channel")
    return out


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def read_trial_csv(path: Path) -> dict[str, np.ndarray]:
    """A CSV trial table with a header row."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames:
                raise TrialFileError(f"{path}: empty file or no header row")
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise TrialFileError(f"{path}: not a text CSV file ({exc})") from exc
    except csv.Error as exc:
        raise TrialFileError(f"{path}: malformed CSV ({exc})") from exc
    columns = {name.strip(): [] for name in reader.fieldnames}
    for i, row in enumerate(rows):
        if None in row or any(v is None for v in row.values()):
            raise TrialFileError(f"{path}: row {i + 1} has the wrong number of fields")
        for name, value in row.items():
            columns[name.strip()].append(value.strip())
    return validate_columns({k: np.asarray(v) for k, v in columns.items()}, str(path))


def read_trial_npz(path: Path) -> dict[str, np.ndarray]:
    """An NPZ trial table: one 1-D array per column."""
    return parse_trial_npz(Path(path).read_bytes(), str(path))


def parse_trial_npz(data: bytes, source: str = "NPZ") -> dict[str, np.ndarray]:
    """NPZ bytes (one 1-D array per column) -> validated columns."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            columns = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise TrialFileError(f"{source}: not a readable NPZ file ({exc})") from exc
    for name, values in columns.items():
        if values.ndim != 1:
            raise TrialFileError(f"{source}: column {name!r} must be 1-D, not {values.shape}")
    return validate_columns(columns, source)


def read_trial_table(path: Path) -> dict[str, np.ndarray]:
    """A trial table by extension: ``.csv`` or ``.npz``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return read_trial_csv(path)
    if suffix == ".npz":
        return read_trial_npz(path)
    raise TrialFileError(f"{path}: unknown trial table format {suffix!r}; use .csv or .npz")
