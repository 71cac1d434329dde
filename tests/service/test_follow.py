"""A phase followed live: a stand-in Event Broadcaster (real ZeroMQ, the plugin's JSON)
replays a planted recording at 10x real time to `stimloop-rig follow`'s follower, which sends
numbered batches to the service and closes the phase. The stored trials are the folder's; the
batches are idempotent and ordered; a dropped broadcaster, a lost message and a server that
does not answer for a while are survived, and what they cost is named."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
from stimloop.sessions.uploads import digest
from stimloop_rig.follow import FollowSettings, follow
from stimloop_rig.recording import RecordingSettings, read_recording
from stimloop_rig.rig_client import RigClient

from tests.support.broadcaster import StandIn, messages
from tests.support.processes import free_port
from tests.support.recordings import planted_phase
from tests.support.service import is_problem, new_session

CHANNELS = ["ch01", "ch02", "ch03"]
FIT = {"split": [28, 6, 6], "epochs": 5}


def rig_client(service, transport=None) -> RigClient:
    token = service.rig["Authorization"].split()[1]
    return RigClient(
        "http://testserver",
        token,
        transport=transport or service.client._transport,
        backoff=0.01,
        retry_budget=0.5,
    )


def bodies_of(service, sid) -> list[str]:
    preferred = service.client.get(f"/v1/sessions/{sid}", headers=service.rig).json()
    set_id = preferred["config"]["preferred_set"]
    return service.client.get(f"/v1/stimulus-sets/{set_id}", headers=service.rig).json()["ids"]


def batch(stimuli, channel="ch01", repeat=0):
    n = len(stimuli)
    return {
        "stimulus": list(stimuli),
        "channel": [channel] * n,
        "repeat": [repeat] * n,
        "baseline_count": [1] * n,
        "response_count": [3] * n,
    }


def test_batches_are_held_once_in_order_and_closing_uploads_them(service):
    sid = new_session(service, "fb", 21, 40, channels=CHANNELS, fit=FIT)
    ids = bodies_of(service, sid)
    put = lambda n, body: service.client.put(  # noqa: E731
        f"/v1/sessions/{sid}/phase1/batches/{n}", headers=service.rig, json=body
    )
    first = put(1, batch(ids[:5]))
    assert first.status_code == 200 and first.json()["repeated"] is False
    again = put(1, batch(ids[:5]))  # a retry whose answer was lost
    assert again.json()["repeated"] is True and again.json()["batches"] == 1
    assert "already held with other trials" in is_problem(put(1, batch(ids[5:9])), 409)["detail"]
    assert "arrived before batch 2" in is_problem(put(3, batch(ids[9:12])), 409)["detail"]
    assert "not in the preferred set" in is_problem(put(2, batch(["nope"])), 422)["detail"]
    assert (
        "channels are not in the session"
        in is_problem(put(2, batch(ids[5:9], channel="ch99")), 422)["detail"]
    )
    huge = service.client.put(
        f"/v1/sessions/{sid}/phase1/batches/2",
        headers={**service.rig, "content-type": "application/json"},
        content=b"[" + b"0," * 2**20 + b"0]",
    )
    assert "STIMLOOP_MAX_JSON_BYTES" in is_problem(huge, 413)["detail"]
    assert put(2, batch(ids[5:40], channel="ch02")).json()["rows"] == 40
    live = service.client.get(f"/v1/sessions/{sid}/phase1/live", headers=service.analyst).json()
    assert live["batches"] == 2 and not live["closed"]
    assert [c["trials"] for c in live["channels"]] == [5, 35, 0]
    assert live["channels"][0]["mean_net_rate"] == pytest.approx(3 / 0.2 - 1 / 0.1)

    start = "2026-12-06T14:03:00+01:00"
    close = lambda n, when=start: service.client.post(  # noqa: E731
        f"/v1/sessions/{sid}/phase1/close",
        headers=service.rig,
        json={"batches": n, "recording_start": when},
    )
    assert "send batches 3 to 3" in is_problem(close(3), 409)["detail"]
    assert "timezone" in is_problem(close(2, "2026-12-06T14:03:00"), 422)["detail"]
    assert service.client.get(f"/v1/sessions/{sid}", headers=service.rig).json()["uploads"] == {}
    closed = close(2)
    assert closed.status_code == 202 and closed.json()["job"]["kind"] == "fit"
    assert close(2).json()["job"]["id"] == closed.json()["job"]["id"]  # closing again: the same
    stored = service.client.get(f"/v1/sessions/{sid}", headers=service.rig).json()
    assert stored["uploads"]["phase1"]["trials"] == 40 and stored["state"] == "phase1_received"
    assert stored["uploads"]["phase1"]["recording_start"] == start
    assert "is closed" in is_problem(put(3, batch(ids[:2], repeat=1)), 409)["detail"]
    assert (
        "no phase-two list yet"
        in is_problem(
            service.client.put(
                f"/v1/sessions/{sid}/phase2/batches/1", headers=service.rig, json=batch(ids[:2])
            ),
            409,
        )["detail"]
    )
    assert (
        service.client.put(
            f"/v1/sessions/{sid}/phase1/batches/3", headers=service.analyst, json=batch(ids[:2])
        ).status_code
        == 403
    )


def followed(client, sid, folder, planned, codes, port, until_sent=False, **standin):
    """Replay ``planned`` through a stand-in broadcaster on ``port`` to a follower of phase
    one until every presentation is in (``until_sent``: until the stand-in has sent all it
    would); the follower, why it ended and the server's answer."""
    sent = messages(planned, 10, 9)
    stand_in = StandIn(port, sent, **standin)
    settings = FollowSettings(
        host="127.0.0.1",
        port=port,
        codes=codes,
        photodiode=10,
        trials=len(planned.codes),
        until=120,
        notes=True,
        http_port=free_port(),  # no GUI answers there: no notes, and no harm
        every=0.5,
    )
    follower = client.follower(sid, 1, settings)
    stand_in.start()
    try:
        stop = stand_in.finished.is_set if until_sent else lambda: False
        why, accepted = follow(follower, stop=stop, show=lambda f: None)
    finally:
        follower.close()
        stand_in.join(timeout=60)
        stand_in.close()
    return follower, why, accepted, stand_in.last_sent


