"""The Wyoming wire format with limits: pure framing for the server, the remote engines and the bench.

An event is one JSON line, the *header* (``type``, and optionally ``data``, ``data_length``,
``payload_length``, ``version``), then ``data_length`` bytes of JSON merged into ``data``, then
``payload_length`` bytes of payload (audio); see the ``wyoming`` library's ``event.py``. That
library's reader ends the connection on the first malformed line and trusts every length; these
readers do not:

- a header that is not a JSON object with a string ``type``, a ``data`` object and lengths that
  are whole numbers is ``bad_event`` (the line is dropped; what follows is read as the next event);
- a header line over ``Limits.line_bytes``, data over ``Limits.data_bytes`` or a payload over
  ``Limits.payload_bytes`` is ``too_long``; the oversized bytes are read and dropped (never held),
  so the connection stays in step;
- data that is not a JSON object is ``bad_event``, after its payload was read.

Either way ``EventError`` (an ``AssistantError`` with that code) is raised and the next ``read``
goes on with the next event: the server answers with an ``error`` event and keeps the client.
Only the standard library is used, so the remote engines need no ``wyoming`` package.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from assistant.errors import AssistantError

PROTOCOL_VERSION = "1.10.2"
"""The ``version`` written in each header: the ``wyoming`` library release this follows."""
SKIP_PIECE = 65_536
"""Bytes read at a time while dropping an oversized payload."""


class EventError(AssistantError):
    """An event refused: ``bad_event`` (malformed), ``too_long`` (over a limit), ``busy`` (the
    server is full), ``audio_invalid`` (audio it cannot use), ``unsupported`` (a service it does
    not offer)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


@dataclass(frozen=True, slots=True)
class WireEvent:
    """One Wyoming event as it travels."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    payload: bytes = b""


@dataclass(frozen=True)
class Limits:
    """The most a reader takes of one event, in bytes."""

    line_bytes: int = 65_536
    """The JSON header line."""
    data_bytes: int = 262_144
    """The extra JSON data after the header (an ``info`` listing many voices is large)."""
    payload_bytes: int = 262_144
    """The payload (audio)."""


@dataclass(frozen=True, slots=True)
class Header:
    """A checked header line."""

    type: str
    data: dict[str, Any]
    data_length: int
    payload_length: int


def encode(event: WireEvent) -> bytes:
    """The bytes of ``event`` on the wire (data after the header, as the library writes it)."""
    header: dict[str, Any] = {"type": event.type, "version": PROTOCOL_VERSION}
    data = json.dumps(event.data, ensure_ascii=False).encode("utf-8") if event.data else b""
    if data:
        header["data_length"] = len(data)
    if event.payload:
        header["payload_length"] = len(event.payload)
    return json.dumps(header, ensure_ascii=False).encode("utf-8") + b"\n" + data + event.payload


def _length(header: dict[str, Any], key: str) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EventError("bad_event", f"{key} is {value!r}: expected a whole number of bytes")
    return value


def parse_header(line: bytes) -> Header:
    """Check one header line; ``EventError("bad_event")`` naming what is wrong."""
    try:
        header = json.loads(line)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise EventError("bad_event", f"the header is not JSON: {err}") from err
    if not isinstance(header, dict):
        raise EventError("bad_event", f"the header is {type(header).__name__}, not an object")
    kind = header.get("type")
    if not isinstance(kind, str) or not kind or len(kind) > 100:
        raise EventError("bad_event", f"the header's type is {kind!r}: expected a short string")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise EventError("bad_event", f"{kind}: data is {type(data).__name__}, not an object")
    return Header(kind, data, _length(header, "data_length"), _length(header, "payload_length"))


def merge_data(header: Header, extra: bytes) -> dict[str, Any]:
    """The header's data with the ``data_length`` bytes after it merged in."""
    if not extra:
        return header.data
    try:
        more = json.loads(extra)
    except (ValueError, RecursionError) as err:
        raise EventError("bad_event", f"{header.type}: its data is not JSON: {err}") from err
    if not isinstance(more, dict):
        raise EventError("bad_event", f"{header.type}: its data is {type(more).__name__}, not an object")
    return {**header.data, **more}


def oversized(header: Header, limits: Limits) -> str:
    """What of ``header`` is over ``limits`` (a sentence), or ``""``."""
    if header.data_length > limits.data_bytes:
        return f"{header.type}: {header.data_length} bytes of data: at most {limits.data_bytes}"
    if header.payload_length > limits.payload_bytes:
        return f"{header.type}: a payload of {header.payload_length} bytes: at most {limits.payload_bytes}"
    return ""


class EventReader:
    """Reads events from an asyncio stream (whose ``limit`` is ``limits.line_bytes``)."""

    def __init__(self, reader: asyncio.StreamReader, limits: Limits) -> None:
        self._reader = reader
        self.limits = limits

    async def read(self) -> WireEvent | None:
        """The next event; None when the stream ends. Raises ``EventError`` for a refused event,
        whose bytes are gone: the next call reads the one after it."""
        try:
            line = await self._reader.readline()
        except ValueError:  # asyncio drops the over-long line (or what it holds of it)
            raise EventError("too_long", f"a header line over {self.limits.line_bytes} bytes") from None
        if not line.endswith(b"\n"):
            return None  # the stream ended, possibly mid-line
        header = parse_header(line)
        try:
            if too_long := oversized(header, self.limits):
                await self._skip(header.data_length + header.payload_length)
                raise EventError("too_long", too_long)
            extra = await self._reader.readexactly(header.data_length) if header.data_length else b""
            payload = await self._reader.readexactly(header.payload_length) if header.payload_length else b""
        except asyncio.IncompleteReadError:
            return None
        return WireEvent(header.type, merge_data(header, extra), payload)

    async def _skip(self, count: int) -> None:
        while count > 0:
            piece = await self._reader.readexactly(min(count, SKIP_PIECE))
            count -= len(piece)
