"""The Open Ephys GUI while it records: its Event Broadcaster (ZeroMQ) and its HTTP API.

The Event Broadcaster publishes every TTL event and spike on a ZeroMQ PUB socket (port 5557 by
default), each as a two-part message: the message type (a 16-bit number), then the event as a
JSON dictionary (the plugin's "JSON" format; ``live_trials`` reads the dictionaries; the type
is not needed, the dictionary names it). A subscriber that loses
its connection is reconnected by ZeroMQ (every 0.1 s at first, backing off to 5 s); whatever was
published meanwhile is gone, so a drop is reported (``Dropped``) and the follower counts the time
in between as a gap. The GUI's HTTP API (port 37497) takes notes (``PUT /api/message``) that
every Record Node saves with the recording.
"""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass

import httpx
from stimloop_contract.errors import TrialFileError

try:
    import zmq
    from zmq.utils.monitor import recv_monitor_message
except ImportError:  # the rig's extra: without it every other command still works
    raise TrialFileError(
        "following a recording needs pyzmq (the Event Broadcaster speaks ZeroMQ): "
        "pip install 'stimloop[rig]'"
    ) from None

BROADCAST_PORT = 5557  # the Event Broadcaster's default
HTTP_PORT = 37497  # the GUI's HTTP API
MESSAGE_BYTES = 64 * 2**10  # one event's JSON is a few hundred bytes


@dataclass(frozen=True)
class Dropped:
    """The connection to the broadcaster dropped (``up`` False) or came back (``up`` True)."""

    up: bool


def endpoint(address: str, default_port: int = BROADCAST_PORT) -> tuple[str, int]:
    """``HOST[:PORT]`` as host and port (``ValueError`` saying what is wrong)."""
    host, colon, port = address.strip().rpartition(":")
    if not colon:
        host, port = address.strip(), ""
    host = host.strip("[]")
    if not host:
        raise ValueError(f"{address!r}: give the GUI's host, e.g. 127.0.0.1 or 127.0.0.1:5557")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r}: the port must be a number from 1 to 65535")
    return host, int(port)


class Broadcast:
    """A subscription to one Event Broadcaster, read by a thread of its own: the events are
    taken off the socket as they arrive, whatever the follower is doing, so that a drop is
    reported after the events received before it and before those after it."""

    def __init__(self, host: str, port: int = BROADCAST_PORT) -> None:
        self.address = f"tcp://{host}:{port}"
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.RCVHWM, 0)  # hold every event while the server is slow
        self.socket.setsockopt(zmq.RECONNECT_IVL, 100)
        self.socket.setsockopt(zmq.RECONNECT_IVL_MAX, 5000)
        self.socket.setsockopt(zmq.MAXMSGSIZE, MESSAGE_BYTES)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.monitor = self.socket.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.socket.connect(self.address)
        self.connected = False
        self.unreadable = 0  # messages that were not the plugin's JSON
        self.items: queue.SimpleQueue[dict | Dropped] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="broadcast", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        while not self._stop.is_set():
            ready = dict(poller.poll(100))
            if self.monitor in ready:
                up = recv_monitor_message(self.monitor)["event"] == zmq.EVENT_CONNECTED
                if up != self.connected:
                    self.connected = up
                    self.items.put(Dropped(up))
            if self.socket in ready:
                message = self._decode(self.socket.recv_multipart())
                if message is None:
                    self.unreadable += 1
                else:
                    self.items.put(message)

    def receive(self, timeout: float) -> list[dict | Dropped]:
        """What arrived, in order: event dictionaries, and ``Dropped`` where the connection
        went down or came back; waits up to ``timeout`` s for the first, then takes up to
        10,000 without waiting."""
        out: list[dict | Dropped] = []
        try:
            out.append(self.items.get(timeout=timeout))
            while len(out) < 10_000:
                out.append(self.items.get_nowait())
        except queue.Empty:
            pass
        return out

    @staticmethod
    def _decode(parts: list[bytes]) -> dict | None:
        """The event of a message: its last part's JSON object (the first names its type)."""
        try:
            value = json.loads(parts[-1])
        except (ValueError, UnicodeDecodeError):
            return None
        return value if isinstance(value, dict) else None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.socket.disable_monitor()
        self.monitor.close(0)
        self.socket.close(0)
        self.context.term()


def note(host: str, text: str, port: int = HTTP_PORT, timeout: float = 1.0) -> bool:
    """Write ``text`` into the recording (the GUI's ``PUT /api/message``); False when the
    GUI's HTTP API does not answer (it is optional)."""
    try:
        answer = httpx.put(
            f"http://{host}:{port}/api/message", json={"text": text}, timeout=timeout
        )
    except httpx.HTTPError:
        return False
    return answer.status_code < 400