def folder_trials(folder, codes, client, sid):
    config = client.session(sid).config
    found = read_recording(
        folder / "Record Node 101",
        RecordingSettings(codes=codes, photodiode=10, channels=tuple(CHANNELS), settle=0.0),
        baseline=config.windows.baseline,
        response=config.windows.response,
    )
    return found.columns


def test_a_475_body_phase_one_followed_live_is_stored_as_its_folder(service, tmp_path):
    """The must-show: the follower's stored trials are the folder's, byte for byte (the same
    sha256: the fit, deterministic in its trials and seed (``test_loop``), gives the folder
    upload's list), and the phase is closed with its fit queued first in line within seconds
    of the last presentation. (The fit itself is not run here: warming 475 images through
    ResNet-50 on 2 cores costs a minute, and the fit's path is ``test_loop``'s.)"""
    sid = new_session(service, "f475", 22, 475, channels=CHANNELS, fit={"epochs": 3})
    ids = bodies_of(service, sid)
    planned, codes, _ = planted_phase(tmp_path, ids, repeats=1, seed=6)
    client = rig_client(service)
    follower, why, accepted, last_sent = followed(
        client, sid, tmp_path, planned, codes, free_port()
    )
    closed_at = time.monotonic()
    assert why == "475 presentations are in" and not follower.live.missing
    # the last presentation's windows end 0.25 s after it (0.025 s at 10x), the follower waits
    # 0.5 s (lag, by the wall clock) and sends a batch a second: nothing like an export
    assert closed_at - last_sent < 3.0, closed_at - last_sent
    assert follower.noted is False  # the GUI's HTTP API did not answer: said, not failed
    stored = client.session(sid)
    assert stored.state == "phase1_received" and accepted.job.kind == "fit"
    assert stored.uploads["phase1"].sha256 == digest(folder_trials(tmp_path, codes, client, sid))
    fit = client.job(accepted.job.id)
    assert fit.lane == "urgent" and fit.state == "queued"


