"""Trials built from the Event Broadcaster's messages as they arrive: the same rows the
recording's folder gives once it is closed, and what a lost message or a dropped connection
costs named, never filled in."""

from __future__ import annotations

import numpy as np
import pytest
from stimloop_contract.spike_times import PAPER_WINDOWS
from stimloop_rig.live_trials import LiveError, LiveTrials
from stimloop_rig.recording import RecordingSettings, read_codes, read_recording

from tests.support.broadcaster import messages
from tests.support.openephys_files import RATE
from tests.support.recordings import planted_phase

CHANNELS = ("ch01", "ch02", "ch03")
STIMULI = [f"body_{k:04d}" for k in range(40)]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    folder = tmp_path_factory.mktemp("live")
    planned, codes, _ = planted_phase(folder, STIMULI, repeats=2, seed=4)
    settings = RecordingSettings(codes=codes, photodiode=10, channels=CHANNELS, settle=0.0)
    closed = read_recording(folder / "Record Node 101", settings)
    return planned, codes, closed.columns


def live(codes) -> LiveTrials:
    return LiveTrials(
        read_codes(codes),
        CHANNELS,
        PAPER_WINDOWS.baseline,
        PAPER_WINDOWS.response,
        photodiode=10,
    )


def replay(trials: LiveTrials, sent, every: int = 150) -> dict[str, np.ndarray]:
    """Feed the messages, asking for trials every ``every`` messages and at the close;
    the rows channel by channel, as the server orders a closed phase's batches."""
    parts = []
    for k, (_, _, event) in enumerate(sent):
        trials.feed(event)
        if k % every == 0 and (rows := trials.ready()) is not None:
            parts.append(rows)
    if (rows := trials.ready(closing=True)) is not None:
        parts.append(rows)
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort([CHANNELS.index(c) for c in columns["channel"]], kind="stable")
    return {k: v[order] for k, v in columns.items()}


def rows(columns, repeat: bool = True) -> set[tuple]:
    keys = ("stimulus", "channel", "baseline_count", "response_count") + ("repeat",) * repeat
    return set(zip(*(columns[k].tolist() for k in keys)))


def test_the_broadcast_gives_the_rows_of_the_closed_recording(recording):
    planned, codes, closed = recording
    trials = live(codes)
    got = replay(trials, messages(planned, 10, 9))
    assert trials.decided == len(planned.codes) == 80 and not trials.missing
    assert set(got) == set(closed)
    for name in closed:  # the same rows in the same order: the same upload
        np.testing.assert_array_equal(got[name], closed[name], err_msg=name)


def test_a_lost_photodiode_pulse_names_its_trials_missing(recording):
    planned, codes, closed = recording
    sent = messages(planned, 10, 9)
    rises = [k for k, (_, _, e) in enumerate(sent) if e.get("line") == 9 and e["state"] == 1]
    lost = rises[30]  # presentation 31's photodiode rise never arrives
    trials = live(codes)
    got = replay(trials, [m for k, m in enumerate(sent) if k != lost])
    numbers = {m.number for m in trials.missing}
    assert 31 in numbers and len(numbers) <= 3, trials.missing
    assert all("line 10 fell twice" in m.reason for m in trials.missing)
    assert rows(got) < rows(closed)  # nothing else changed, nothing filled in
    assert len(got["stimulus"]) == (80 - len(numbers)) * len(CHANNELS)


def test_a_dropped_connection_is_a_gap_whose_trials_are_missing(recording):
    planned, codes, closed = recording
    sent = messages(planned, 10, 9)
    start, end = planned.onsets[20] / RATE - 0.1, planned.onsets[24] / RATE
    trials = live(codes)
    kept = [m for m in sent if not start <= m[0] / RATE <= end]
    trials_parts = []
    cut = next(k for k, m in enumerate(kept) if m[0] / RATE > end)
    for _, _, event in kept[:cut]:
        trials.feed(event)
    trials.lost(start, kept[cut][0] / RATE, "the broadcaster's connection dropped")
    for _, _, event in kept[cut:]:
        trials.feed(event)
        if (part := trials.ready()) is not None:
            trials_parts.append(part)
    trials_parts.append(trials.ready(closing=True))
    got = {k: np.concatenate([p[k] for p in trials_parts if p is not None]) for k in closed}
    # presentations 21-25 were never received: the gap names them by time, and those whose
    # windows touch its edges are missing; the rest are the recording's (their repeat counts
    # only what was received)
    # (a line cut between its rise and its fall says so too)
    assert trials.decided == 75
    assert "the broadcaster's connection dropped" in [g.reason for g in trials.gaps]
    assert 1 <= len(trials.missing) <= 2
    assert len(got["stimulus"]) == (75 - len(trials.missing)) * len(CHANNELS)
    assert rows(got, repeat=False) < rows(closed, repeat=False)


