"""A stand-in for the Open Ephys GUI's Event Broadcaster, built from its published message
format (the plugin's page in the GUI's documentation, and the dictionaries open-ephys-python-
tools' ``streaming`` README describes, and the plugin's source, ``EventBroadcaster.cpp``): a
ZeroMQ PUB socket sending two-part messages, the message type (a 16-bit number: 0 a TTL event,
1 a spike) then the event as JSON. TTL events carry ``event_type``
"ttl", ``stream``, ``source_node``, ``sample_rate``, ``channel_name``, ``sample_number``,
``line`` (the event's ``getLine()``, counted from 0; the Record Node writes it as line + 1
in ``states.npy``) and ``state`` (a JSON boolean); spikes carry
``event_type`` "spike", ``stream``, ``source_node``, ``electrode``, ``num_channels``,
``sample_rate``, ``sample_number``, ``sorted_id`` and the amplitudes.

It replays what a recording written by ``openephys_files.write_recording`` holds, at a speed,
optionally losing messages or dropping its socket for a while."""

from __future__ import annotations

import json
import struct
import threading
import time

import zmq

from tests.support.openephys_files import RATE, Planned, ttl_events

STREAM = "Rhythm Data"
TTL, SPIKE = struct.pack("<H", 0), struct.pack("<H", 1)  # the message type, a uint16


def messages(planned: Planned, photodiode: int, code_lines: int) -> list[tuple[int, bytes, dict]]:
    """The recording's TTL line changes and spikes as the broadcaster sends them, in sample
    order: (sample, message type, event)."""
    samples, states, _ = ttl_events(
        planned.code_samples, planned.codes, planned.onsets, photodiode, 30, code_lines
    )
    out: list[tuple[int, bytes, dict]] = []
    for sample, state in zip(samples.tolist(), states.tolist()):
        out.append(
            (
                sample,
                TTL,
                {
                    "event_type": "ttl",
                    "stream": STREAM,
                    "source_node": 100,
                    "sample_rate": RATE,
                    "channel_name": "Rhythm Data TTL Input",
                    "sample_number": sample,
                    "line": abs(state) - 1,
                    "state": bool(state > 0),
                },
            )
        )
    for k, times in enumerate(planned.spikes.values()):
        for sample in times.tolist():
            out.append(
                (
                    sample,
                    SPIKE,
                    {
                        "event_type": "spike",
                        "stream": STREAM,
                        "source_node": 102,
                        "electrode": f"Electrode {k + 1}",
                        "num_channels": 1,
                        "sample_rate": RATE,
                        "sample_number": sample,
                        "sorted_id": 0,
                        "amp1": 80.0,
                    },
                )
            )
    out.sort(key=lambda m: (m[0], m[1]))  # on one sample the TTL changes come first
    return out


class StandIn(threading.Thread):
    """Publishes ``sent`` on ``tcp://127.0.0.1:port`` at ``speed`` times real time, from
    when ``start`` is called (after ``settle`` s for the subscriber to connect). ``lose``:
    indices of messages never sent; ``drop``: (from, to) in samples: the socket is closed at
    the first message at or after ``from`` and bound again at ``to`` (what lies between is
    gone, as it would be for a subscriber whose connection dropped)."""

    def __init__(
        self,
        port: int,
        sent: list[tuple[int, bytes, dict]],
        speed: float = 10.0,
        lose: frozenset[int] = frozenset(),
        drop: tuple[int, int] | None = None,
        settle: float = 1.0,
    ) -> None:
        super().__init__(daemon=True)
        self.port, self.sent, self.speed = port, sent, speed
        self.lose, self.drop, self.settle = lose, drop, settle
        self.context = zmq.Context()
        self.socket = self._bind()
        self.finished = threading.Event()
        self.count = 0
        self.last_sent = 0.0  # when the last message went (time.monotonic)

    def _bind(self) -> zmq.Socket:
        socket = self.context.socket(zmq.PUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SNDHWM, 0)
        for _ in range(50):  # the port of a socket just closed may take a moment to free
            try:
                socket.bind(f"tcp://127.0.0.1:{self.port}")
                return socket
            except zmq.ZMQError:
                time.sleep(0.1)
        raise RuntimeError(f"port {self.port} stayed busy")

    def run(self) -> None:
        time.sleep(self.settle)
        first = self.sent[0][0]
        started = time.monotonic()
        dropped = False
        for k, (sample, kind, event) in enumerate(self.sent):
            due = started + (sample - first) / RATE / self.speed
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if self.drop and not dropped and sample >= self.drop[0]:
                self.socket.close(0)
                dropped = True
            if dropped and self.drop and sample >= self.drop[1] and self.socket.closed:
                self.socket = self._bind()
                time.sleep(0.5)  # the subscriber reconnects (its interval is 0.1 s)
            if k in self.lose or self.socket.closed:
                continue
            self.socket.send_multipart([kind, json.dumps(event).encode()])
            self.count += 1
            self.last_sent = time.monotonic()
        time.sleep(0.5)
        self.finished.set()

    def close(self) -> None:
        self.socket.close(0)
        self.context.term()
