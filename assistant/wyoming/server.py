"""The Wyoming server: the daemon's ASR, voice and microphone for Home Assistant, as a service.

``cli/run.py`` adds it to the daemon's TaskGroup as ``("wyoming", server.run)``; ``run`` owns a
TaskGroup of its own for the connections:

    wyoming                        WyomingServer.run: listens, announces (zeroconf)
    └── wyoming-client-N           Connection.run, one per client, each with its helpers:
        ├── wyoming-synthesis-N    Synthesis.run (services.py), from the first synthesis
        └── wyoming-satellite-N    Satellite.run (satellite.py), from ``run-satellite``

Cancelling ``run`` (the daemon stopping) cancels every connection and closes the listening socket.

A connection reads events (``protocol.EventReader``) and answers them in order: ``describe``
(``info.py``), ``ping``, transcription and synthesis (``services.py``), ``run-satellite`` and
``pause-satellite``; after ``run-satellite`` its audio events are replies to play, not audio to
transcribe. Event types it does not know are ignored, as the protocol asks. Limits: at most
``wyoming.max_clients`` connections (one more is answered ``busy`` and closed); each event's
header, data and payload bounded (``wyoming.max_payload_bytes`` for the payload); a connection
idle for ``wyoming.idle_timeout_s`` is closed, as is one that does not read what it is sent
(``WRITE_TIMEOUT_S``). A malformed or oversized event, or a request the server cannot serve, is
answered with an ``error`` event (``code``, ``text``) and the connection stays; a failed
transcription closes it after its ``error`` (see ``services.py``). Nothing a client sends can end
the service: a connection that fails unexpectedly is logged and closed.

Zeroconf: with ``wyoming.zeroconf`` and the ``zeroconf`` package installed, the server is
announced as ``<name>._wyoming._tcp.local.`` (Home Assistant then offers to add it); without the
package a log line says so and the server is added by host and port.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from assistant.audio.sources import AudioSource
from assistant.config import Config, WyomingConfig
from assistant.errors import AssistantError, InternalError
from assistant.wyoming.info import build_info
from assistant.wyoming.protocol import EventError, EventReader, Limits, WireEvent, encode
from assistant.wyoming.satellite import Satellite, SatelliteHub
from assistant.wyoming.services import ServerModels, Synthesis, Transcription, transcribe

if TYPE_CHECKING:
    from assistant.pipeline import Pipeline

_LOGGER = logging.getLogger(__name__)

LINE_BYTES = 65_536
"""The longest header line taken from a client."""
WRITE_TIMEOUT_S = 10.0
"""A client that takes nothing of what it is sent for this long is closed."""
ASR_EVENTS = ("transcribe", "audio-start", "audio-chunk", "audio-stop")
TTS_EVENTS = ("synthesize", "synthesize-start", "synthesize-chunk", "synthesize-stop")


class _Close(Exception):
    """End the connection (after its ``error`` was sent)."""


class WyomingServer:
    """Serves the pipeline's engines, microphone and sink over Wyoming."""

    def __init__(self, pipeline: Pipeline, config: WyomingConfig | None = None) -> None:
        self.pipeline = pipeline
        self.config = config or pipeline.config.wyoming
        """Listening settings and limits (fixed while running)."""
        engines = pipeline.engines
        self.models = ServerModels(
            asr=engines.asr if self.config.asr else None,
            tts=engines.tts if self.config.tts else None,
            asr_slot=asyncio.Semaphore(1),
            tts_slot=asyncio.Semaphore(1),
        )
        self.hub = SatelliteHub(pipeline) if self.config.satellite else None
        self.limits = Limits(
            line_bytes=LINE_BYTES,
            data_bytes=max(65_536, 4 * self.config.max_text_chars + 4096),
            payload_bytes=self.config.max_payload_bytes,
        )
        self.port: int | None = None
        """The port listened on, once listening."""
        self.ready = asyncio.Event()
        self.connections: set[Connection] = set()
        self.refused = 0
        """Connections refused because ``max_clients`` were connected."""
        self._count = 0

    def tap(self, source: AudioSource) -> AudioSource:
        """The microphone source, shared with satellite sessions (unchanged without a satellite)."""
        return source if self.hub is None else self.hub.tap(source)

    @property
    def offers(self) -> list[str]:
        """What ``describe`` lists now."""
        satellite = self.hub is not None and self.hub.available
        kinds = (("asr", self.models.asr), ("tts", self.models.tts), ("satellite", satellite))
        return [name for name, there in kinds if there]

    def info(self) -> WireEvent:
        offers = self.offers
        return build_info(
            self.config_now, asr="asr" in offers, tts="tts" in offers, satellite="satellite" in offers
        )

    @property
    def config_now(self) -> Config:
        """The pipeline's config as now (reloads apply: deadlines, chunker, languages)."""
        return self.pipeline.config

    async def run(self) -> None:
        """Listen until cancelled (the daemon's ``wyoming`` service)."""
        config = self.config
        if self.hub is not None and not self.hub.available:
            _LOGGER.info("wyoming: no satellite: it needs the microphone (--input) and a sink (--output)")
        async with asyncio.TaskGroup() as group:

            def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                self._accept(group, reader, writer)

            server = await asyncio.start_server(accept, config.host, config.port, limit=LINE_BYTES)
            async with server:
                self.port = int(server.sockets[0].getsockname()[1])
                _LOGGER.info("wyoming: serving %s on %s:%d", ", ".join(self.offers), config.host, self.port)
                self.ready.set()
                async with advertise(config, self.port):
                    await server.serve_forever()

    def _accept(
        self, group: asyncio.TaskGroup, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._count += 1
        if len(self.connections) >= self.config.max_clients:
            self.refused += 1
            group.create_task(
                _refuse_busy(writer, self.config.max_clients), name=f"wyoming-busy-{self._count}"
            )
            return
        connection = Connection(self, reader, writer, self._count)
        try:
            group.create_task(connection.run(), name=f"wyoming-client-{self._count}")
        except RuntimeError:  # the server is stopping
            writer.close()
            return
        self.connections.add(connection)


async def _refuse_busy(writer: asyncio.StreamWriter, limit: int) -> None:
    error = WireEvent("error", {"code": "busy", "text": f"{limit} clients are connected: try again later"})
    with contextlib.suppress(OSError, TimeoutError):
        writer.write(encode(error))
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
    writer.close()


class Connection:
    """One client: its events answered in order, its helpers (synthesis, satellite) beside."""

    def __init__(
        self, server: WyomingServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        self.server = server
        self.models = server.models
        self.number = number
        self.events = EventReader(reader, server.limits)
        self.writer = writer
        self.peer = str(writer.get_extra_info("peername"))
        self.closed = False
        self.asr: Transcription | None = None
        self.synthesis: Synthesis | None = None
        self.satellite: Satellite | None = None
        self._write_lock = asyncio.Lock()
        self._helpers: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def config(self) -> Config:
        return self.server.config_now

    async def send(self, *events: WireEvent) -> None:
        """Write events in order; a client that is gone or does not read is closed, quietly."""
        if self.closed:
            return
        async with self._write_lock:
            try:
                self.writer.write(b"".join(encode(event) for event in events))
                await asyncio.wait_for(self.writer.drain(), WRITE_TIMEOUT_S)
            except (OSError, TimeoutError) as err:
                _LOGGER.info("wyoming: client %d (%s) is gone: %r", self.number, self.peer, err)
                self.closed = True
                self.writer.close()

    async def refuse(self, code: str, message: str) -> None:
        """An ``error`` event; the connection stays."""
        _LOGGER.info("wyoming: client %d: [%s] %s", self.number, code, message)
        await self.send(WireEvent("error", {"code": code, "text": message}))

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as helpers:
                self._helpers = helpers
                try:
                    await self._serve()
                finally:
                    for task in self._tasks:
                        task.cancel()
        except Exception:  # a bug: this client is dropped, the service goes on
            _LOGGER.exception("wyoming: client %d failed", self.number)
        finally:
            self.server.connections.discard(self)
            self.closed = True
            self.writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(self.writer.wait_closed(), 1.0)

    async def _serve(self) -> None:
        idle = self.server.config.idle_timeout_s
        while not self.closed:
            try:
                async with asyncio.timeout(idle):
                    event = await self.events.read()
            except TimeoutError:
                _LOGGER.info("wyoming: client %d sent nothing for %g s; closed", self.number, idle)
                return
            except EventError as err:
                await self.refuse(err.code, err.message)
                continue
            except (OSError, asyncio.IncompleteReadError):
                return
            if event is None:
                return
            try:
                await self._handle(event)
            except _Close:
                return
            except Exception as err:  # the request's failure; the connection stays
                await self.refuse(*_coded(event.type, err))

    async def _handle(self, event: WireEvent) -> None:
        kind = event.type
        if kind == "describe":
            await self.send(self.server.info())
        elif kind == "ping":
            await self.send(WireEvent("pong", {"text": event.data.get("text")}))
        elif kind == "run-satellite":
            self._start_satellite()
        elif kind == "pause-satellite":
            if self.satellite is not None:
                self.satellite.cancel()
        elif self.satellite is not None:
            await self.satellite.from_client(event)
        elif kind in ASR_EVENTS:
            await self._asr(event)
        elif kind in TTS_EVENTS:
            await self._tts(event)
        else:
            _LOGGER.debug("wyoming: client %d: %s ignored", self.number, kind)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        assert self._helpers is not None
        task: asyncio.Task[None] = self._helpers.create_task(coro, name=f"{name}-{self.number}")
        self._tasks.append(task)
        return task

    def _start_satellite(self) -> None:
        hub = self.server.hub
        if hub is None or not hub.available:
            raise EventError(
                "unsupported",
                "this server offers no satellite: it needs --input, --output and wyoming.satellite",
            )
        if self.satellite is not None:
            return
        satellite = self.satellite = hub.start(self)
        satellite.task = self._spawn(satellite.run(), "wyoming-satellite")
        _LOGGER.info("wyoming: client %d (%s) runs the satellite", self.number, self.peer)

        def ended(_: asyncio.Task[None]) -> None:
            if self.satellite is satellite:
                self.satellite = None

        satellite.task.add_done_callback(ended)

    async def _asr(self, event: WireEvent) -> None:
        if self.models.asr is None:
            raise EventError("unsupported", "this server offers no speech recognition")
        kind, max_s = event.type, self.server.config.max_audio_s
        if kind == "transcribe" or self.asr is None or (kind == "audio-start" and self.asr.pcm):
            self.asr = Transcription(max_s)
        request = self.asr
        if kind == "audio-start":
            request.start(event.data)
        elif kind == "audio-chunk" and not request.add(event.data, event.payload):
            await self.refuse("too_long", f"audio over {max_s:g} s: the rest is dropped")
        elif kind == "audio-stop":
            self.asr = None
            try:
                await transcribe(self, request)
            except EventError:
                raise
            except Exception as err:  # the model's failure: this request's, and the connection ends
                await self.refuse(*_coded("asr", err))
                raise _Close from err

    async def _tts(self, event: WireEvent) -> None:
        if self.models.tts is None:
            raise EventError("unsupported", "this server offers no speech synthesis")
        if self.synthesis is None:
            self.synthesis = Synthesis(self)
            self._spawn(self.synthesis.run(), "wyoming-synthesis")
        synthesis, kind = self.synthesis, event.type
        if kind == "synthesize-start":
            synthesis.open()
        elif kind == "synthesize-stop":
            await synthesis.close()
        elif kind == "synthesize" and synthesis.streaming:
            return  # the whole text again, for servers that do not stream: already under way
        else:
            text = event.data.get("text")
            if not isinstance(text, str):
                raise EventError("bad_event", f"{kind}: text is {text!r}: expected a string")
            await (synthesis.add(text) if kind == "synthesize-chunk" else synthesis.one(text))


def _coded(stage: str, err: Exception) -> tuple[str, str]:
    """(code, message) of ``err``: ours keep their code, anything else is ``internal`` (logged)."""
    if isinstance(err, AssistantError):
        return err.code, err.message
    _LOGGER.error("wyoming: %s failed unexpectedly", stage, exc_info=err)
    coded = InternalError(stage, f"{stage} failed unexpectedly: {type(err).__name__}: {err}")
    return coded.code, coded.message


@contextlib.asynccontextmanager
async def advertise(config: WyomingConfig, port: int) -> AsyncIterator[None]:
    """Announce the server as ``_wyoming._tcp`` while the block runs, where zeroconf is installed."""
    if not config.zeroconf:
        yield
        return
    try:
        zc: Any = importlib.import_module("zeroconf.asyncio")
    except ImportError:
        _LOGGER.info("wyoming: not announced on the network: pip install zeroconf (add it by host and port)")
        yield
        return
    try:
        info = zc.AsyncServiceInfo(
            "_wyoming._tcp.local.",
            f"{config.name}._wyoming._tcp.local.",
            addresses=[socket.inet_aton(_address(config.host))],
            port=port,
        )
        conf = zc.AsyncZeroconf()
        await conf.async_register_service(info)
    except Exception as err:  # zeroconf's and the network's own errors: announcing is optional
        _LOGGER.warning("wyoming: could not announce the server with zeroconf: %r", err)
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await conf.async_unregister_service(info)
            await conf.async_close()


def _address(host: str) -> str:
    """The IPv4 address to announce: ``host``, or the one this machine reaches the LAN with."""
    if host not in ("0.0.0.0", "", "::"):
        return socket.gethostbyname(host)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("224.0.0.251", 5353))  # mDNS: no packet is sent by connect()
        return str(probe.getsockname()[0])
