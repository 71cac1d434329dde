"""Trials built while a recording runs, from the events the Open Ephys GUI's Event Broadcaster
publishes (torch-free, no I/O: the follower feeds it messages and sends what it returns).

A message is the broadcaster's JSON dictionary: a TTL event (``event_type`` "ttl", its
``stream``, ``sample_rate``, ``sample_number``, ``line``, ``state``) or a spike (``event_type``
"spike", its ``electrode``, ``sample_rate``, ``sample_number``). The GUI counts TTL lines from 0
in its events and from 1 in a recording's ``states.npy``; here, as on the command line
(``--photodiode``), lines count from 1.

The trials are those the recording's folder gives once it is closed, because they are cut by
the same functions (``recording.code_events``, ``stimulus_onsets``, ``counts_from_spike_times``)
from the events received so far: the TTL word is rebuilt from the line changes (as the folder
reader does without ``full_words.npy``), a code's onset is its photodiode pulse, and a
presentation is decided once its windows have ended (``lag`` seconds after the last event that
could still change it). A spike's electrode is the session's channel of that name, or, under
the Spike Detector's default name ``Electrode N``, the session's N-th channel.

Nothing missing is filled in. A line that changes to the state it already has means the change
between was lost; a dropped connection (``lost``) loses everything in between: each is a gap on
the acquisition clock, and every presentation whose code, pulse or windows touch a gap is named
as missing instead of sent.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from stimloop_contract.errors import TrialFileError
from stimloop_contract.spike_times import counts_from_spike_times

from stimloop_rig.openephys import Events
from stimloop_rig.recording import code_events, stimulus_onsets

DEFAULT_NAME = re.compile(r"^Electrode (\d{1,4})$")  # the Spike Detector's own names


class LiveError(TrialFileError):
    """The broadcast cannot give the session's trials (an unknown code, a second TTL stream,
    an electrode that is no channel of the session): what is wrong and what to do."""


@dataclass(frozen=True)
class Gap:
    """Seconds on the acquisition clock in which events may have been lost, and why."""

    start: float
    end: float
    reason: str

    def touches(self, start: float, end: float) -> bool:
        return self.start <= end and start <= self.end


@dataclass(frozen=True)
class Missing:
    """A presentation that is not sent: its number (1-based), stimulus, onset and why."""

    number: int
    stimulus: str
    time: float
    reason: str


@dataclass
class LiveTrials:
    """The trials of a recording as its events arrive (module docstring).

    ``codes``: code -> stimulus (``codes.csv``); ``channels``: the session's channels in order;
    ``baseline`` and ``response``: the session's windows (s from onset); ``photodiode``: its
    TTL line (1-based) or None (the code times the onset); ``stream``: the TTL stream with the
    codes, or None for the only one; ``lag``: s to wait for late events past a window's end.
    """

    codes: dict[int, str]
    channels: tuple[str, ...]
    baseline: tuple[float, float]
    response: tuple[float, float]
    photodiode: int | None = None
    stream: str | None = None
    max_delay: float = 0.2
    lag: float = 0.5
    # the code stream's line changes so far: sample, line (1-based), rose, the word after
    _samples: list[int] = field(default_factory=list)
    _lines: list[int] = field(default_factory=list)
    _rising: list[bool] = field(default_factory=list)
    _words: list[int] = field(default_factory=list)
    _word: int = 0
    _state: dict[int, tuple[int, float]] = field(default_factory=dict)  # line -> state, time
    _rate: float | None = None
    _spikes: dict[str, list[float]] = field(default_factory=dict)  # channel -> times (s)
    _onsets: list[float] = field(default_factory=list)  # of the decided presentations
    _stimuli: list[str] = field(default_factory=list)
    now: float = -math.inf  # the latest event's time (s)
    gaps: list[Gap] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    decided: int = 0  # presentations decided (sent or missing)
    ignored: int = 0  # messages that were no TTL event or spike of this recording

    def __post_init__(self) -> None:
        self._spikes = {c: [] for c in self.channels}

    # ------------------------------------------------------------------ messages

    def feed(self, message: dict) -> None:
        """One broadcast message (a dictionary); what is neither a TTL event nor a spike with
        numeric fields is counted in ``ignored``."""
        kind = message.get("event_type")
        try:
            rate = float(message["sample_rate"])
            sample = int(message["sample_number"])
        except (KeyError, TypeError, ValueError):
            self.ignored += 1
            return
        if not (math.isfinite(rate) and rate > 0):
            self.ignored += 1
            return
        if kind == "spike":
            self._spike(message, sample / rate)
        elif kind == "ttl":
            self._ttl(message, sample, rate)
        else:
            self.ignored += 1

    def _spike(self, message: dict, time: float) -> None:
        electrode = str(message.get("electrode", ""))
        channel = self.channel_of(electrode)
        self._spikes[channel].append(time)
        self.now = max(self.now, time)

    def channel_of(self, electrode: str) -> str:
        """The session's channel an electrode's spikes count for (module docstring)."""
        if electrode in self._spikes:
            return electrode
        default = DEFAULT_NAME.match(electrode)
        if default and 1 <= int(default.group(1)) <= len(self.channels):
            return self.channels[int(default.group(1)) - 1]
        raise LiveError(
            f"spikes of electrode {electrode!r}, which is no channel of the session "
            f"({', '.join(self.channels[:4])}, ...): name the Spike Detector's electrodes as "
            "the session's channels, or keep its names 'Electrode 1', 'Electrode 2', ... for "
            "the session's channels in order"
        )

    def _ttl(self, message: dict, sample: int, rate: float) -> None:
        stream = str(message.get("stream", ""))
        if self.stream is None:
            self.stream = stream
        if stream != self.stream:
            raise LiveError(
                f"TTL events of two streams ({self.stream!r} and {stream!r}); name the one "
                f"with the stimulus codes: --code-events '{self.stream}'"
            )
        try:
            line, state = int(message["line"]) + 1, int(bool(message["state"]))
        except (KeyError, TypeError, ValueError):
            self.ignored += 1
            return
        if not 1 <= line <= 64:
            self.ignored += 1
            return
        if self._rate is not None and rate != self._rate:
            raise LiveError(
                f"the code stream's sample rate changed from {self._rate:g} to {rate:g} Hz; "
                "follow one acquisition from its start"
            )
        self._rate = rate
        time = sample / rate
        if self._samples and sample < self._samples[-1]:  # out of order: its place is lost
            self.lost(time, self._samples[-1] / rate, "a TTL event arrived out of order")
            return
        last, when = self._state.get(line, (0, -math.inf))
        if state == last:  # the change between was never received
            self.lost(
                when if math.isfinite(when) else time,
                time,
                f"line {line} {'rose' if state else 'fell'} twice: a change between was lost",
            )
        self._state[line] = (state, time)
        bit = 1 << (line - 1)
        self._word = self._word | bit if state else self._word & ~bit
        self._samples.append(sample)
        self._lines.append(line)
        self._rising.append(bool(state))
        self._words.append(self._word)
        self.now = max(self.now, time)

    def lost(self, start: float, end: float, reason: str) -> None:
        """Events between ``start`` and ``end`` (s) may be lost."""
        self.gaps.append(Gap(float(start), float(end), reason))

    # ------------------------------------------------------------------ trials

    def _events(self, complete: bool) -> Events:
        """The code stream's changes; unless ``complete``, only those before the newest
        sample (the other lines of a word set on that sample may still be on their way)."""
        samples = np.array(self._samples, np.int64)
        keep = (
            len(samples)
            if complete or not len(samples)
            else int(np.searchsorted(samples, samples[-1], side="left"))
        )
        return Events(
            self.stream or "",
            self._rate or 0.0,
            samples[:keep],
            np.array(self._lines[:keep], np.int64),
            np.array(self._rising[:keep], bool),
            np.array(self._words[:keep], np.uint64),
        )

    def ready(
        self, closing: bool = False, clock: float | None = None
    ) -> dict[str, np.ndarray] | None:
        """The trial rows of the presentations decided since the last call (None if none):
        those whose windows ended ``lag`` s before the newest event, or before ``clock`` (s,
        the acquisition's time now, when the caller knows it is later); ``closing``: every
        presentation whose windows have ended (the rest are named in ``missing``)."""
        if self._rate is None:
            return None
        now = self.now if clock is None else max(self.now, clock)
        events = self._events(complete=closing)
        samples, values = code_events(events, self.photodiode)
        times = samples / self._rate
        end = max(self.response[1], self.baseline[1])
        wait = self.max_delay + end + (0.0 if closing else self.lag)
        ripe = int(np.searchsorted(times, now - wait, side="right"))
        if ripe <= self.decided:
            if closing:
                self._unfinished(times, values, self.decided)
            return None
        pulses = None
        if self.photodiode is not None:
            pulses = events.samples[(events.lines == self.photodiode) & events.rising] / self._rate
        # a decided presentation's code, pulse and onset never change: only the new are found
        usable = np.zeros(ripe, bool)
        for k in range(self.decided, ripe):
            onset, stimulus, usable[k] = self._onset(times[k], int(values[k]), pulses, k + 1)
            self._onsets.append(onset)
            self._stimuli.append(stimulus)
        onsets, stimuli = np.array(self._onsets), self._stimuli
        new = np.arange(self.decided, ripe)
        for k in range(self.decided, ripe):
            start, stop = onsets[k] + min(self.baseline[0], self.response[0]), onsets[k] + end
            gap = next((g for g in self.gaps if g.touches(min(times[k], start), stop)), None)
            if gap is not None and usable[k]:
                usable[k] = False
                self.missing.append(Missing(k + 1, stimuli[k], float(onsets[k]), gap.reason))
        spikes = {c: np.array(t, np.float64) for c, t in self._spikes.items()}
        columns = counts_from_spike_times(
            spikes, onsets, np.array(stimuli), baseline=self.baseline, response=self.response
        )
        self.decided = ripe
        if closing:
            self._unfinished(times, values, ripe)
        keep = new[usable[new]]
        if not len(keep):
            return None
        rows = (np.arange(len(self.channels))[:, None] * ripe + keep[None, :]).ravel()
        return {k: v[rows] for k, v in columns.items()}

    def _onset(
        self, time: float, code: int, pulses: np.ndarray | None, number: int
    ) -> tuple[float, str, bool]:
        """A code's onset, stimulus, and whether it is usable: a code without a stimulus is
        refused as the folder refuses it; a missing pulse within a gap is a missing trial."""
        try:
            onset, stimuli = stimulus_onsets(
                np.array([time]),
                np.array([code]),
                pulses,
                self.codes,
                self.max_delay,
                "the broadcast",
                f"line {self.photodiode}",
            )
        except TrialFileError as exc:
            gap = next((g for g in self.gaps if g.touches(time, time + self.max_delay)), None)
            if gap is None or code not in self.codes:
                raise LiveError(str(exc)) from None
            self.missing.append(Missing(number, self.codes[code], time, gap.reason))
            return time, self.codes[code], False
        return float(onset[0]), stimuli[0], True

    def _unfinished(self, times: np.ndarray, values: np.ndarray, start: int) -> None:
        """At closing: the presentations whose windows had not ended are missing."""
        for k in range(start, len(times)):
            self.missing.append(
                Missing(
                    k + 1,
                    self.codes.get(int(values[k]), f"code {int(values[k])}"),
                    float(times[k]),
                    "its windows had not ended when the phase was closed",
                )
            )
        self.decided = max(self.decided, len(times))
