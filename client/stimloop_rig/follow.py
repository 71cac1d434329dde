"""Following a phase while it is recorded: the Event Broadcaster's events to trials
(``live_trials``), sent to the server in numbered batches, and the phase closed when it is over,
which starts its job at once (no export, no upload step).

Batches are numbered from 1 and kept until the server acknowledges them; one the server does not
answer is sent again, under the same number, after a pause that doubles up to 10 s (the server
holds each number once, so a batch is never counted twice). A broadcaster that drops is
reconnected by ZeroMQ; the time it was away is a gap, and the trials it touches are named as
missing. The phase ends when the expected presentations are in, when ``until`` seconds have
passed, or when the operator says so (Enter, or Ctrl-C).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from stimloop_contract.errors import ServiceTimeoutError, ServiceUnreachableError
from stimloop_contract.service_client import ServiceClient
from stimloop_contract.system import Accepted

from stimloop_rig import broadcast
from stimloop_rig.broadcast import Broadcast, Dropped
from stimloop_rig.live_trials import LiveError, LiveTrials
from stimloop_rig.recording import read_codes, summarise

MAX_PAUSE = 10.0  # s between two tries of a server that does not answer, at most


@dataclass(frozen=True)
class FollowSettings:
    """How a phase is followed: the broadcaster's address, the codes file, the photodiode's
    TTL line (1-based) or None, the code stream, when to stop (``trials`` presentations,
    ``until`` s), how often batches go (``every`` s), whether notes go to the GUI, and when
    the recording started (``recording_start``, given by the operator)."""

    host: str
    port: int = broadcast.BROADCAST_PORT
    codes: Path | None = None
    photodiode: int | None = None
    code_events: str | None = None
    max_delay: float = 0.2
    lag: float = 0.5
    trials: int | None = None
    until: float | None = None
    every: float = 1.0
    notes: bool = True
    http_port: int = broadcast.HTTP_PORT
    recording_start: datetime | None = None  # sent when the phase is closed


@dataclass
class Follower:
    """One phase followed: ``step`` receives, builds and sends; ``finish`` closes the
    phase. ``live`` holds the trials and what is missing; ``rows`` what was sent."""

    client: ServiceClient
    session: str
    phase: int
    settings: FollowSettings
    live: LiveTrials = field(init=False)
    listener: Broadcast = field(init=False)
    pending: list[dict[str, np.ndarray]] = field(default_factory=list)
    acknowledged: int = 0  # batches the server holds
    sent_rows: list[dict[str, np.ndarray]] = field(default_factory=list)
    server: str = "answering"
    noted: bool | None = None  # did the GUI take the phase's notes (None: not asked)
    dropped_at: float | None = None  # the last event's time when the broadcaster dropped
    reconnected: bool = True
    _retry_at: float = 0.0
    _pause: float = 0.5
    _last_batch: float = field(default_factory=time.monotonic)
    _last_event: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.monotonic)
    _table: tuple[int, list[dict[str, object]]] = (-1, [])  # batches it counts, its rows

    def __post_init__(self) -> None:
        if self.settings.codes is None:
            raise LiveError("following a recording needs --codes codes.csv")
        info = self.client.session(self.session)
        held = self.client.live(self.session, self.phase)
        if held.closed:
            raise LiveError(f"phase {self.phase} of session {self.session} is already stored")
        if held.batches:
            raise LiveError(
                f"the server already holds {held.batches} batches of phase {self.phase} from an "
                "earlier follow, and the trials between that one and now are only in the "
                "recording: when it is closed, upload it as a folder (stimloop-rig "
                f"phase{self.phase} SESSION FOLDER --codes ...)"
            )
        config = info.config
        self.live = LiveTrials(
            codes=read_codes(self.settings.codes),
            channels=tuple(config.channels),
            baseline=tuple(config.windows.baseline),  # type: ignore[arg-type]
            response=tuple(config.windows.response),  # type: ignore[arg-type]
            photodiode=self.settings.photodiode,
            stream=self.settings.code_events,
            max_delay=self.settings.max_delay,
            lag=self.settings.lag,
        )
        self.listener = Broadcast(self.settings.host, self.settings.port)
        self.noted = self._note("start")

    def _note(self, what: str) -> bool | None:
        if not self.settings.notes:
            return None
        return broadcast.note(
            self.settings.host,
            f"stimloop session {self.session} phase {self.phase} {what}",
            self.settings.http_port,
        )

    # ------------------------------------------------------------------ the loop

    def step(self, wait: float = 0.1) -> None:
        """Receive for up to ``wait`` s, make a batch when one is due, send what waits."""
        for item in self.listener.receive(wait):
            if isinstance(item, Dropped):
                if not item.up and self.dropped_at is None:
                    self.dropped_at = self.live.now
                self.reconnected = item.up
                continue
            if self.dropped_at is not None:
                first = _time_of(item)
                if first is not None and not self.reconnected:
                    # received before the drop was seen: the gap starts after it
                    self.dropped_at = max(self.dropped_at, first)
                elif first is not None:  # the first event after the drop ends the gap
                    self.live.lost(self.dropped_at, first, "the broadcaster's connection dropped")
                    self.dropped_at = None
            self.live.feed(item)
            self._last_event = time.monotonic()
        if time.monotonic() - self._last_batch >= self.settings.every:
            self._batch(closing=False)
        self._send()

    def _batch(self, closing: bool) -> None:
        """The trials decided since the last batch, as the next batch. The acquisition's
        clock runs on between events: it is the last event's time plus the time since it
        arrived. While the broadcaster is away nothing is decided (its gap is not known)."""
        self._last_batch = time.monotonic()
        if self.dropped_at is not None and not closing:
            return
        clock = self.live.now + (time.monotonic() - self._last_event)
        rows = self.live.ready(closing=closing, clock=clock)
        if rows is not None:
            self.pending.append(rows)

    def _send(self) -> None:
        """Send the waiting batches in order; a server that does not answer is tried again
        later (the pause doubles up to ``MAX_PAUSE``); its refusals are raised."""
        while self.pending and time.monotonic() >= self._retry_at:
            number = self.acknowledged + 1
            try:
                self.client.send_batch(self.session, self.phase, number, self.pending[0])
            except (ServiceUnreachableError, ServiceTimeoutError) as exc:
                self.server = f"not answering ({exc.detail}); {len(self.pending)} batches wait"
                self._retry_at = time.monotonic() + self._pause
                self._pause = min(2 * self._pause, MAX_PAUSE)
                return
            self.server, self._pause = "answering", 0.5
            self.acknowledged = number
            self.sent_rows.append(self.pending.pop(0))

    def done(self) -> str | None:
        """Why the phase is over, or None while it goes on."""
        if self.settings.trials is not None and self.live.decided >= self.settings.trials:
            return f"{self.settings.trials} presentations are in"
        if self.settings.until is not None and self.elapsed() >= self.settings.until:
            return f"{self.settings.until:g} s have passed"
        return None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def finish(self, patience: float = 60.0) -> Accepted:
        """Close the phase: the last trials decided and sent (the server is given
        ``patience`` s to answer), then the server asked to make them the phase's upload. A
        broadcaster still away loses everything from its drop on."""
        if self.dropped_at is not None:
            self.live.lost(self.dropped_at, math.inf, "the broadcaster dropped and never came back")
        self._batch(closing=True)
        deadline = time.monotonic() + patience
        while self.pending:
            self._send()
            if self.pending:
                if time.monotonic() > deadline:
                    raise LiveError(
                        f"{len(self.pending)} batches could not be sent: the server is "
                        f"{self.server}; upload the recording as a folder when it is closed"
                    )
                time.sleep(min(0.5, max(0.0, self._retry_at - time.monotonic())))
        if not self.acknowledged:
            raise LiveError(
                "no trials were received from the broadcaster: check that the Event "
                "Broadcaster sends JSON on that port and that the recording is running"
            )
        accepted = self.client.close_phase(
            self.session, self.phase, self.acknowledged, self.settings.recording_start
        )
        self._note("end")
        return accepted

    def close(self) -> None:
        self.listener.close()

    # ------------------------------------------------------------------ what is shown

    def channels(self) -> list[dict[str, object]]:
        """Per channel what was sent: trials, repeats per stimulus, mean net rate (worked
        out again only when a batch was acknowledged since the table was last shown)."""
        if self._table[0] == self.acknowledged:
            return self._table[1]
        about: list[dict[str, object]] = [{"channel": c} for c in self.live.channels]
        if not self.sent_rows:
            rows = [{**a, "trials": 0, "repeats_min": 0, "repeats_max": 0} for a in about]
        else:
            columns = {k: np.concatenate([r[k] for r in self.sent_rows]) for k in self.sent_rows[0]}
            rows = summarise(columns, about, self.live.baseline, self.live.response)
        self._table = (self.acknowledged, rows)
        return rows


def _time_of(message: dict) -> float | None:
    try:
        return int(message["sample_number"]) / float(message["sample_rate"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def follow(
    follower: Follower,
    stop: Callable[[], bool],
    show: Callable[[Follower], None],
    every: float = 0.25,
) -> tuple[str, Accepted]:
    """Run ``follower`` until the phase is over or ``stop()``, calling ``show`` about every
    ``every`` s; then close the phase. Why it ended, and the server's answer."""
    shown = 0.0
    try:
        while True:
            follower.step()
            why = follower.done() or ("the operator closed it" if stop() else None)
            if time.monotonic() - shown >= every or why:
                show(follower)
                shown = time.monotonic()
            if why:
                break
    except KeyboardInterrupt:
        why = "the operator closed it (Ctrl-C)"
    accepted = follower.finish()
    show(follower)
    return why, accepted
