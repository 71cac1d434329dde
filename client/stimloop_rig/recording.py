"""From an acquisition system's recording to trials: event codes name the stimuli, a
photodiode line (or the code itself) times their onsets, and the session's windows cut each
channel's spikes (sorted, or threshold crossings of the raw signal: ``mua``) into counts.

Codes: in an Open Ephys recording a TTL word set by the stimulus computer (a code event is
the word changing to a non-zero value, the photodiode's line masked out); in a file neo reads
(Plexon, ...) the non-zero labels of the strobed event channel, else of Blackrock's
``digital_input_port`` (whose return to 0 after a code is no code); ``code_events`` names
another.
``codes.csv`` (columns ``code`` and ``stimulus``) says which image each code shows. With
``photodiode`` (Open Ephys: a TTL line, 1-based; neo: an event channel's name), a stimulus's
onset is the photodiode's first pulse within ``max_delay`` (0.2 s) of its code, the paper's
timing; without it, the code event itself. Everything is refused with the file, the
time and what to fix: a code without a stimulus, a code without its photodiode pulse, event
and signal clocks that disagree, and a recording still being written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
from stimloop_contract.errors import TrialFileError
from stimloop_contract.spike_times import PAPER_WINDOWS, SpikeTrains
from stimloop_contract.trial_tables import read_csv_text, reading

from stimloop_rig.mua import MuaSettings, threshold_crossings
from stimloop_rig.neo_files import read_neo
from stimloop_rig.openephys import Events, Recording, read_openephys


@dataclass(frozen=True)
class RecordingSettings:
    codes: Path | None = None
    photodiode: int | str | None = None  # Open Ephys: its TTL line (1-based); else its channel
    code_events: str | None = None  # the codes' event channel (default: Strobed, digital port)
    max_delay: float = 0.2  # s from a code to its photodiode pulse
    spikes: Literal["auto", "sorted", "mua"] = "auto"  # auto: sorted spikes where present
    channels: tuple[str, ...] = ()  # the session's names of the recorded channels, in order
    mua: MuaSettings = field(default_factory=MuaSettings)
    settle: float = 1.0  # s between two looks at the files' sizes


@dataclass
class RecordedTrials:
    """The trial columns, the presentation order, per channel what was found, and the spike
    trains the columns were counted from (what the rig uploads)."""

    columns: dict[str, np.ndarray]
    sequence: list[str]
    channels: list[dict[str, object]]
    source: str
    spikes: SpikeTrains
    started: datetime | None = None  # when the onsets' clock was at 0, where the files say


TABLES = (".csv", ".npz", ".nwb", ".mat")  # the trial files of ``readers`` and ``matfiles``
# the acquisition systems' files neo reads that the README names (and others neo knows)
RECORDING_SUFFIXES = frozenset(
    [
        ".oebin",
        ".plx",
        ".pl2",
        ".nex",
        ".nex5",
        ".nev",
        ".ns1",
        ".ns2",
        ".ns3",
        ".ns4",
        ".ns5",
        ".ns6",
        ".smr",
        ".smrx",
        ".abf",
        ".rhd",
        ".rhs",
        ".bin",
        ".tev",
        ".tsq",
        ".tbk",
        ".ncs",
        ".nse",
        ".ntt",
        ".nvt",
        ".edf",
        ".bdf",
        ".vhdr",
        ".xdat",
        ".dat",
    ]
)


def is_recording(path: Path) -> bool:
    """An acquisition system's recording (an Open Ephys binary folder, or a file for neo:
    .plx, .nex, .nev, ...) rather than a trial file."""
    path = Path(path)
    return path.is_dir() or path.suffix.lower() not in TABLES


def read_codes(path: Path) -> dict[int, str]:
    """``codes.csv``: a ``code`` and a ``stimulus`` column, each code once (as Excel writes
    it too: ``read_csv_text``); at most 4 MiB, for a few thousand codes."""
    with reading(path):
        header, table, _ = read_csv_text(path, limit=4 * 2**20)
    if not {"code", "stimulus"} <= set(header) or not table:
        raise TrialFileError(
            f"{path}: needs the columns code and stimulus and one row per code; found "
            f"{', '.join(header)}"
        )
    rows = [dict(zip(header, row)) for row in table]
    codes: dict[int, str] = {}
    for k, row in enumerate(rows, start=2):
        try:
            code = int(row["code"])
        except (TypeError, ValueError):
            raise TrialFileError(
                f"{path}: row {k}: code {row['code']!r} is not a whole number"
            ) from None
        if code <= 0:
            raise TrialFileError(
                f"{path}: row {k}: code {code}: 0 is the event port at rest, not a code; number "
                "the stimuli from 1"
            )
        if code in codes:
            raise TrialFileError(f"{path}: row {k}: code {code} is given twice")
        if not row["stimulus"]:
            raise TrialFileError(f"{path}: row {k}: code {code} has no stimulus")
        codes[code] = row["stimulus"]
    return codes


def code_events(events: Events, photodiode: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Samples and values of the code events of a TTL stream: the word (less the photodiode's
    line) after the last change on a sample, where it changes to a non-zero value."""
    mask = ~np.uint64(0)
    if photodiode is not None:
        mask = ~np.uint64(1 << (photodiode - 1))
    # the word after the last change on each sample: lines set together form one word
    last = np.flatnonzero(np.diff(events.samples, append=np.iinfo(np.int64).max) != 0)
    samples, word = events.samples[last], events.words[last] & mask
    changed = np.flatnonzero((word != 0) & (word != np.concatenate([[np.uint64(0)], word[:-1]])))
    return samples[changed], word[changed].astype(np.int64)


