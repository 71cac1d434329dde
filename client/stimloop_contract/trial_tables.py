"""Trial tables, one row per trial: their columns, their checks, and CSV / NPZ files of them.

The server checks an upload and the rig client a file with these same functions.

Columns: ``stimulus`` (id), ``channel`` (name), optional ``repeat``, optional ``onset`` (the
presentation's onset in seconds from the start of its recording, >= 0: what puts the trials on
the session's timeline in its NWB file), and either ``rate`` (the net rate in spikes/s) or
``baseline_count`` and ``response_count`` (spikes in the baseline and response windows). Every
reader returns plain numpy columns and raises ``TrialFileError`` naming the file, the row and
the column at fault.
"""

from __future__ import annotations

import csv
import io
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from stimloop_contract.errors import TrialFileError

ID_COLUMNS = ("stimulus", "channel")
COUNT_COLUMNS = ("baseline_count", "response_count")
OPTIONAL_NUMBERS = ("repeat", "onset")


@contextmanager
def reading(source: object) -> Iterator[None]:
    """Whatever goes wrong while reading ``source`` ends as one ``TrialFileError`` naming it:
    a file no reader here expected (damaged, truncated, written by another program) gives the
    operator one line, never a traceback (``--debug`` still shows the cause)."""
    try:
        yield
    except TrialFileError:
        raise
    except FileNotFoundError as exc:
        raise TrialFileError(
            f"{exc.filename or source}: no such file or folder; check the path (a typo? a "
            "drive not mounted?)"
        ) from exc
    except IsADirectoryError as exc:
        raise TrialFileError(f"{source}: a folder, where a file was expected") from exc
    except PermissionError as exc:
        raise TrialFileError(f"{source}: not allowed to read it (check its permissions)") from exc
    except OSError as exc:
        raise TrialFileError(f"{source}: cannot be read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise TrialFileError(
            f"{source}: not UTF-8 text (byte {exc.start}); save it as 'CSV UTF-8' (Excel) or "
            "UTF-8 text"
        ) from exc
    except RecursionError as exc:
        raise TrialFileError(f"{source}: nested too deep to be a rig file") from exc
    except MemoryError as exc:
        raise TrialFileError(f"{source}: too large to read into memory") from exc
    except (
        ValueError,
        LookupError,
        TypeError,
        AttributeError,
        ArithmeticError,
        EOFError,
        csv.Error,
        struct.error,
        zlib.error,
        zipfile.BadZipFile,
    ) as exc:
        raise TrialFileError(
            f"{source}: could not be read ({type(exc).__name__}: {str(exc)[:200]}); is it the "
            "kind of file its name says, written whole?"
        ) from exc


def read_csv_text(path: Path, limit: int = 512 * 2**20) -> tuple[list[str], list[list[str]], str]:
    """A CSV file as Excel and other programs write it (``split_csv``), up to ``limit``
    bytes."""
    path = Path(path)
    if path.stat().st_size > limit:
        raise TrialFileError(f"{path}: over {limit // 2**20} MiB, larger than a rig table")
    return split_csv(path.read_bytes().decode("utf-8-sig"), str(path))


