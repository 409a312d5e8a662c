"""A raw HTTP/2 client over one cleartext connection (prior knowledge), for what well-behaved clients
never send: several streams at once, `host` beside `:authority`, trailers, a stream reset halfway."""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions

DEADLINE = 10.0


@dataclass
class Stream:
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    ended: bool = False
    reset: bool = False

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)


class RawH2:
    """`with RawH2(port) as h2c: sid = h2c.send(headers, body); h2c.until(lambda: h2c.streams[sid].ended)`."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None, validate_outbound_headers=False)
        self.conn = h2.connection.H2Connection(config)
        self.conn.initiate_connection()
        self.streams: dict[int, Stream] = {}
        self.terminated = False
        self.flush()

    def flush(self) -> None:
        if data := self.conn.data_to_send():
            self.sock.sendall(data)

    def send(
        self,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None = None,
        end: bool = True,
        trailers: list[tuple[bytes, bytes]] | None = None,
    ) -> int:
        """Opens a stream; `end=False` leaves the body unfinished (for `reset`)."""
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = Stream()
        self.conn.send_headers(sid, headers, end_stream=body is None and not trailers and end)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=end and not trailers)
        if trailers:
            self.conn.send_headers(sid, trailers, end_stream=True)
        self.flush()
        return sid

    def reset(self, sid: int) -> None:
        """RST_STREAM(CANCEL), unless the stream is closed already (a server may reset it first)."""
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self.conn.reset_stream(sid, error_code=8)
        self.flush()

    def until(self, done: object) -> None:
        """Reads frames until `done()` holds or the connection ends, bounded by the deadline."""
        limit = time.monotonic() + DEADLINE
        while not done() and not self.terminated:  # type: ignore[operator]
            assert time.monotonic() < limit, "no answer within the deadline"
            data = self.sock.recv(65536)
            if not data:
                self.terminated = True
                break
            for event in self.conn.receive_data(data):
                self._take(event)
            self.flush()

    def _take(self, event: h2.events.Event) -> None:
        stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, h2.events.ResponseReceived) and stream is not None:
            stream.headers = list(event.headers)  # type: ignore[arg-type]
            stream.status = int(dict(stream.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived) and stream is not None:
            stream.body += event.data or b""
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded) and stream is not None:
            stream.ended = True
        elif isinstance(event, h2.events.StreamReset) and stream is not None:
            stream.reset = True
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = True

    def answer(self, sid: int) -> Stream:
        self.until(lambda: self.streams[sid].ended or self.streams[sid].reset)
        return self.streams[sid]

    def __enter__(self) -> RawH2:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
