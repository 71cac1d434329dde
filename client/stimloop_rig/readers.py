"""Readers for the rig's trial tables: CSV or NPZ, one row per trial (torch-free).

Columns: ``stimulus`` (id), ``channel`` (name), optional ``repeat``, and either ``rate`` (the
net rate in spikes/s) or ``baseline_count`` and ``response_count`` (spikes in the baseline and
response windows). Every reader returns plain numpy columns and raises ``TrialFileError``
naming the file, the row and the column at fault.
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
from stimloop.science.configs import Windows

from stimloop_rig.errors import TrialFileError  # the readers' error (light, for the CLI)

PAPER_WINDOWS = Windows()  # A.2's baseline and response windows, written once in the science

ID_COLUMNS = ("stimulus", "channel")
COUNT_COLUMNS = ("baseline_count", "response_count")


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
    """A CSV file as Excel and other programs write it: UTF-8 with or without a byte-order
    mark, separated by commas, semicolons or tabs (the header line decides); header names
    stripped and lower-cased. (header, rows, separator); a row whose field count differs is
    refused."""
    path = Path(path)
    if path.stat().st_size > limit:
        raise TrialFileError(f"{path}: over {limit // 2**20} MiB, larger than a rig table")
    text = path.read_bytes().decode("utf-8-sig")
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise TrialFileError(f"{path}: empty file or no header row")
    first = lines[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    try:
        table = list(csv.reader(lines, delimiter=delimiter))
    except csv.Error as exc:
        raise TrialFileError(f"{path}: malformed CSV ({exc})") from exc
    header = [name.strip().lower() for name in table[0]]
    rows = []
    for k, row in enumerate(table[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise TrialFileError(
                f"{path}: row {k - 1} (line {k}) has {len(row)} fields, the header "
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
    """A CSV trial table with a header row (``read_csv_text``); in a semicolon-separated
    file, numbers may carry a decimal comma (``12,5``), as Excel writes them in many locales."""
    path = Path(path)
    with reading(path):
        header, rows, separator = read_csv_text(path)
    if len(set(header)) != len(header):
        raise TrialFileError(f"{path}: a column is named twice in the header {header}")
    columns: dict[str, list[str]] = {
        name: [row[k] for row in rows] for k, name in enumerate(header)
    }
    if separator == ";":
        for name in ("rate", "repeat", "baseline_count", "response_count"):
            if name in columns:
                columns[name] = [v.replace(",", ".") for v in columns[name]]
    return validate_columns({k: np.asarray(v) for k, v in columns.items()}, str(path))


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
    """NPZ bytes (one 1-D array per column) -> validated columns; members are checked from
    their headers before any is decompressed (``check_npz_members``)."""
    check_npz_members(data, source, max_bytes)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            columns = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise TrialFileError(f"{source}: not a readable NPZ file ({exc})") from exc
    return validate_columns(columns, source)


def read_trial_table(path: Path) -> dict[str, np.ndarray]:
    """A trial table by extension: ``.csv`` or ``.npz``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return read_trial_csv(path)
    if suffix == ".npz":
        return read_trial_npz(path)
    raise TrialFileError(f"{path}: unknown trial table format {suffix!r}; use .csv or .npz")


# ------------------------------------------------------------------ spike times


def counts_from_spike_times(
    spike_times: dict[str, np.ndarray],
    onsets: np.ndarray,
    stimuli: np.ndarray,
    baseline: tuple[float, float] = PAPER_WINDOWS.baseline,
    response: tuple[float, float] = PAPER_WINDOWS.response,
) -> dict[str, np.ndarray]:
    """Cut each channel's spike train (s) around every stimulus onset into window counts.

    Windows are half-open ``[start, end)`` in seconds relative to onset (paper A.2). Returns
    trial columns: stimulus, channel, repeat, baseline_count, response_count.
    """
    onsets = np.asarray(onsets, dtype=np.float64)
    stimuli = np.asarray(stimuli).astype(str)
    if len(onsets) != len(stimuli):
        raise TrialFileError(f"{len(onsets)} onsets but {len(stimuli)} stimulus labels")
    repeat = np.zeros(len(stimuli), dtype=np.int64)
    seen: dict[str, int] = {}
    for i, s in enumerate(stimuli):
        repeat[i] = seen.get(s, 0)
        seen[s] = repeat[i] + 1
    cols: dict[str, list] = {
        k: [] for k in ("stimulus", "channel", "repeat", "baseline_count", "response_count")
    }
    for channel, times in spike_times.items():
        t = np.sort(np.asarray(times, dtype=np.float64))
        if not np.isfinite(t).all():
            raise TrialFileError(f"channel {channel!r} has NaN or infinite spike times")

        cols["stimulus"] += list(stimuli)
        cols["channel"] += [channel] * len(stimuli)
        cols["repeat"] += list(repeat)
        cols["baseline_count"] += list(_window_counts(t, onsets, baseline))
        cols["response_count"] += list(_window_counts(t, onsets, response))
    return validate_columns({k: np.asarray(v) for k, v in cols.items()}, "spike times")


