"""The acquisition systems' own files through neo (the ``rig`` extra): Plexon ``.plx``,
NeuroExplorer ``.nex``, Blackrock ``.nev`` and whatever else ``neo.io.get_io`` reads.

What stimloop takes from them: each channel's spike trains (all units of a channel merged:
multi-unit activity) and the event channels (times and labels). neo leaves out a Plexon
spike channel that has no spikes; its name is read from the file's own channel headers
(PlexHeaders: the 7504-byte file header holds the number of spike channels, each 1020-byte
channel header begins with its 32-byte name), so a silent channel still gets its zero counts.
A .nex file has one variable per sorted unit, named by Plexon's convention: the channel's name
and a unit letter (``sig001a``, ``sig001b``, ``sig001U``); units whose names differ only in
that last letter after a digit are one channel (``sig001``), any other name is a channel.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stimloop_rig.readers import TrialFileError


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


def read_neo(path: Path) -> NeoRecording:
    """A file neo can read, as spike trains per channel and event channels."""
    path = Path(path)
    try:
        import neo  # type: ignore[import-untyped]
    except ImportError:
        raise TrialFileError(
            f"{path}: reading {path.suffix or 'these'} files needs neo: pip install 'stimloop[rig]'"
        ) from None
    try:
        reader = neo.io.get_io(str(path))
    except (OSError, ValueError) as exc:
        raise TrialFileError(
            f"{path}: no reader for {path.suffix!r} files ({exc}); give a CSV, NPZ, NWB or MAT "
            "trial table, or an Open Ephys recording folder"
        ) from None
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
    grouped: dict[str, list[np.ndarray]] = {}
    for train in segment.spiketrains:
        name = str(train.name or train.annotations.get("id", "unit"))
        if fmt == "NeuroExplorer":
            name = electrode(name)
        grouped.setdefault(name, []).append(np.asarray(train.times.rescale("s").magnitude))
    spikes = {k: np.sort(np.concatenate(v)) for k, v in grouped.items()}
    channels = list(spikes)
    if fmt == "Plexon":
        channels = plexon_channel_names(path)
        spikes = {name: spikes.get(name, np.zeros(0)) for name in channels}
    events = [
        EventChannel(
            str(e.name),
            np.asarray(e.times.rescale("s").magnitude, np.float64),
            np.asarray(e.labels).astype(str),
        )
        for e in segment.events
    ]
    return NeoRecording(path, fmt, channels, spikes, events)
