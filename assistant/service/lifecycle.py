"""Running as a service: ``sd_notify``, a progress watchdog, signals and config reload.

- ``sd_notify(message)`` sends one datagram to ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the
  abstract namespace); no libsystemd. Without ``NOTIFY_SOCKET`` it does nothing, so the same code
  runs from a shell, under runit (Termux) and under systemd.
- ``ServiceNotifier``: ``ready()`` (send it only once the models are loaded), ``status()``,
  ``reloading()``, ``stopping()``, and ``watchdog(clock)``, a task that pings ``WATCHDOG=1`` every
  half ``WATCHDOG_USEC`` only while ``clock.ticks`` moves: a stalled source or a blocked event loop
  stops the pings, and systemd restarts the service (``WatchdogSec=``, ``Restart=on-failure``).
- ``ServiceSignals``: ``async with`` it around the daemon's main code. SIGTERM and SIGINT cancel
  the task that entered it; every ``finally`` below runs and the block exits quietly (exit code 0).
  SIGHUP runs ``on_reload`` (an ``async () -> object`` callable) in a task it owns, between
  ``RELOADING=1`` and ``READY=1``.
- ``reload_config(old, new)`` sorts the changed keys into those that apply live and those that
  need a restart (models, queues, the input...); ``ConfigReloader`` is a ready ``on_reload``.
  Commands and devices apply live: ``Pipeline.reconfigure`` rebuilds the matcher and its
  handlers, and the MQTT bridge follows the devices' topics (see ``LIVE_KEYS``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Protocol

from assistant.config import Config
from assistant.errors import AssistantError

_LOGGER = logging.getLogger(__name__)

LIVE_SECTIONS = ("listen", "latency", "deadlines", "chunker", "output", "devices")
"""Config sections whose every key applies without a restart. ``devices`` (the ``[[devices]]``
tables, compared as one key): names, aliases, areas and domains become the matcher's words, and the
MQTT bridge subscribes to new state topics, unsubscribes from removed ones and publishes only on
the command topics declared now."""
_LIVE = {
    "vad": "aggressiveness preroll_ms start_ms end_silence_ms min_speech_ms max_utterance_ms"
    " speculate_after_ms quick_end_silence_ms fine_end floor_gate turn_model turn_threshold hold_silence_ms"
    " agreed_end_silence_ms continue_ms",
    "asr": "language beam_size no_speech_threshold min_avg_logprob window window_margin_ms"
    " max_tokens_per_s max_tokens_extra fallback_logprob short_no_speech_gate during_speech"
    " during_speech_every_ms",
    "llm": "system_prompt max_tokens temperature top_p api_key remote_model request_timeout_s reasoning"
    " think_budget_tokens think_budget_ms history_tokens session_idle_s",
    "tts": "speaker_id length_scale",
    "intents": "language sentences area alarm_limit_s",
}
LIVE_KEYS = frozenset(f"{section}.{key}" for section, keys in _LIVE.items() for key in keys.split())
"""Keys outside ``LIVE_SECTIONS`` that apply without reloading a model. Every other key (model
names and paths, ``llm.engine``/``url``/``n_ctx``/``seed``, ``input.*``, ``queues.*``,
``vad.frame_ms``, ``mqtt.*``, ``model_dir``, and any key added later) needs a restart. Of
``[intents]``, ``enabled`` does (the intents stage is in the chain or not, from the start) and so
does ``timers_file`` (the running timers are kept in the file read at start). The sentence files
are read again by every reload that applies a change; one that only edits a file's contents
changes no key, so nothing is applied."""


def sd_notify(message: str, *, socket_path: str | None = None) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) as one datagram; False when not sent.

    ``socket_path`` defaults to ``$NOTIFY_SOCKET``; unset or empty is a no-op. The socket is
    non-blocking, so a full receive queue loses the message instead of stalling the loop.
    """
    path = os.environ.get("NOTIFY_SOCKET", "") if socket_path is None else socket_path
    if not path:
        return False
    if path[0] not in "@/":
        _LOGGER.warning("NOTIFY_SOCKET=%s is not a unix socket path; not notifying", path)
        return False
    address = "\0" + path[1:] if path[0] == "@" else path
    data = message.encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.connect(address)
            sent = sock.send(data)
    except OSError as err:
        _LOGGER.warning("sd_notify %r to %s failed: %s", message.split("\n", 1)[0], path, err)
        return False
    return sent == len(data)


class Progress(Protocol):
    """What the watchdog watches: ``StreamClock`` (``ticks`` counts the source's progress)."""

    @property
    def ticks(self) -> int: ...