def split_csv(text: str, source: str) -> tuple[list[str], list[list[str]], str]:
    """CSV text as Excel and other programs write it: UTF-8 with or without a byte-order
    mark, separated by commas, semicolons or tabs (the header line decides); header names
    stripped and lower-cased. (header, rows, separator); a row whose field count differs is
    refused, naming ``source`` and the row."""
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise TrialFileError(f"{source}: empty file or no header row")
    first = lines[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    try:
        table = list(csv.reader(lines, delimiter=delimiter))
    except csv.Error as exc:
        raise TrialFileError(f"{source}: malformed CSV ({exc})") from exc
    header = [name.strip().lower() for name in table[0]]
    rows = []
    for k, row in enumerate(table[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise TrialFileError(
                f"{source}: row {k - 1} (line {k}) has {len(row)} fields, the header "
                f"{len(header)}; separate "
                f"the fields with {delimiter!r} as the header does"
            )
        rows.append([value.strip() for value in row])
    return header, rows, delimiter


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
    numeric += [name for name in OPTIONAL_NUMBERS if name in columns]
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
    if "onset" in out and (out["onset"] < 0).any():
        bad = int(np.flatnonzero(out["onset"] < 0)[0])
        raise TrialFileError(
            f"{source}: row {bad + 1}, column 'onset' is negative; onsets are seconds from the "
            "start of the recording"
        )
    for name in COUNT_COLUMNS:
        if name in out and ((out[name] < 0).any() or (out[name] % 1 != 0).any()):
            raise TrialFileError(f"{source}: column {name!r} must hold whole, non-negative counts")
    empty = np.flatnonzero((out["stimulus"] == "") | (out["channel"] == ""))
    if len(empty):
        raise TrialFileError(f"{source}: row {int(empty[0]) + 1} has an empty stimulus or channel")
    if "repeat" in out:
        check_unique_repeats(out, source)
    return out


class DuplicateTrialsError(TrialFileError):
    """The same (stimulus, channel, repeat) twice."""


def check_unique_repeats(out: dict[str, np.ndarray], source: str) -> None:
    """With a ``repeat`` column, each (stimulus, channel, repeat) is one trial: a second row
    with the same three (same rate or not) is refused, naming the first pair of rows."""
    keys = np.rec.fromarrays([out["stimulus"], out["channel"], out["repeat"]])
    order = np.argsort(keys, kind="stable")
    same = np.flatnonzero(keys[order][1:] == keys[order][:-1])
    if len(same):
        first, second = sorted((int(order[same[0]]), int(order[same[0] + 1])))
        raise DuplicateTrialsError(
            f"{source}: rows {first + 1} and {second + 1} are the same trial (stimulus "
            f"{str(out['stimulus'][first])!r}, channel {str(out['channel'][first])!r}, repeat "
            f"{int(out['repeat'][first])}); each (stimulus, channel, repeat) may appear once"
        )


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def read_trial_csv(path: Path) -> dict[str, np.ndarray]:
    """A CSV trial table with a header row (``read_csv_text``, ``csv_columns``)."""
    path = Path(path)
    with reading(path):
        header, rows, separator = read_csv_text(path)
    return csv_columns(header, rows, separator, str(path))


def parse_trial_csv(data: bytes, source: str, limit: int = 512 * 2**20) -> dict[str, np.ndarray]:
    """A CSV trial table's bytes (an upload named ``source``), as ``read_trial_csv``."""
    if len(data) > limit:
        raise TrialFileError(f"{source}: over {limit // 2**20} MiB, larger than a rig table")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TrialFileError(
            f"{source}: not UTF-8 text at byte {exc.start}; is it a CSV file? Save it as CSV UTF-8"
        ) from None
    return csv_columns(*split_csv(text, source), source)


def csv_columns(
    header: list[str], rows: list[list[str]], separator: str, source: str
) -> dict[str, np.ndarray]:
    """A CSV table's checked trial columns (``validate_columns``); in a semicolon-separated
    file, numbers may carry a decimal comma (``12,5``), as Excel writes them in many locales."""
    if len(set(header)) != len(header):
        raise TrialFileError(f"{source}: a column is named twice in the header {header}")
    columns: dict[str, list[str]] = {
        name: [row[k] for row in rows] for k, name in enumerate(header)
    }
    if separator == ";":
        for name in ("rate", *OPTIONAL_NUMBERS, *COUNT_COLUMNS):
            if name in columns:
                columns[name] = [v.replace(",", ".") for v in columns[name]]
    return validate_columns({k: np.asarray(v) for k, v in columns.items()}, source)


def read_trial_npz(path: Path) -> dict[str, np.ndarray]:
    """An NPZ trial table: one 1-D array per column."""
    return parse_trial_npz(Path(path).read_bytes(), str(path))


MAX_NPZ_BYTES = 2 * 2**30  # all columns, decompressed
NPZ_FLOOR = 256 * 2**20  # always accepted decompressed, however well the table compressed
NPZ_RATIO = 64  # beyond the floor, the columns may expand at most this much over the file


def check_npz_members(data: bytes, source: str, max_bytes: int = MAX_NPZ_BYTES) -> None:
    """Before anything is decompressed: every member is a plain 1-D numeric or string array
    (``.npy``), its header's dtype and shape give its size, and the sizes add up to at most
    ``max_bytes``. Refusals name the member."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise TrialFileError(f"{source}: not a readable NPZ file ({exc})") from None
    total = 0
    max_bytes = min(max_bytes, max(NPZ_FLOOR, NPZ_RATIO * len(data)))
    for info in archive.infolist():
        name = info.filename
        if not name.endswith(".npy"):
            raise TrialFileError(f"{source}: member {name[:100]!r} is not an array (.npy)")
        try:
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                reader = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = reader(f)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise TrialFileError(
                f"{source}: member {name[:100]!r} is not a NumPy array ({exc})"
            ) from None
        column = name[:-4]
        if dtype.hasobject or dtype.kind not in "biufUS":
            raise TrialFileError(
                f"{source}: column {column!r} has dtype {dtype}; only numbers and strings"
            )
        if len(shape) != 1:
            raise TrialFileError(f"{source}: column {column!r} must be 1-D, not {tuple(shape)}")
        size = int(shape[0]) * dtype.itemsize
        total += size
        if size > info.file_size or total > max_bytes:
            raise TrialFileError(
                f"{source}: column {column!r} declares {shape[0]} rows ({size} bytes) "
                + (
                    "but its member holds fewer"
                    if size > info.file_size
                    else f"and the columns together pass the limit of {max_bytes} bytes "
                    "(a decompression bomb?)"
                )
            )


def parse_trial_npz(
    data: bytes, source: str = "NPZ", max_bytes: int = MAX_NPZ_BYTES
) -> dict[str, np.ndarray]:
    """NPZ bytes (one 1-D array per column) -> validated columns (``npz_arrays``)."""
    return validate_columns(npz_arrays(data, source, max_bytes), source)


def npz_arrays(data: bytes, source: str, max_bytes: int = MAX_NPZ_BYTES) -> dict[str, np.ndarray]:
    """NPZ bytes' arrays by name; members are checked from their headers before any is
    decompressed (``check_npz_members``)."""
    check_npz_members(data, source, max_bytes)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise TrialFileError(f"{source}: not a readable NPZ file ({exc})") from exc


def read_trial_table(path: Path) -> dict[str, np.ndarray]:
    """A trial table by extension: ``.csv`` or ``.npz``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return read_trial_csv(path)
    if suffix == ".npz":
        return read_trial_npz(path)
    raise TrialFileError(f"{path}: unknown trial table format {suffix!r}; use .csv or .npz")
