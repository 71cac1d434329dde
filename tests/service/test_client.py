"""The rig client against the real service: a dropped connection during an upload is retried
and stored once; a job's progress reaches the callback; the report renders."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from stimloop_contract.errors import ServiceUnreachableError, StimloopError
from stimloop_rig.rig_client import RigClient

from tests.support.loop import CHANNELS, simulate


class DropFirstResponse(httpx.BaseTransport):
    """Forwards every request; the first upload's response is lost on the way back."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner, self.dropped, self.calls = inner, False, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "PUT":
            self.calls += 1
            if not self.dropped:
                self.dropped = True
                raise httpx.ReadError("connection dropped", request=request)
        return response


@pytest.fixture(scope="module")
def fresh_session(service):
    r = service.client.post(
        "/v1/sessions",
        headers=service.rig,
        json={
            "backbone": "resnet50_random",
            "body_set": "bodies",
            "object_set": "objects",
            "control_body_set": "controls",
            "channels": CHANNELS,
            "seed": 8,
            "fit": {"epochs": 30, "lr": 1e-3, "split": [24, 8, 8]},
            "selection": {"stability_images": 10, "repeats": 2},
        },
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_dropped_upload_is_retried_and_stored_once(service, loop, fresh_session):
    transport = DropFirstResponse(service.client._transport)
    token = service.rig["Authorization"].split()[1]
    client = RigClient("http://testserver", token, transport=transport, backoff=0.01)
    cols = simulate(loop, {"bodies": loop["maps"]["bodies"][0]}, seed=4)
    accepted = client.upload_phase(fresh_session, 1, cols)
    assert transport.calls == 2 and accepted.status == "already received"
    session = client.session(fresh_session)
    assert [h["event"] for h in session.history].count("phase1 received") == 1
    assert session.jobs["fit"] == accepted.job.id

    seen = []
    service.work()
    job = client.wait(accepted.job.id, progress=seen.append, poll=0.01)
    assert job.state == "finished" and seen and seen[-1].progress == 1.0
    assert client.selection(fresh_session).phase_two.entries


def test_client_errors_carry_the_problem(service, fresh_session):
    token = service.rig["Authorization"].split()[1]
    client = RigClient("http://testserver", token, transport=service.client._transport)
    with pytest.raises(StimloopError) as info:
        client.upload_phase(
            fresh_session,
            1,
            {"stimulus": np.array(["nope"]), "channel": np.array(["ch1"]), "rate": np.array([1.0])},
        )
    assert info.value.status == 422 and "nope" in info.value.detail


class DropFirstCreate(httpx.BaseTransport):
    """The first session create reaches the server; its answer is lost on the way back."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner, self.dropped, self.creates, self.starts = inner, False, 0, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path == "/v1/sessions":
            self.creates += 1
            if not self.dropped:
                self.dropped = True
                raise httpx.ReadError("connection dropped", request=request)
        if request.method == "POST" and request.url.path.endswith("/fit"):
            self.starts += 1
            raise httpx.ReadError("connection dropped", request=request)
        return response


def test_a_create_retried_after_a_dropped_answer_makes_one_session(service, loop):
    transport = DropFirstCreate(service.client._transport)
    token = service.rig["Authorization"].split()[1]
    client = RigClient("http://testserver", token, transport=transport, backoff=0.01)
    before = {s["id"] for s in service.client.get("/v1/sessions", headers=service.rig).json()}
    session = client.create_session(
        backbone="resnet50_random",
        body_set="bodies",
        object_set="objects",
        control_body_set="controls",
        channels=CHANNELS,
        fit={"split": [24, 8, 8]},
    )
    after = {s["id"] for s in service.client.get("/v1/sessions", headers=service.rig).json()}
    assert transport.creates == 2 and after - before == {session.id}
    # a POST that starts work is sent once, not retried; the dropped answer is one error
    with pytest.raises(ServiceUnreachableError, match="connection dropped"):
        client.refit(session.id)
    assert transport.starts == 1


def test_spike_times_are_cut_with_the_sessions_own_windows(service, loop, tmp_path):
    from stimloop.reports.report import _means
    from stimloop.storage.atomic import read_npz
    from stimloop_contract.configs import Windows

    token = service.rig["Authorization"].split()[1]
    client = RigClient("http://testserver", token, transport=service.client._transport)
    windows = {"baseline": [-0.2, 0.0], "response": [0.1, 0.4]}
    session = client.create_session(
        backbone="resnet50_random",
        body_set="bodies",
        object_set="objects",
        control_body_set="controls",
        channels=CHANNELS,
        windows=windows,
        fit={"split": [24, 8, 8]},
    )
    # one spike in the custom baseline and two in the custom response after every onset,
    # all outside the default windows (-75..25 ms, 50..250 ms)
    onsets = np.arange(4) * 1.0 + 1.0
    spikes = np.sort(np.concatenate([onsets - 0.15, onsets + 0.3, onsets + 0.35]))
    path = tmp_path / "spikes.npz"
    np.savez(
        path,
        event_times=onsets,
        event_codes=np.array([0, 1, 0, 1]),
        code_ids=np.array(["body_0000", "body_0001"]),
        **{f"spikes_{ch}": spikes for ch in CHANNELS},
    )
    _, accepted = client.upload_file(session.id, 1, path)
    assert accepted.status == "queued"
    stored = read_npz(service.settings.sessions_dir / session.id / "phase1.npz")
    assert (stored["baseline_count"] == 1).all() and (stored["response_count"] == 2).all()
    rates = _means(stored, CHANNELS[0], None, Windows.from_dict(windows))
    assert rates == pytest.approx({"body_0000": 2 / 0.3 - 1 / 0.2, "body_0001": 2 / 0.3 - 1 / 0.2})


def test_waiting_has_an_overall_timeout_that_leaves_the_job_alone(service, monkeypatch):
    """A job nobody runs yet is slow, not failed: the client waits for it, and a timeout stops
    the waiting (one line saying how to follow it again), never the job."""
    import time

    from stimloop_rig import cli
    from typer.testing import CliRunner

    token = service.rig["Authorization"].split()[1]
    client = RigClient("http://testserver", token, transport=service.client._transport)
    job = client.precompute("resnet50_random", "controls")  # queued: no worker in this test
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        client.wait(job.id, poll=0.05, timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 5
    assert client.job(job.id).state == "queued"

    monkeypatch.setattr(cli, "_client", lambda url, tok: client)
    runner = CliRunner()
    shown = runner.invoke(cli.app, ["job", job.id])
    assert shown.exit_code == 0 and "queued" in shown.output, shown.output
    waited = runner.invoke(cli.app, ["job", job.id, "--wait", "--timeout", "1"])
    assert waited.exit_code == 2, waited.output
    said = " ".join(waited.output.split())
    assert "still queued after 1 s" in said and f"stimloop-rig job {job.id}" in said
    assert client.cancel(job.id).state == "canceled"