def _window_counts(
    times: np.ndarray, onsets: np.ndarray, window: tuple[float, float]
) -> np.ndarray:
    """Spikes of sorted ``times`` in ``[onset + start, onset + end)`` for every onset."""
    lo = np.searchsorted(times, onsets + window[0], side="left")
    hi = np.searchsorted(times, onsets + window[1], side="left")
    return hi - lo


def read_spike_npz(path: Path, **windows: tuple[float, float]) -> dict[str, np.ndarray]:
    """Spike times per channel plus stimulus-onset events, from an NPZ with arrays
    ``spikes_<channel>`` (s), ``event_times`` (s), ``event_codes`` (int), and ``code_ids``
    (``code_ids[code]`` is the stimulus id shown for that code)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise TrialFileError(f"{path}: not a readable NPZ file ({exc})") from exc
    for key in ("event_times", "event_codes", "code_ids"):
        if key not in arrays:
            raise TrialFileError(f"{path}: missing array {key!r}")
    spikes = {k.removeprefix("spikes_"): v for k, v in arrays.items() if k.startswith("spikes_")}
    if not spikes:
        raise TrialFileError(f"{path}: no spikes_<channel> arrays")
    codes = arrays["event_codes"].astype(np.int64)
    ids = arrays["code_ids"].astype(str)
    if codes.min(initial=0) < 0 or codes.max(initial=0) >= len(ids):
        bad = codes[(codes < 0) | (codes >= len(ids))][:5]
        raise TrialFileError(f"{path}: event codes {bad.tolist()} have no entry in code_ids")
    return counts_from_spike_times(spikes, arrays["event_times"], ids[codes], **windows)


def read_nwb(
    path: Path, stimulus_column: str = "stimulus", **windows: tuple[float, float]
) -> dict[str, np.ndarray]:
    """An NWB file (the ``nwb`` extra): the Units table's spike times (channel = the unit's
    ``channel`` column if present, else its id) and the trials table's start times and
    ``stimulus_column``."""
    try:
        from pynwb import NWBHDF5IO
    except ImportError:
        raise TrialFileError(
            "reading NWB needs the nwb extra: pip install 'stimloop[nwb]'"
        ) from None
    try:
        with NWBHDF5IO(str(path), "r") as io_:
            nwb = io_.read()
            if nwb.units is None or nwb.trials is None:
                raise TrialFileError(f"{path}: needs a Units table and a trials table")
            units = nwb.units.to_dataframe()
            trials = nwb.trials.to_dataframe()
    except TrialFileError:
        raise
    except Exception as exc:
        raise TrialFileError(
            f"{path}: not a readable NWB file ({type(exc).__name__}: {exc})"
        ) from exc
    if stimulus_column not in trials:
        raise TrialFileError(
            f"{path}: the trials table has no {stimulus_column!r} column; "
            f"it has {list(trials.columns)}"
        )
    names = units["channel"] if "channel" in units.columns else units.index.astype(str)
    spikes = {str(n): np.asarray(t) for n, t in zip(names, units["spike_times"])}
    return counts_from_spike_times(
        spikes, trials["start_time"].to_numpy(), trials[stimulus_column].to_numpy(), **windows
    )


def read_trials(path: Path, **windows: tuple[float, float]) -> dict[str, np.ndarray]:
    """Any supported rig file: ``.nwb``; an NPZ of spike times (``event_times`` inside) or of
    a trial table; a MATLAB ``.mat`` trial table (``matfiles``); a CSV trial table. Every
    failure is a ``TrialFileError`` naming the file (``reading``)."""
    with reading(path):
        return _read_trials(Path(path), **windows)


def _read_trials(path: Path, **windows: tuple[float, float]) -> dict[str, np.ndarray]:
    if path.suffix.lower() == ".mat":
        from stimloop_rig.matfiles import read_trial_mat

        return read_trial_mat(path)
    if path.suffix.lower() == ".nwb":
        return read_nwb(path, "stimulus", **windows)
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                spike_file = "event_times" in data.files
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise TrialFileError(f"{path}: not a readable NPZ file ({exc})") from exc
        return read_spike_npz(path, **windows) if spike_file else read_trial_npz(path)
    return read_trial_table(path)
