"""``assistant run``: the daemon, with its services (MQTT, Wyoming, the push-to-talk key), and the
``--report`` file."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import IO

from assistant.cli.common import _config, _model_dir, _sink, _source, _with_mqtt, _with_wyoming
from assistant.errors import ConfigError
from assistant.turn.latency import TurnRecord

_LOGGER = logging.getLogger("assistant")


class _Report:
    """Writes one JSON line per finished turn (the ``--report`` file)."""

    def __init__(self, path: str | None) -> None:
        self._file: IO[str] | None = None
        if path == "-":
            self._file = sys.stderr
        elif path:
            self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def __call__(self, rec: TurnRecord) -> None:
        line = rec.to_json()
        _LOGGER.info("turn %d %s: %s", rec.turn_id, rec.outcome, json.dumps(line["spans_ms"]))
        if self._file is not None:
            self._file.write(json.dumps(line, ensure_ascii=False) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None and self._file is not sys.stderr:
            self._file.close()


async def _cmd_run(args: argparse.Namespace) -> int:
    from assistant.audio.sinks import NullSink
    from assistant.daemon import Daemon, Service
    from assistant.engines import load_engines
    from assistant.pipeline import Pipeline
    from assistant.service.lifecycle import ConfigReloader, ServiceNotifier, ServiceSignals

    config = _with_wyoming(_with_mqtt(_config(args), args.mqtt), args.wyoming)
    if args.input is None and not config.mqtt.enabled and not config.wyoming.enabled:
        raise ConfigError(
            "give --input: mic, pulse[:NAME], portaudio[:NAME|INDEX], a WAV file, or - for stdin"
        )
    if args.output == "-" and args.report == "-":
        raise ConfigError("--output - and --report - would both write to the terminal's streams; pick a file")
    notifier = ServiceNotifier()
    # SIGTERM/SIGINT: every finally runs (MQTT: retained offline), exit 0; SIGHUP: reload the config
    async with ServiceSignals(notifier=notifier) as signals:
        notifier.status("loading models")
        engines = await asyncio.to_thread(load_engines, config, _model_dir(config, args))
        pipeline: Pipeline | None = None

        def device_state(state: str) -> None:
            if pipeline is not None:
                pipeline.device_state(state)

        source = _source(args, config, device_state)
        report = _Report(args.report)
        sink = _sink(args.output, config, device_state)
        try:
            if sink is None and config.mqtt.enabled:
                sink = NullSink()
            pipeline = Pipeline(config, engines, sink, on_turn=report)
            signals.on_reload = ConfigReloader(
                config,
                lambda: _with_wyoming(_with_mqtt(_config(args), args.mqtt), args.wyoming),
                pipeline.reconfigure,
                notifier,
            )
            clock = pipeline.clock
            services: list[Service] = [("watchdog", lambda: notifier.watchdog(clock))]
            if config.listen.mode == "push" and sys.stdin.isatty():
                from assistant.service.keys import HINT, KeyReader, pipeline_actions

                print(HINT, file=sys.stderr, flush=True)
                keys = KeyReader(sys.stdin.fileno(), pipeline_actions(pipeline))
                services.append(("keys", keys.run))
            if config.mqtt.enabled:
                from assistant.mqtt.bridge import MqttBridge

                services.append(("mqtt", MqttBridge(pipeline, config.mqtt).run))
            if config.wyoming.enabled:
                try:
                    from assistant.wyoming.server import WyomingServer
                except ImportError as err:
                    raise ConfigError(
                        f"--wyoming needs the wyoming package: pip install 'assistant[wyoming]' ({err})"
                    ) from err
                wyoming = WyomingServer(pipeline, config.wyoming)
                source = wyoming.tap(source)  # a satellite session borrows the microphone
                services.append(("wyoming", wyoming.run))
            notifier.ready()
            notifier.status("listening")
            await Daemon(pipeline, services).run(source)
        finally:
            report.close()
            if sink is not None:
                await sink.close()  # a speaker is released even when the daemon is stopped
    return 0
