"""A blocking Wyoming connection for code that runs in a worker thread (the remote engines, the bench).

The engine API is synchronous, so the remote engines speak the protocol over a plain socket
rather than run the ``wyoming`` library's asyncio client on a loop of their own. Reads poll in
``POLL_S`` steps, so a set ``stop`` event ends a request within one step (``Stopped``), and a
server that sends nothing for ``idle_timeout_s`` (a stall) raises ``TimeoutError``. Framing and
limits are ``protocol``'s. Errors: ``OSError`` (cannot connect, reset), ``TimeoutError`` (a
stall), ``ServerClosed`` (the server hung up mid-request), ``EventError`` (a malformed or
oversized event from the server), ``Stopped``.
"""

from __future__ import annotations

import socket
import threading
import time

from assistant.wyoming.protocol import (
    EventError,
    Limits,
    WireEvent,
    encode,
    merge_data,
    oversized,
    parse_header,
)

POLL_S = 0.05
"""How often a blocked read looks at the stop event, in seconds."""
SOCKET_PIECE = 65_536
"""Bytes asked of the socket per read."""
CLIENT_LIMITS = Limits(line_bytes=65_536, data_bytes=4 << 20, payload_bytes=4 << 20)
"""What a client takes from a server: an ``info`` can list hundreds of voices."""


class Stopped(Exception):
    """The caller's stop event was set while waiting for the server."""


class ServerClosed(ConnectionError):
    """The server closed the connection before the answer was complete."""


class EventSocket:
    """One connection to a Wyoming server; a context manager that closes it."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout_s: float,
        idle_timeout_s: float,
        stop: threading.Event | None = None,
        limits: Limits = CLIENT_LIMITS,
    ) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.stop = stop
        self.limits = limits
        self._buffer = bytearray()
        self._sock = socket.create_connection((host, port), timeout=connect_timeout_s)
        self._sock.settimeout(POLL_S)

    def __enter__(self) -> EventSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def send(self, *events: WireEvent) -> None:
        """Write events in order (blocks while the server does not read, up to the idle timeout)."""
        self._sock.settimeout(self.idle_timeout_s)
        try:
            self._sock.sendall(b"".join(encode(event) for event in events))
        finally:
            self._sock.settimeout(POLL_S)

    def receive(self) -> WireEvent:
        """The next event from the server."""
        line = self._read_line()
        header = parse_header(line)
        if too_long := oversized(header, self.limits):
            raise EventError("too_long", f"the server sent {too_long}")
        extra = self._read_exactly(header.data_length)
        payload = self._read_exactly(header.payload_length)
        return WireEvent(header.type, merge_data(header, extra), payload)

    def _fill(self) -> None:
        """Read what has arrived into the buffer; waits at most ``idle_timeout_s`` for anything."""
        deadline = time.monotonic() + self.idle_timeout_s
        while True:
            if self.stop is not None and self.stop.is_set():
                raise Stopped
            try:
                piece = self._sock.recv(SOCKET_PIECE)
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"the server sent nothing for {self.idle_timeout_s:g} s") from None
                continue
            if not piece:
                raise ServerClosed("the server closed the connection")
            self._buffer += piece
            return

    def _read_line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > self.limits.line_bytes:
                limit = self.limits.line_bytes
                raise EventError("too_long", f"the server sent a header line over {limit} bytes")
            self._fill()

    def _read_exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._fill()
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data