class Unanswering(httpx.BaseTransport):
    """The server does not answer batch ``silent`` to ``silent + 2`` (each first try): a
    server restarting, or a cable."""

    def __init__(self, inner: httpx.BaseTransport, silent: int) -> None:
        self.inner, self.silent, self.refused, self.batches = inner, silent, 0, []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if "/batches/" in request.url.path:
            number = int(request.url.path.rsplit("/", 1)[1])
            if self.silent <= number < self.silent + 3 and self.refused < 12:
                self.refused += 1
                raise httpx.ConnectError("connection refused", request=request)
            self.batches.append(number)
        return self.inner.handle_request(request)


def test_a_dropped_broadcaster_a_lost_message_and_a_silent_server(service, tmp_path):
    sid = new_session(service, "fd", 23, 40, channels=CHANNELS, fit=FIT)
    ids = bodies_of(service, sid)
    planned, codes, _ = planted_phase(tmp_path, ids, repeats=2, seed=7)
    sent = messages(planned, 10, 9)
    rises = [k for k, (_, _, e) in enumerate(sent) if e.get("line") == 9 and e["state"] == 1]
    drop = (int(planned.onsets[50]), int(planned.onsets[56]))
    transport = Unanswering(service.client._transport, silent=3)
    client = rig_client(service, transport)
    follower, why, _, _ = followed(
        client, sid, tmp_path, planned, codes, free_port(), True, lose={rises[10]}, drop=drop
    )
    live = follower.live
    reasons = " ".join(g.reason for g in live.gaps)
    assert "line 10 fell twice" in reasons and "connection dropped" in reasons
    assert 11 in {m.number for m in live.missing}
    # every batch reached the server once, in order, after the silence
    assert transport.refused >= 3 and transport.batches == sorted(set(transport.batches))
    stored = client.session(sid)
    columns = {k: np.concatenate([r[k] for r in follower.sent_rows]) for k in follower.sent_rows[0]}
    assert stored.uploads["phase1"].trials == len(columns["stimulus"])
    closed = folder_trials(tmp_path, codes, client, sid)
    keys = ("stimulus", "channel", "baseline_count", "response_count")
    got = set(zip(*(columns[k].tolist() for k in keys)))
    assert got < set(zip(*(closed[k].tolist() for k in keys)))  # nothing filled in
    assert why in ("80 presentations are in", "the operator closed it")


def test_the_follow_command_refuses_slips_in_one_line(service, monkeypatch, tmp_path):
    from stimloop_rig import cli
    from typer.testing import CliRunner

    sid = new_session(service, "fc", 24, 40, channels=CHANNELS, fit=FIT)
    client = rig_client(service)
    monkeypatch.setattr(cli, "_client", lambda url, tok: client)
    codes = tmp_path / "codes.csv"
    codes.write_text("code,stimulus\n1,x\n")
    runner = CliRunner()
    for args, words in (
        (["--openephys", "gui:port", "--codes", str(codes)], "the port must be a number"),
        (["--openephys", "gui", "--codes", str(tmp_path / "no.csv")], "no such file"),
    ):
        said = runner.invoke(cli.app, ["follow", sid, *args])
        assert said.exit_code == 2 and words in " ".join(said.output.split()), said.output
    service.client.put(
        f"/v1/sessions/{sid}/phase1/batches/1",
        headers=service.rig,
        json=batch(bodies_of(service, sid)[:3]),
    )
    said = runner.invoke(
        cli.app, ["follow", sid, "--openephys", "127.0.0.1", "--codes", str(codes)]
    )
    assert said.exit_code == 2 and "already holds 1 batches" in " ".join(said.output.split())
    live = service.client.get(f"/v1/sessions/{sid}/phase1/live", headers=service.rig).json()
    assert live["batches"] == 1