class ServiceNotifier:
    """Readiness, status and watchdog messages to the service manager (all no-ops without one)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.socket_path = env.get("NOTIFY_SOCKET", "")
        self.watchdog_usec = 0
        """The watchdog timeout in µs; 0 when off (unset, invalid, or meant for another PID)."""
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_usec = int(usec)
        self.pings = 0
        """``WATCHDOG=1`` messages sent."""
        self.stalls = 0
        """Half-intervals in which the pipeline made no progress (no ping sent)."""

    @property
    def enabled(self) -> bool:
        """True when a service manager listens (``NOTIFY_SOCKET`` is set)."""
        return bool(self.socket_path)

    @property
    def watchdog_interval_s(self) -> float | None:
        """Seconds between pings (half the timeout), or None when there is no watchdog."""
        if not self.enabled or self.watchdog_usec <= 0:
            return None
        return self.watchdog_usec / 2e6

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram."""
        return self.enabled and sd_notify("\n".join(fields), socket_path=self.socket_path)

    def ready(self) -> bool:
        """The daemon is up: the models are loaded and it is about to listen."""
        return self.notify("READY=1")

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status``."""
        return self.notify("STATUS=" + " ".join(text.split()))

    def reloading(self) -> bool:
        """A reload has begun; ``ready()`` again when it is done."""
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={now_usec}")

    def stopping(self) -> bool:
        """The daemon is shutting down."""
        return self.notify("STOPPING=1")

    async def watchdog(self, clock: Progress) -> None:
        """Ping ``WATCHDOG=1`` every half interval while ``clock.ticks`` advances; run until cancelled.

        Returns at once when there is no watchdog. A half-interval without progress sends
        nothing: if the pipeline stays stalled for the whole ``WatchdogSec``, systemd kills and
        restarts the service. The pings come from the event loop, so a blocked loop stops them too.
        """
        interval = self.watchdog_interval_s
        if interval is None:
            return
        _LOGGER.info("watchdog: pinging every %.1f s while the pipeline makes progress", interval)
        last = clock.ticks
        stalled_since: float | None = None
        while True:
            await asyncio.sleep(interval)
            now = clock.ticks
            if now == last:
                if stalled_since is None:
                    _LOGGER.warning("watchdog: no pipeline progress for %.1f s; not pinging", interval)
                stalled_since = stalled_since or time.monotonic()
                self.stalls += 1
                continue
            if stalled_since is not None:
                _LOGGER.info("watchdog: progress again after %.1f s", time.monotonic() - stalled_since)
                stalled_since = None
            last = now
            if self.notify("WATCHDOG=1"):
                self.pings += 1


ReloadCallback = Callable[[], Awaitable[object]]
"""``on_reload``: an async callable run on SIGHUP; what it returns is ignored, what it raises logged."""


class ServiceSignals:
    """``async with ServiceSignals(notifier=n) as signals:`` around the daemon's main code.

    SIGTERM/SIGINT cancel the task that entered the block (``STOPPING=1`` first); the
    cancellation unwinds through every ``finally`` and is swallowed at the end of the block, so
    the command returns normally and exits 0. A second stop signal is logged and ignored (the
    service manager escalates to SIGKILL after ``TimeoutStopSec``). SIGHUP runs ``on_reload``
    (which may be set after entering, e.g. once the pipeline exists; until then SIGHUP is
    ignored instead of killing the process), one reload at a time, repeats coalesced.
    """

    def __init__(
        self,
        *,
        on_reload: ReloadCallback | None = None,
        notifier: ServiceNotifier | None = None,
        stop_signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
    ) -> None:
        self.on_reload = on_reload
        self.notifier = notifier or ServiceNotifier({})
        self.stop_signals = stop_signals
        self.stop_signal: signal.Signals | None = None
        """The signal that stopped the block, if one did."""
        self.reloads = 0
        """Reloads completed (successfully or not)."""
        self._task: asyncio.Task[Any] | None = None
        self._reload_task: asyncio.Task[None] | None = None
        self._reload_again = False
        self._active = False

    async def __aenter__(self) -> ServiceSignals:
        self._task = asyncio.current_task()
        if self._task is None:
            raise RuntimeError("ServiceSignals must be entered from a task")
        loop = asyncio.get_running_loop()
        for sig in self.stop_signals:
            loop.add_signal_handler(sig, self._stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self._hangup)
        self._active = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        self._active = False
        loop = asyncio.get_running_loop()
        for sig in (*self.stop_signals, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if self._reload_task is not None:
            self._reload_task.cancel()
            await asyncio.wait({self._reload_task})
        if self.stop_signal is not None and self._task is not None and exc_type is asyncio.CancelledError:
            # Swallow only our own cancellation; one from elsewhere still propagates.
            return self._task.uncancel() == 0
        return False

    def _stop(self, sig: signal.Signals) -> None:
        if not self._active or self._task is None:
            return
        if self.stop_signal is not None:
            _LOGGER.warning("%s: already stopping", sig.name)
            return
        _LOGGER.info("%s: stopping", sig.name)
        self.stop_signal = sig
        self.notifier.stopping()
        self._task.cancel()

    def _hangup(self) -> None:
        if not self._active or self.stop_signal is not None:
            return
        if self.on_reload is None:
            _LOGGER.warning("SIGHUP: nothing to reload yet; ignored")
            return
        if self._reload_task is not None and not self._reload_task.done():
            self._reload_again = True
            return
        self._reload_task = asyncio.get_running_loop().create_task(self._reload(), name="service-reload")

    async def _reload(self) -> None:
        self._reload_again = True
        while self._reload_again and self.on_reload is not None:
            self._reload_again = False
            _LOGGER.info("SIGHUP: reloading the configuration")
            self.notifier.reloading()
            try:
                await self.on_reload()
            except asyncio.CancelledError:
                raise
            except Exception:
                _LOGGER.exception("reload failed; the running configuration stays")
            self.reloads += 1
            self.notifier.ready()


@dataclasses.dataclass(frozen=True)
class ConfigChange:
    """What a reload found: changed keys, and the configuration to run with now."""

    live: tuple[str, ...]
    """Changed keys that apply without a restart (dotted, e.g. ``llm.temperature``)."""
    restart: tuple[str, ...]
    """Changed keys that only a restart applies (e.g. ``llm.model``); they keep their old values."""
    config: Config
    """The new configuration with the ``restart`` keys at their running values."""


def _changed(old: Any, new: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if dataclasses.is_dataclass(a):
            keys += _changed(a, b, f"{prefix}{f.name}.")
        elif a != b:
            keys.append(prefix + f.name)
    return keys


def _merge(old: Any, new: Any, live: set[str], prefix: str = "") -> Any:
    values = {}
    for f in dataclasses.fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name)
        key = prefix + f.name
        if dataclasses.is_dataclass(a):
            values[f.name] = _merge(a, b, live, key + ".")
        else:
            values[f.name] = b if key in live else a
    return type(old)(**values)


def needs_restart(key: str) -> bool:
    """True when a change of ``key`` (dotted) applies only after a restart."""
    return key.split(".", 1)[0] not in LIVE_SECTIONS and key not in LIVE_KEYS


def reload_config(old: Config, new: Config) -> ConfigChange:
    """Compare the running config with a newly loaded one (see ``LIVE_SECTIONS``/``LIVE_KEYS``)."""
    changed = _changed(old, new)
    live = [key for key in changed if not needs_restart(key)]
    restart = [key for key in changed if needs_restart(key)]
    try:
        config = _merge(old, new, set(live)) if restart else new
    except AssistantError as err:  # a live value valid only with a new restart-only value
        _LOGGER.warning("reload: %s; applying nothing until a restart", err.message)
        return ConfigChange((), tuple(changed), old)
    return ConfigChange(tuple(live), tuple(restart), config)


class ConfigReloader:
    """An ``on_reload`` for ``ServiceSignals``: load the config again and apply what can change live.

    ``load`` reads and validates the pipeline TOML (run in a thread); ``apply`` receives the
    config to run with when any live key changed. A file that fails to load changes nothing, and so
    does an ``apply`` that refuses the config with an ``AssistantError`` (a sentence file that
    cannot be read, say): it must raise before changing anything.
    """

    def __init__(
        self,
        current: Config,
        load: Callable[[], Config],
        apply: Callable[[Config], None],
        notifier: ServiceNotifier | None = None,
    ) -> None:
        self.current = current
        self._load = load
        self._apply = apply
        self._notifier = notifier or ServiceNotifier({})

    async def __call__(self) -> ConfigChange | None:
        try:
            new = await asyncio.to_thread(self._load)
        except AssistantError as err:
            _LOGGER.error("reload: error [%s]: %s; keeping the running configuration", err.code, err.message)
            self._notifier.status(f"reload failed: {err.message}")
            return None
        change = reload_config(self.current, new)
        if change.restart:
            _LOGGER.warning("reload: %s changed; restart the service to apply", ", ".join(change.restart))
        if change.live:
            try:
                self._apply(change.config)
            except AssistantError as err:
                _LOGGER.error(
                    "reload: error [%s]: %s; keeping the running configuration", err.code, err.message
                )
                self._notifier.status(f"reload failed: {err.message}")
                return None
            self.current = change.config
            _LOGGER.info("reload: applied %s", ", ".join(change.live))
        pending = f"; restart needed for {', '.join(change.restart)}" if change.restart else ""
        self._notifier.status(f"reloaded: {len(change.live)} change(s) applied{pending}")
        return change