def stimulus_onsets(
    code_times: np.ndarray,
    code_values: np.ndarray,
    pulses: np.ndarray | None,
    codes: dict[int, str],
    max_delay: float,
    source: str,
    pulse_name: str = "",
) -> tuple[np.ndarray, list[str]]:
    """Onsets (s) and stimulus ids of the code events (module docstring): ``code_times`` (s)
    and ``code_values``; ``pulses``: the photodiode's rise times (s), or None."""
    if len(code_values) == 0:
        raise TrialFileError(f"{source}: no event codes")
    unknown = [(t, c) for t, c in zip(code_times, code_values) if int(c) not in codes]
    if unknown:
        t, c = unknown[0]
        raise TrialFileError(
            f"{source}: code {int(c)} at {t:.3f} s (and {len(unknown) - 1} more events) "
            "has no stimulus in the codes file; add it, or check the event channel or lines"
        )
    stimuli = [codes[int(c)] for c in code_values]
    if pulses is None:
        return np.asarray(code_times, np.float64), stimuli
    pulses = np.sort(np.asarray(pulses, np.float64))
    onsets = np.empty(len(code_times), np.float64)
    for k, t in enumerate(code_times):
        at = np.searchsorted(pulses, t, side="left")
        if at == len(pulses) or pulses[at] - t > max_delay:
            raise TrialFileError(
                f"{source}: code {int(code_values[k])} ({stimuli[k]}) at {t:.3f} s has no "
                f"photodiode pulse on {pulse_name} within {max_delay * 1000:g} ms; check the "
                "photodiode's line and its cable, or upload without --photodiode"
            )
        onsets[k] = pulses[at]
    return onsets, stimuli


def spike_times(
    recording: Recording,
    settings: RecordingSettings,
    source: str,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, np.ndarray], list[dict[str, object]], float]:
    """Per channel its spike times (s, on the events' clock) and what was found: sorted spikes
    where the recording has them (unless ``spikes`` is ``mua``), else threshold crossings of
    the first continuous stream; and their resolution (s, one sample)."""
    use_sorted = settings.spikes == "sorted" or (
        settings.spikes == "auto" and bool(recording.spikes)
    )
    if use_sorted:
        if not recording.spikes:
            raise TrialFileError(f"{source}: no spikes/ folder: use --spikes mua")
        rate = recording.spike_rate or recording.continuous[0].sample_rate
        resolution = 1.0 / rate
        names = list(recording.spikes)
        times = [recording.spikes[n] / rate for n in names]
        about: list[dict[str, object]] = [
            {"spikes": "sorted", "rate_hz": None, "threshold_uv": None} for _ in names
        ]
    else:
        if not recording.continuous:
            raise TrialFileError(f"{source}: no continuous data to find spikes in")
        stream = recording.continuous[0]
        found = threshold_crossings(
            stream.data, stream.sample_rate, stream.bit_volts, settings.mua, progress
        )
        names = stream.channel_names
        resolution = 1.0 / stream.sample_rate
        times = [(stream.first_sample + s) / stream.sample_rate for s in found.samples]
        about = [
            {"spikes": "threshold crossings", "rate_hz": float(r), "threshold_uv": float(t)}
            for r, t in zip(found.rates(), found.threshold_uv)
        ]
    names = session_names(names, settings.channels, source)
    about = [{"channel": n, **a} for n, a in zip(names, about)]
    return dict(zip(names, times)), about, resolution


