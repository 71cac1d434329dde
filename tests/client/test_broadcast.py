"""The Open Ephys GUI while it records: the Event Broadcaster's messages over real ZeroMQ
(what is not the plugin's JSON is counted, never a trial; a drop is reported in order), the
HTTP API's notes, and the address the operator types."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import zmq
from stimloop_rig.broadcast import Broadcast, Dropped, endpoint, note

from tests.support.broadcaster import SPIKE, TTL
from tests.support.processes import free_port


def test_the_address_the_operator_types():
    assert endpoint("127.0.0.1") == ("127.0.0.1", 5557)
    assert endpoint("rig-pc:5560") == ("rig-pc", 5560)
    assert endpoint("[::1]:5557") == ("::1", 5557)
    for bad, words in (("gui:port", "must be a number"), (":5557", "give the GUI's host")):
        with pytest.raises(ValueError, match=words):
            endpoint(bad)


def test_messages_in_order_junk_counted_and_a_drop_reported():
    port = free_port()
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.bind(f"tcp://127.0.0.1:{port}")
    listener = Broadcast("127.0.0.1", port)
    try:
        time.sleep(0.5)  # the subscription reaches the publisher
        event = {"event_type": "ttl", "sample_number": 1, "sample_rate": 30000.0}
        pub.send_multipart([TTL, json.dumps(event).encode()])
        pub.send_multipart([TTL, b"\x00\xff binary, not JSON"])
        pub.send_multipart([SPIKE, b"[1, 2]"])
        pub.send_multipart([SPIKE, json.dumps({**event, "sample_number": 2}).encode()])
        got: list = []
        deadline = time.monotonic() + 5
        while len([g for g in got if isinstance(g, dict)]) < 2 and time.monotonic() < deadline:
            got += listener.receive(0.2)
        assert got[0] == Dropped(True)
        assert [g["sample_number"] for g in got if isinstance(g, dict)] == [1, 2]
        assert listener.unreadable == 2
        pub.close(0)
        deadline = time.monotonic() + 5
        while Dropped(False) not in got and time.monotonic() < deadline:
            got += listener.receive(0.2)
        assert got[-1] == Dropped(False)
    finally:
        listener.close()
        context.term()


def test_the_phase_is_noted_in_the_recording_when_the_gui_answers():
    said: list[dict] = []

    class Gui(BaseHTTPRequestHandler):
        def do_PUT(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            said.append({"path": self.path, **json.loads(body)})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"info": "Message received."}')

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Gui)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert note("127.0.0.1", "stimloop session 0123456789ab phase 1 start", server.server_port)
    finally:
        server.shutdown()
    assert said == [{"path": "/api/message", "text": "stimloop session 0123456789ab phase 1 start"}]
    assert note("127.0.0.1", "nobody listens", free_port()) is False


def test_without_pyzmq_following_says_what_to_install(monkeypatch, tmp_path):
    import sys

    from stimloop_rig import cli
    from typer.testing import CliRunner

    monkeypatch.setitem(sys.modules, "zmq", None)  # not installed: `pip install stimloop` alone
    monkeypatch.delitem(sys.modules, "stimloop_rig.broadcast", raising=False)
    monkeypatch.delitem(sys.modules, "stimloop_rig.follow", raising=False)
    said = CliRunner().invoke(
        cli.app,
        ["follow", "0123456789ab", "--openephys", "127.0.0.1", "--codes", str(tmp_path / "c")],
    )
    assert said.exit_code == 2, said.output
    assert "needs pyzmq" in said.output and "pip install 'stimloop[rig]'" in said.output
