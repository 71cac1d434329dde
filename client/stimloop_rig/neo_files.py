"""The acquisition systems' own files through neo (the ``rig`` extra): Plexon ``.plx``,
NeuroExplorer ``.nex``, Blackrock ``.nev`` and whatever else neo reads by its suffix.

What stimloop takes from them: each channel's spike trains (all units of a channel merged:
multi-unit activity) and the event channels (times and labels). neo leaves out a Plexon
spike channel that has no spikes; its name is read from the file's own channel headers
(PlexHeaders: the 7504-byte file header holds the number of spike channels, each 1020-byte
channel header begins with its 32-byte name), so a silent channel still gets its zero counts.
A .nex file has one variable per sorted unit, named by Plexon's convention: the channel's name
and a unit letter (``sig001a``, ``sig001b``, ``sig001U``); units whose names differ only in
that last letter after a digit are one channel (``sig001``), any other name is a channel.
A Blackrock .nev file names a unit's train ``ch<electrode>#<unit>``; its electrodes, silent
ones included, and their labels are read from the file's extended headers (NEV 2.2+: a
336-byte basic header, then 32-byte headers: ``NEUEVWAV`` with the electrode id after the
8-byte tag, ``NEUEVLBL`` with the id and a 16-byte label); spikes classified as noise (unit
255) are left out.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from stimloop_contract.errors import TrialFileError


@dataclass
class EventChannel:
    name: str
    times: np.ndarray  # s
    labels: np.ndarray  # str


@dataclass
class NeoRecording:
    path: Path
    format: str  # neo's name for it: Plexon, NeuroExplorer, Blackrock, ...
    channels: list[str]  # every spike channel, in the file's order
    spikes: dict[str, np.ndarray]  # channel -> spike times (s), sorted
    events: list[EventChannel]
    resolution: float | None = None  # s between two possible spike times, where the file says


def plexon_channel_names(path: Path) -> list[str]:
    """The names of a .plx file's spike channels, from its headers (PlexHeaders layout)."""
    with open(path, "rb") as f:
        head = f.read(7504)
        if len(head) < 7504 or struct.unpack("<I", head[:4])[0] != 0x58454C50:
            raise TrialFileError(f"{path}: not a Plexon .plx file (no PLEX magic number)")
        (count,) = struct.unpack("<i", head[140:144])
        names = []
        for _ in range(max(0, min(count, 4096))):
            names.append(f.read(1020)[:32].split(b"\0")[0].decode("utf8", "replace"))
    return names


UNIT_LETTER = re.compile(r"(?<=\d)[A-Za-z]$")  # sig001a -> sig001: Plexon's unit suffix


def electrode(unit: str) -> str:
    """The channel a .nex unit variable belongs to (module docstring)."""
    return UNIT_LETTER.sub("", unit)


BLACKROCK_NOISE = 255  # the unit number of waveforms classified as noise


def blackrock_electrodes(path: Path) -> dict[int, str]:
    """A .nev file's electrodes (id -> its label, or ``ch<id>`` without one), in the order of
    its extended headers (module docstring)."""
    with open(path, "rb") as f:
        head = f.read(336)
        if len(head) < 336 or head[:8] not in (b"NEURALEV", b"BREVENTS"):
            raise TrialFileError(f"{path}: not a Blackrock .nev file (no NEURALEV tag)")
        (count,) = struct.unpack("<I", head[332:336])
        extended = f.read(32 * min(count, 100_000))
    ids: list[int] = []
    labels: dict[int, str] = {}
    for k in range(len(extended) // 32):
        tag, info = extended[32 * k : 32 * k + 8], extended[32 * k + 8 : 32 * k + 32]
        (number,) = struct.unpack("<H", info[:2])
        if tag == b"NEUEVWAV":
            ids.append(number)
        elif tag == b"NEUEVLBL":
            labels[number] = info[2:18].split(b"\0")[0].decode("utf8", "replace").strip()
    return {n: labels.get(n) or f"ch{n}" for n in ids}


def open_reader(path: Path):
    """neo's reader of ``path``, trying each IO its suffix admits; the first one's error is
    the message when none reads it."""
    try:
        import neo  # type: ignore[import-untyped]
    except ImportError:
        raise TrialFileError(
            f"{path}: reading {path.suffix or 'these'} files needs neo: pip install 'stimloop[rig]'"
        ) from None
    try:
        candidates = neo.io.list_candidate_ios(str(path))
    except (OSError, ValueError):  # a suffix no IO claims
        candidates = []
    if not candidates:
        raise TrialFileError(
            f"{path}: no reader for {path.suffix!r} files; give a CSV, NPZ, NWB or MAT trial "
            "table, an Open Ephys recording folder, or a file neo reads (.plx, .nex, .nev, ...)"
        )
    first: Exception | None = None
    for io in candidates:
        try:
            return io(str(path))
        except Exception as exc:  # neo raises many kinds on a file that is not its format
            first = first or exc
    name = candidates[0].__name__.removesuffix("IO")
    raise TrialFileError(
        f"{path}: the {name} reader could not open it ({type(first).__name__}: {first})"
    )


def read_neo(path: Path) -> NeoRecording:
    """A file neo can read, as spike trains per channel and event channels."""
    path = Path(path)
    reader = open_reader(path)
    fmt = type(reader).__name__.removesuffix("IO")
    try:
        block = reader.read_block(lazy=False)
    except Exception as exc:  # neo raises many kinds on a damaged file
        raise TrialFileError(
            f"{path}: the {fmt} reader could not read it ({type(exc).__name__}: {exc})"
        ) from None
    if len(block.segments) != 1:
        raise TrialFileError(
            f"{path}: {len(block.segments)} segments (recordings paused and resumed?); upload "
            "one segment per file"
        )
    segment = block.segments[0]
    electrodes = blackrock_electrodes(path) if fmt == "Blackrock" else {}
    grouped: dict[str, list[np.ndarray]] = {}
    rates = [getattr(train, "sampling_rate", None) for train in segment.spiketrains]
    known = [float(r.rescale("Hz").magnitude) for r in rates if r is not None]
    resolution = 1.0 / min(known) if known and len(known) == len(rates) else None
    for train in segment.spiketrains:
        name = str(train.name or train.annotations.get("id", "unit"))
        if fmt == "NeuroExplorer":
            name = electrode(name)
        if fmt == "Blackrock":
            if train.annotations.get("unit_id") == BLACKROCK_NOISE:
                continue
            number = int(train.annotations["channel_id"])
            name = electrodes.get(number, f"ch{number}")
        grouped.setdefault(name, []).append(np.asarray(train.times.rescale("s").magnitude))
    spikes = {k: np.sort(np.concatenate(v)) for k, v in grouped.items()}
    channels = list(spikes)
    if fmt in ("Plexon", "Blackrock"):  # neo leaves out the channels without spikes
        channels = plexon_channel_names(path) if fmt == "Plexon" else list(electrodes.values())
        spikes = {name: spikes.get(name, np.zeros(0)) for name in channels}
    events = [
        EventChannel(
            str(e.name),
            np.asarray(e.times.rescale("s").magnitude, np.float64),
            np.asarray(e.labels).astype(str),
        )
        for e in segment.events
    ]
    return NeoRecording(path, fmt, channels, spikes, events, resolution)