def session_names(names: list[str], given: tuple[str, ...], source: str) -> list[str]:
    """The session's names of a recording's channels (``--channels``, in its order), or the
    recording's own when none are given."""
    if not given:
        return list(names)
    if len(given) != len(names):
        raise TrialFileError(
            f"{source}: {len(given)} channel names for the recording's {len(names)} spike "
            f"channels ({', '.join(names[:4])}, ...)"
        )
    return list(given)


def read_recording(
    path: Path,
    settings: RecordingSettings,
    baseline: tuple[float, float] = PAPER_WINDOWS.baseline,
    response: tuple[float, float] = PAPER_WINDOWS.response,
    progress: Callable[[int, int], None] | None = None,
) -> RecordedTrials:
    """The trials of an Open Ephys binary recording, or of a file neo reads (Plexon, ...);
    every failure a ``TrialFileError`` naming the recording (``reading``)."""
    with reading(path):
        return _read_recording(Path(path), settings, baseline, response, progress)


def _read_recording(
    path: Path,
    settings: RecordingSettings,
    baseline: tuple[float, float],
    response: tuple[float, float],
    progress: Callable[[int, int], None] | None,
) -> RecordedTrials:
    if not path.exists():
        raise TrialFileError(f"{path}: no such file or folder; check the path (a typo?)")
    if settings.codes is None:
        if path.is_file() and path.suffix.lower() not in RECORDING_SUFFIXES:
            raise TrialFileError(
                f"{path}: {path.suffix or 'a name without a suffix'} is not a trial table "
                f"({', '.join(TABLES)}) nor a recording stimloop knows; name a CSV table "
                "'.csv', or give a recording (an Open Ephys folder, .plx, .nex, .nev, ...) "
                "with --codes codes.csv"
            )
        raise TrialFileError(
            f"{path}: a recording needs --codes codes.csv (which stimulus each event code shows)"
        )
    codes = read_codes(settings.codes)
    if Path(path).is_dir() or Path(path).name == "structure.oebin":
        onsets, stimuli, times, about, source, resolution, started = _openephys(
            path, settings, codes, progress
        )
    else:
        onsets, stimuli, times, about, source, resolution, started = _neo(path, settings, codes)
    spikes = SpikeTrains(times, np.asarray(onsets, dtype=np.float64), np.array(stimuli), resolution)
    columns = spikes.columns(baseline=baseline, response=response)
    about = summarise(columns, about, baseline, response)
    return RecordedTrials(columns, stimuli, about, source, spikes, started)


def _openephys(path: Path, settings: RecordingSettings, codes: dict[int, str], progress):
    recording = read_openephys(path, settings.settle)
    source = str(recording.path)
    if not recording.events:
        raise TrialFileError(f"{source}: no TTL events: the stimulus codes are missing")
    streams = [e.name for e in recording.events]
    if len(streams) > 1 or settings.code_events is not None:
        if settings.code_events not in streams:
            raise TrialFileError(
                f"{source}: TTL events of {len(streams)} streams ({', '.join(streams)}); "
                f"name the one with the stimulus codes: --code-events '{streams[0]}'"
                if settings.code_events is None
                else f"{source}: no TTL stream {settings.code_events!r}; the streams are "
                f"{', '.join(streams)}"
            )
        recording = recording.stream(settings.code_events)
    events = recording.events[0]
    signal_rate = recording.continuous[0].sample_rate if recording.continuous else None
    if signal_rate is not None and events.sample_rate and events.sample_rate != signal_rate:
        raise TrialFileError(
            f"{source}: the events are sampled at {events.sample_rate:g} Hz but the signal at "
            f"{signal_rate:g} Hz; both must share the acquisition's clock"
        )
    rate = events.sample_rate or signal_rate or 0.0
    line = None if settings.photodiode is None else _line(settings.photodiode, source)
    samples, values = code_events(events, line)
    pulses = None
    if line is not None:
        pulses = events.samples[(events.lines == line) & events.rising] / rate
    onsets, stimuli = stimulus_onsets(
        samples / rate, values, pulses, codes, settings.max_delay, source, f"line {line}"
    )
    times, about, resolution = spike_times(recording, settings, source, progress)
    started = recording.started(events.name, rate)
    return onsets, stimuli, times, about, source, resolution, started