def test_what_the_broadcast_cannot_give_is_refused_in_words(recording):
    planned, codes, _ = recording
    ttl = next(e for _, _, e in messages(planned, 10, 9) if e["event_type"] == "ttl")
    spike = next(e for _, _, e in messages(planned, 10, 9) if e["event_type"] == "spike")
    trials = live(codes)
    for junk in ({}, {"event_type": "ttl"}, {**ttl, "sample_rate": "fast"}, {**ttl, "line": 99}):
        trials.feed(junk)
    trials.feed({**ttl, "sample_rate": float("nan")})
    assert trials.ignored == 5
    with pytest.raises(LiveError, match="no channel of the session"):
        trials.feed({**spike, "electrode": "Tetrode 7"})
    trials.feed(ttl)
    with pytest.raises(LiveError, match="--code-events 'Rhythm Data'"):
        trials.feed({**ttl, "stream": "NI-DAQmx"})
    unknown = live(codes)
    unknown.codes.pop(planned.codes[0])
    with pytest.raises(LiveError, match="has no stimulus in the codes file"):
        replay(unknown, messages(planned, 10, 9))


class Server:
    """What a follower asks of the service: the session, what it holds, the batches."""

    def __init__(self) -> None:
        from stimloop_contract.sessions import SessionConfig

        self.config = SessionConfig.model_construct(channels=list(CHANNELS), windows=PAPER_WINDOWS)
        self.batches: list[dict] = []

    def session(self, sid):
        return type("Info", (), {"config": self.config})()

    def live(self, sid, phase):
        from stimloop_contract.trials import LiveStatus

        return LiveStatus(phase="phase1", batches=0, rows=0, closed=False, channels=[])

    def send_batch(self, sid, phase, number, columns):
        assert number == len(self.batches) + 1
        self.batches.append(columns)

    def close_phase(self, sid, phase, batches, recording_start=None):
        from stimloop_contract.system import Accepted

        return Accepted(status="queued")


class Listener:
    """The broadcast as the follower receives it: the given items, then nothing."""

    def __init__(self, items) -> None:
        self.items = list(items)

    def receive(self, wait):
        items, self.items = self.items[:500], self.items[500:]
        return items

    def close(self):
        pass


def test_a_broadcaster_that_never_comes_back_loses_everything_after_its_drop(recording):
    from stimloop_rig.broadcast import Dropped
    from stimloop_rig.follow import Follower, FollowSettings

    planned, codes, closed = recording
    sent = [event for _, _, event in messages(planned, 10, 9)]
    cut = len(sent) // 2
    server = Server()
    follower = Follower(
        server, "0123456789ab", 1, FollowSettings("127.0.0.1", codes=codes, photodiode=10)
    )
    follower.listener.close()
    follower.listener = Listener([Dropped(True), *sent[:cut], Dropped(False)])
    for _ in range(4):
        follower.step(wait=0)
    accepted = follower.finish()
    assert accepted.status == "queued" and server.batches
    dropped = sent[cut - 1]["sample_number"] / RATE
    missing = follower.live.missing
    assert missing and all(m.time > dropped - 1.0 for m in missing)
    assert "the broadcaster dropped and never came back" in [g.reason for g in follower.live.gaps]
    assert {m.reason for m in missing} <= {
        "the broadcaster dropped and never came back",
        "its windows had not ended when the phase was closed",
    }
    got = {k: np.concatenate([b[k] for b in server.batches]) for k in server.batches[0]}
    assert rows(got) < rows(closed)  # what was sent is the recording's, nothing filled in
