"""One family of exceptions, one line for a person: the client's errors against a server that
is not there, one that refuses, and one that does not answer in time."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from stimloop_contract.errors import (
    ProblemError,
    ServiceTimeoutError,
    ServiceUnreachableError,
    StimloopError,
)
from stimloop_rig.rig_client import RigClient

RIG = str(Path(sys.executable).with_name("stimloop-rig"))


def test_every_failure_is_a_stimloop_error_with_one_line_detail():
    def refuse(request: httpx.Request) -> httpx.Response:
        body = {"title": "Not found", "status": 404, "detail": "session 'x' does not exist"}
        return httpx.Response(404, json=body, headers={"content-type": "application/problem+json"})

    def silent(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection reset", request=request)

    for handler, kind, words in (
        (refuse, ProblemError, "does not exist"),
        (silent, ServiceTimeoutError, "did not answer within"),
        (broken, ServiceUnreachableError, "connection reset"),
    ):
        client = RigClient(
            "http://rig.test", transport=httpx.MockTransport(handler), backoff=0.01, timeout=3
        )
        with pytest.raises(StimloopError) as info:
            client.session("0123456789ab")
        assert isinstance(info.value, kind) and words in info.value.detail
        assert "\n" not in info.value.detail
    assert info.type is ServiceUnreachableError


def test_retries_stop_within_the_budget():
    calls = []

    def broken(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        raise httpx.ConnectError("refused", request=request)

    client = RigClient(
        "http://rig.test",
        transport=httpx.MockTransport(broken),
        retries=50,
        backoff=0.05,
        retry_budget=0.5,
    )
    started = time.monotonic()
    with pytest.raises(ServiceUnreachableError):
        client.health()
    assert time.monotonic() - started < 1.0 and 2 <= len(calls) <= 6


def test_every_command_gives_up_on_a_stopped_server_within_5_s_on_standard_error():
    """One line on standard error, exit 2, within 5 s; the traceback only with --debug. The
    commands run side by side: each waits on the connect budget, none computes."""

    def run(args: list[str]) -> tuple[list[str], subprocess.CompletedProcess, float]:
        started = time.monotonic()
        result = subprocess.run(
            [RIG, *args, "--url", "http://127.0.0.1:9"], capture_output=True, text=True
        )
        return args, result, time.monotonic() - started

    commands = (
        ["health"],
        ["analysis", "0123456789ab"],
        ["job", "abc"],
        ["phase-two-list", "0123456789ab", "--out", "/tmp/never.csv"],
        ["--debug", "health"],
    )
    with ThreadPoolExecutor(len(commands)) as pool:
        answers = list(pool.map(run, commands))
    *plain, (_, debug, _) = answers
    for args, result, took in plain:
        assert result.returncode == 2 and took < 5, (args, result.returncode, took)
        assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result
        assert "Traceback" not in result.stderr
        assert "cannot reach the stimloop server at http://127.0.0.1:9" in result.stderr
        assert "--url or STIMLOOP_URL" in result.stderr
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_a_server_that_is_not_stimloop_is_named_not_dumped():
    def other(request: httpx.Request) -> httpx.Response:
        page = "<html><body>" + "<p>Not Found</p>" * 200 + "</body></html>"
        return httpx.Response(404, text=page, headers={"content-type": "text/html"})

    client = RigClient("http://rig.test", transport=httpx.MockTransport(other))
    with pytest.raises(ProblemError) as info:
        client.session("0123456789ab")
    said = info.value.detail
    assert "<html>" not in said and "not stimloop's API" in said and "--url" in said


def test_a_url_copied_with_v1_and_https_against_plain_http_say_what_to_do():
    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json={"id": "x"})

    RigClient("http://rig.test/v1/", transport=httpx.MockTransport(answer)).request(
        "GET", "/v1/health"
    )
    assert seen == ["/v1/health"]

    def tls(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)")

    client = RigClient("https://rig.test", transport=httpx.MockTransport(tls), backoff=0.01)
    with pytest.raises(ServiceUnreachableError) as info:
        client.health()
    assert "does not speak HTTPS there: use http://" in info.value.detail
    assert "_ssl.c" not in info.value.detail