def test_the_session_page_shows_the_phase_being_followed(service):
    sid = new_session(service, "fp", 25, 40, channels=CHANNELS, fit=FIT)
    ids = bodies_of(service, sid)
    token = service.analyst["Authorization"].split()[1]
    signed = service.client.post(
        "/ui/login",
        data={"token": token},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    cookie = signed.cookies["stimloop_ui"]
    service.client.cookies.clear()
    service.client.cookies.set("stimloop_ui", cookie, path="/ui")
    try:
        page = service.client.get(f"/ui/sessions/{sid}")
        assert 'id="following"' not in page.text
        assert service.client.get(f"/ui/sessions/{sid}/progress").json()["following"] is None
        for n, (stimuli, channel) in enumerate(((ids[:4], "ch02"), (ids[4:10], "ch02")), 1):
            held = service.client.put(
                f"/v1/sessions/{sid}/phase1/batches/{n}",
                headers=service.rig,
                json=batch(stimuli, channel=channel),
            )
            assert held.status_code == 200, held.text
        live = service.client.get(f"/ui/sessions/{sid}/progress").json()["following"]
        assert live["batches"] == 2 and live["rows"] == 10
        assert [(c["channel"], c["trials"], c["stimuli"]) for c in live["channels"]] == [
            ("ch01", 0, 0),
            ("ch02", 10, 10),
            ("ch03", 0, 0),
        ]
        page = service.client.get(f"/ui/sessions/{sid}")
        assert "Phase 1, followed live" in page.text and "2 batches, 10 trial rows" in page.text
        assert "<td>ch02</td><td>10</td><td>10</td><td>5.0</td>" in page.text
    finally:
        service.client.cookies.clear()


def test_the_follow_command_shows_the_table_and_closes_the_phase(service, monkeypatch, tmp_path):
    from stimloop_rig import cli
    from typer.testing import CliRunner

    sid = new_session(service, "fx", 26, 40, channels=CHANNELS, fit=FIT)
    planned, codes, _ = planted_phase(tmp_path, bodies_of(service, sid), repeats=2, seed=8)
    client = rig_client(service)
    monkeypatch.setattr(cli, "_client", lambda url, tok: client)
    port = free_port()
    stand_in = StandIn(port, messages(planned, 10, 9))
    stand_in.start()
    try:
        said = CliRunner().invoke(
            cli.app,
            [
                *("follow", sid, "--openephys", f"127.0.0.1:{port}", "--codes", str(codes)),
                *("--photodiode", "10", "--trials", "80", "--no-notes", "--no-wait"),
                *("--recording-start", "2026-12-06T14:03:00+01:00"),
            ],
        )
    finally:
        stand_in.join(timeout=60)
        stand_in.close()
    text = " ".join(said.output.split())
    assert said.exit_code == 0, said.output
    assert "until 80 presentations are in" in text and "net rate (spikes/s)" in text
    assert "phase 1 closed: 80 presentations are in; queued" in text
    assert "0 missing" in text and "missing:" not in text and "gap:" not in text
    uploaded = client.session(sid).uploads["phase1"]
    assert uploaded.trials == 80 * len(CHANNELS)
    assert uploaded.recording_start.isoformat() == "2026-12-06T14:03:00+01:00"


def test_batches_of_a_later_phase_go_with_the_upload_they_followed(tmp_path):
    """Phase two's batches were sent for the list of the phase one that is being replaced:
    replacing phase one discards them (and phase three's), as it discards that list."""
    from stimloop.storage.session import SessionFiles

    files = SessionFiles(tmp_path / "0123456789ab")
    columns = {k: np.asarray(v) for k, v in batch(["a", "b"]).items()}
    for phase in ("phase1", "phase2", "phase3"):
        files.write_live_batch(phase, columns, "sha")
    removed = files.discard_derived("phase1")
    assert {"live/phase2", "live/phase3"} <= set(removed)
    assert len(files.live_batches("phase1")) == 1  # phase one's own are its upload's record
    assert files.live_batches("phase2") == files.live_batches("phase3") == []
