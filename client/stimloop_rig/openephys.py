"""An Open Ephys recording in its binary format (GUI 0.6 and later), read by its published
layout (numpy only, torch-free).

A recording folder holds ``structure.oebin`` (JSON: the continuous, event and spike streams
with their folders, sample rates and channels, as the GUI writes it and as the schema that
open-ephys-python-tools ships, ``oebin_schema.json``, names them: a continuous or event
entry's folder is ``folder_name`` and its channels' ``channel_name``; a spike entry's folder is
``folder`` and its channels are ``source_channels[].name``) and::

    continuous/<stream>/continuous.dat   int16, [samples, channels] row-major; x bit_volts = uV
    continuous/<stream>/sample_numbers.npy   int64 [samples]
    events/<stream>/TTL/sample_numbers.npy   int64, one per line change
    events/<stream>/TTL/states.npy           int16: +line when a line rises, -line when it falls
    events/<stream>/TTL/full_words.npy       uint64: the word of all lines after the change
    spikes/<detector>/<electrode>/sample_numbers.npy, electrode_indices.npy, clusters.npy:
                                             the Spike Detector's (or sorted) spikes

Sample numbers count from the acquisition's start, so events and the continuous data share
one clock per stream. ``sync_messages.txt`` says when the recording started: the computer's
time (``Software Time (milliseconds since midnight Jan 1st 1970 UTC): <ms>``) and each
stream's sample number then (``Start Time for <processor> (<id>) - <stream> @ <rate> Hz:
<sample>``); GUIs before 0.6 wrote another layout without the UTC time, read as no start.
The continuous data are read in pieces when asked for, never whole. Where the TTL words are
missing they are rebuilt from the line states (the lines that change on one sample form one
word). Every folder and file must lie inside the recording, and none
may be a symbolic link.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from stimloop_contract.errors import TrialFileError


class SampleFile:
    """``continuous.dat`` as ``[samples, channels]`` int16 whose slices are read from the file
    when asked for (not memory-mapped: mapped pages of a long recording would count against
    the process's memory as the file is read)."""

    def __init__(self, path: Path, channels: int) -> None:
        self.path, self.channels = path, channels
        self.shape = (path.stat().st_size // (2 * channels), channels)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise ValueError("read contiguous samples")
        count = max(0, stop - start) * self.channels
        block = np.fromfile(self.path, "<i2", count=count, offset=2 * start * self.channels)
        return block.reshape(-1, self.channels)


@dataclass
class Continuous:
    """One continuous stream: ``data`` ``[samples, channels]`` int16, read on demand."""

    name: str
    sample_rate: float
    channel_names: list[str]
    bit_volts: np.ndarray  # [channels] uV per count
    first_sample: int
    data: SampleFile


@dataclass
class Events:
    """One TTL stream: per line change its sample, its line (1-based), whether it rose, and
    the word of all lines after it."""

    name: str
    sample_rate: float
    samples: np.ndarray  # int64 [n]
    lines: np.ndarray  # int [n]
    rising: np.ndarray  # bool [n]
    words: np.ndarray  # uint64 [n]


@dataclass
class Recording:
    path: Path
    continuous: list[Continuous]
    events: list[Events]
    spikes: dict[str, np.ndarray]  # channel name -> spike sample numbers (sorted)
    spike_rate: float | None  # the spikes' sample rate
    spike_streams: dict[str, str] = field(default_factory=dict)  # channel name -> its stream
    sync: SyncMessages | None = None  # when the recording started (sync_messages.txt)

    def started(self, stream: str, rate: float) -> datetime | None:
        """When sample 0 of ``stream`` (at ``rate``) was, on the computer's UTC clock: the
        recording's start less its start sample's time; None without the GUI's messages."""
        return None if self.sync is None else self.sync.zero(stream, rate)

    def stream(self, name: str) -> Recording:
        """The recording narrowed to one stream (its TTL events, continuous data and
        spikes): sample numbers count on each stream's own clock, so streams never mix."""
        return Recording(
            self.path,
            [c for c in self.continuous if c.name == name],
            [e for e in self.events if e.name == name],
            {k: v for k, v in self.spikes.items() if self.spike_streams.get(k) == name},
            self.spike_rate,
            {k: v for k, v in self.spike_streams.items() if v == name},
            self.sync,
        )


SOFTWARE_TIME = re.compile(
    r"^Software Time \(milliseconds since midnight Jan 1st 1970 UTC\):\s*(\d{1,15})\s*$"
)
START_TIME = re.compile(r"^Start Time for (.*) @ (\d+(?:\.\d+)?) Hz:\s*(\d{1,18})\s*$")


@dataclass(frozen=True)
class SyncMessages:
    """``sync_messages.txt``: the computer's UTC time when the recording started (ms since
    1970) and, per stream (``<processor> (<id>) - <stream>``), its rate and sample then."""

    software_ms: int
    starts: list[tuple[str, float, int]]

    def zero(self, stream: str, rate: float) -> datetime | None:
        """The UTC time of sample 0 on ``stream``'s clock: its own start line, else the one
        line at its rate; None when neither picks one."""
        mine = [s for s in self.starts if s[0].endswith(f" - {stream}") and s[1] == rate]
        mine = mine or [s for s in self.starts if s[1] == rate]
        if len({sample for _, _, sample in mine}) != 1:
            return None
        start = datetime.fromtimestamp(self.software_ms / 1000, UTC)
        return start - timedelta(seconds=mine[0][2] / rate)


def read_sync_messages(root: Path) -> SyncMessages | None:
    """The recording's ``sync_messages.txt`` (its first 64 KiB: it holds a few lines), or
    None where it is missing, a link, or not the layout of GUI 0.6 and later."""
    path = root / "sync_messages.txt"
    if path.is_symlink() or not path.is_file():
        return None
    with open(path, "rb") as f:
        text = f.read(64 * 2**10).decode("utf-8", "replace")
    software: int | None = None
    starts: list[tuple[str, float, int]] = []
    for line in text.splitlines():
        if m := SOFTWARE_TIME.match(line.strip()):
            software = int(m.group(1))
        elif m := START_TIME.match(line.strip()):
            starts.append((m.group(1), float(m.group(2)), int(m.group(3))))
    return None if software is None else SyncMessages(software, starts)


def find_oebin(path: Path) -> Path:
    """The recording's ``structure.oebin``: ``path`` itself, in it, or the one below it."""
    path = Path(path)
    if path.is_file() and path.name == "structure.oebin":
        return path
    if (path / "structure.oebin").is_file():
        return path / "structure.oebin"
    found = sorted(path.rglob("structure.oebin")) if path.is_dir() else []
    if len(found) == 1:
        return found[0]
    if not found:
        raise TrialFileError(
            f"{path}: no structure.oebin: not an Open Ephys recording in the binary format "
            "(record with the Binary format, or export the trials as a CSV table)"
        )
    names = ", ".join(str(p.parent.relative_to(path)) for p in found[:5])
    raise TrialFileError(f"{path}: holds {len(found)} recordings ({names}); name one of them")


def check_settled(paths: list[Path], wait: float, source: str) -> None:
    """Refuse a recording whose files still grow: two looks ``wait`` seconds apart."""
    if wait <= 0:
        return
    before = {p: p.stat().st_size for p in paths if p.exists()}
    time.sleep(wait)
    grown = [p for p, size in before.items() if p.stat().st_size != size]
    if grown:
        raise TrialFileError(
            f"{source}: {grown[0].name} grew in {wait:g} s: the recording is still being "
            "written; stop the recording (or wait for the GUI to close the files) and try again"
        )


def read_openephys(path: Path, settle: float = 1.0) -> Recording:
    """The recording at or below ``path`` (``find_oebin``), after checking its files no
    longer grow (``settle`` seconds apart; 0 skips the check)."""
    oebin = find_oebin(path)
    root = oebin.parent
    source = str(root)
    if oebin.is_symlink():
        raise TrialFileError(f"{oebin}: a symbolic link; copy the recording itself")
    if oebin.stat().st_size > 16 * 2**20:
        raise TrialFileError(f"{oebin}: over 16 MiB, not a structure.oebin the GUI writes")
    try:
        structure = json.loads(oebin.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise TrialFileError(f"{oebin}: not readable JSON ({str(exc)[:200]})") from None
    if not isinstance(structure, dict) or not all(
        isinstance(structure.get(k, []), list) for k in ("continuous", "events", "spikes")
    ):
        raise TrialFileError(
            f"{oebin}: not the GUI's layout (an object with lists of continuous, events and "
            "spikes entries)"
        )
    files = [*root.glob("continuous/*/continuous.dat"), *root.glob("events/*/TTL/*.npy")]
    check_settled(files, settle, source)
    continuous = [_continuous(root, s, source) for s in structure.get("continuous", [])]
    events = [
        _events(root, s, source)
        for s in structure.get("events", [])
        if "TTL" in str(_entry(s, "folder_name", "events", source))
    ]
    spikes, spike_rate, spike_streams = _spikes(root, structure.get("spikes", []), source)
    sync = read_sync_messages(root)
    return Recording(root, continuous, events, spikes, spike_rate, spike_streams, sync)


def _entry(stream: object, key: str, kind: str, source: str) -> object:
    """``stream[key]`` of a ``kind`` entry of structure.oebin, refused by name when absent."""
    if not isinstance(stream, dict) or key not in stream:
        raise TrialFileError(
            f"{source}: structure.oebin has a {kind} entry without {key!r}; the file is damaged "
            "or not written by the Open Ephys GUI (0.6 or later)"
        )
    return stream[key]


def _inside(root: Path, folder: object, source: str) -> Path:
    """A stream's folder, which must lie inside the recording (no ``..``, no absolute path,
    no symbolic link on the way)."""
    if not isinstance(folder, str):
        raise TrialFileError(f"{source}: structure.oebin names a folder that is not text")
    unresolved = root / folder
    path = unresolved.resolve()
    if not path.is_relative_to(root.resolve()):
        raise TrialFileError(f"{source}: structure.oebin names a folder outside it: {folder!r}")
    _no_link(root, unresolved, source)
    return path


def _no_link(root: Path, path: Path, source: str) -> None:
    """Refuse ``path`` if it, or a folder between ``root`` and it, is a symbolic link."""
    here = path
    while here != root and here != here.parent:
        if here.is_symlink():
            raise TrialFileError(
                f"{source}: {here.relative_to(root)} is a symbolic link; copy the recording "
                "itself, not links to its files"
            )
        here = here.parent


def _load(path: Path, source: str) -> np.ndarray:
    if path.is_symlink():
        raise TrialFileError(
            f"{source}: {path.name} is a symbolic link; copy the recording itself, not links "
            "to its files"
        )
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise TrialFileError(f"{source}: {path.name} is not a readable array ({exc})") from None


def _continuous(root: Path, stream: dict, source: str) -> Continuous:
    name = str(_entry(stream, "folder_name", "continuous", source))
    folder = _inside(root, "continuous/" + name, source)
    channels = stream.get("channels", [])
    n = int(stream.get("num_channels", len(channels)))
    dat = folder / "continuous.dat"
    if dat.is_symlink():
        raise TrialFileError(
            f"{source}: continuous.dat is a symbolic link; copy the recording itself, not "
            "links to its files"
        )
    if not dat.is_file():
        raise TrialFileError(f"{source}: {dat.relative_to(root)} is missing")
    size = dat.stat().st_size
    if n <= 0 or size % (2 * n):
        raise TrialFileError(
            f"{source}: {dat.relative_to(root)} holds {size} bytes, not a whole number of "
            f"samples of {n} int16 channels"
        )
    data = SampleFile(dat, n)
    first = 0
    if (folder / "sample_numbers.npy").is_file():
        numbers = _load(folder / "sample_numbers.npy", source)
        if len(numbers) != len(data):
            raise TrialFileError(
                f"{source}: {len(numbers)} sample numbers for {len(data)} samples in {name}, "
                "so the recording is still open: stop it in the GUI (or wait until it closes "
                "its files), then upload again"
            )
        first = int(numbers[0]) if len(numbers) else 0
    names = [c.get("channel_name", f"CH{k + 1}") for k, c in enumerate(channels)] or [
        f"CH{k + 1}" for k in range(n)
    ]
    volts = np.array([float(c.get("bit_volts", 1.0)) for c in channels] or [1.0] * n)
    return Continuous(
        str(stream.get("stream_name", name)).strip("/"),
        float(_entry(stream, "sample_rate", "continuous", source)),  # type: ignore[arg-type]
        names,
        volts,
        first,
        data,
    )


def _events(root: Path, stream: dict, source: str) -> Events:
    name = str(_entry(stream, "folder_name", "events", source))
    folder = _inside(root, "events/" + name, source)
    samples = np.asarray(_load(folder / "sample_numbers.npy", source), np.int64)
    states = np.asarray(_load(folder / "states.npy", source), np.int64)
    if len(samples) != len(states):
        raise TrialFileError(f"{source}: {len(samples)} event samples for {len(states)} states")
    words_path = folder / "full_words.npy"
    if words_path.is_file():
        words = np.asarray(_load(words_path, source), np.uint64)
    else:  # rebuild the word from the line changes
        bad = np.flatnonzero((states == 0) | (np.abs(states) > 64))
        if len(bad):
            raise TrialFileError(
                f"{source}: states.npy of {name} holds {int(states[bad[0]])} at event "
                f"{int(bad[0])}; TTL lines are numbered 1 to 64 (+ rising, - falling), and "
                "without full_words.npy the codes cannot be rebuilt: copy the whole TTL folder"
            )
        words = np.zeros(len(states), np.uint64)
        word = 0
        for k, state in enumerate(states):
            bit = 1 << (abs(int(state)) - 1)
            word = word | bit if state > 0 else word & ~bit
            words[k] = word
    return Events(
        str(stream.get("stream_name", name)).strip("/"),
        float(stream.get("sample_rate", 0.0)),
        samples,
        np.abs(states),
        states > 0,
        words,
    )


def _spikes(
    root: Path, streams: list[dict], source: str
) -> tuple[dict[str, np.ndarray], float | None, dict[str, str]]:
    """Spike samples per channel of the spike streams: a single electrode by its channel's
    name, a stereotrode or tetrode by the electrode's name."""
    out: dict[str, list[np.ndarray]] = {}
    of_stream: dict[str, str] = {}
    rate = None
    for stream in streams:
        folder_name = str(_entry(stream, "folder", "spikes", source))
        folder = _inside(root, "spikes/" + folder_name, source)
        samples = np.asarray(_load(folder / "sample_numbers.npy", source), np.int64)
        channels = _entry(stream, "source_channels", "spikes", source)
        if not isinstance(channels, list):
            raise TrialFileError(f"{source}: structure.oebin: source_channels must be a list")
        names = [str(_entry(c, "name", "spike channel", source)) for c in channels]
        name = names[0] if len(names) == 1 else str(stream.get("name", folder_name))
        out.setdefault(name.strip("/"), []).append(samples)
        of_stream[name.strip("/")] = str(stream.get("stream_name", ""))
        rate = float(stream.get("sample_rate", rate or 0.0)) or rate
    return {k: np.sort(np.concatenate(v)) for k, v in out.items()}, rate, of_stream