def _line(photodiode: int | str, source: str) -> int:
    try:
        line = int(photodiode)
    except ValueError:
        raise TrialFileError(
            f"{source}: --photodiode names a TTL line of an Open Ephys recording (1, 2, ...), "
            f"not {photodiode!r}"
        ) from None
    if not 1 <= line <= 64:
        raise TrialFileError(f"{source}: TTL lines are numbered 1 to 64, not {line}")
    return line


def _neo(path: Path, settings: RecordingSettings, codes: dict[int, str]):
    found = read_neo(path)
    source = f"{path} ({found.format})"
    by_name = {e.name: e for e in found.events}
    listed = ", ".join(repr(n) for n in by_name) or "none"
    strobed = [e.name for e in found.events if "strob" in e.name.lower()] or [
        e.name
        for e in found.events
        if e.name == "digital_input_port"  # Blackrock's codes
    ]
    name = settings.code_events or (strobed[0] if len(strobed) == 1 else None)
    if name is None or name not in by_name:
        raise TrialFileError(
            f"{source}: name the event channel of the stimulus codes with --code-events "
            f"(its event channels: {listed})"
        )
    channel = by_name[name]
    try:
        values = np.array([int(float(v)) for v in channel.labels], np.int64)
    except ValueError:
        raise TrialFileError(f"{source}: the events of {name!r} are not numeric codes") from None
    coded = values != 0  # a digital port going back to 0 ends a code (Blackrock); not a code
    code_times, values = channel.times[coded], values[coded]
    pulses = None
    if settings.photodiode is not None:
        pd = str(settings.photodiode)
        if pd not in by_name:
            raise TrialFileError(
                f"{source}: no event channel {pd!r} for the photodiode (its event channels: "
                f"{listed})"
            )
        pulses = by_name[pd].times
    onsets, stimuli = stimulus_onsets(
        code_times, values, pulses, codes, settings.max_delay, source, repr(settings.photodiode)
    )
    times = [found.spikes[n] for n in found.channels]
    names = session_names(found.channels, settings.channels, source)
    about: list[dict[str, object]] = [
        {"channel": n, "spikes": f"sorted ({found.format})", "rate_hz": None, "threshold_uv": None}
        for n in names
    ]
    return onsets, stimuli, dict(zip(names, times)), about, source, found.resolution, None


def summarise(
    columns: dict[str, np.ndarray],
    about: list[dict[str, object]],
    baseline: tuple[float, float],
    response: tuple[float, float],
) -> list[dict[str, object]]:
    """Per channel: trials, repeats per stimulus (fewest, most), mean net rate (spikes/s),
    and how its spikes were found."""
    rows = []
    net = columns["response_count"] / (response[1] - response[0]) - columns["baseline_count"] / (
        baseline[1] - baseline[0]
    )
    for item in about:
        mine = columns["channel"] == item["channel"]
        _, repeats = np.unique(columns["stimulus"][mine], return_counts=True)
        rows.append(
            {
                **item,
                "trials": int(mine.sum()),
                "repeats_min": int(repeats.min()) if len(repeats) else 0,
                "repeats_max": int(repeats.max()) if len(repeats) else 0,
                "mean_net_rate": float(net[mine].mean()) if mine.any() else float("nan"),
            }
        )
    return rows


def check_sequence(recorded: list[str], expected: list[str], source: str) -> None:
    """The recorded presentation order must be the list's sequence (phases two and three)."""
    if recorded == expected:
        return
    for k, (got, want) in enumerate(zip(recorded, expected)):
        if got != want:
            raise TrialFileError(
                f"{source}: presentation {k + 1} showed {got!r} where the list's sequence has "
                f"{want!r}; record the sequence `stimloop-rig phase-two-list --sequence` wrote, "
                "or pass --any-order"
            )
    raise TrialFileError(
        f"{source}: {len(recorded)} presentations recorded, the list's sequence has "
        f"{len(expected)}; record the whole sequence, or pass --any-order"
    )
