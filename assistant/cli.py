"""Command line: ``assistant run | ask | say | transcribe | models``.

The only module that prints. Errors print ``error [code]: message`` and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from assistant import __version__
from assistant.config import Config, load_config
from assistant.errors import AssistantError, ConfigError
from assistant.turn.latency import TurnRecord

if TYPE_CHECKING:
    from assistant.audio.sinks import AudioSink
    from assistant.audio.sources import AudioSource

_LOGGER = logging.getLogger("assistant")


def _model_dir(config: Config, args: argparse.Namespace) -> Path:
    from assistant.models.store import default_model_dir

    if getattr(args, "model_dir", None):
        return Path(args.model_dir)
    return Path(config.model_dir) if config.model_dir else default_model_dir()


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.pipeline)
    from dataclasses import replace

    if getattr(args, "fast", False):
        config = replace(config, input=replace(config.input, realtime=False))
    if getattr(args, "push_to_talk", False):
        config = replace(config, listen=replace(config.listen, mode="push"))
    if getattr(args, "wake", None):
        if getattr(args, "push_to_talk", False):
            raise ConfigError("--wake and --push-to-talk choose two listen modes: give one")
        listen = replace(config.listen, mode="wake", wake_engine="micro", wake_model=args.wake)
        config = replace(config, listen=listen)
    return config


LIVE_INPUTS = ("mic", "pulse", "portaudio")
LIVE_OUTPUTS = ("speaker", "pulse", "portaudio")


def _live(spec: str | None, kinds: tuple[str, ...]) -> tuple[str, str | None] | None:
    """``pulse:NAME`` -> ("pulse", "NAME"); ``mic``/``speaker`` mean PulseAudio's default device."""
    if spec is None:
        return None
    kind, _, name = spec.partition(":")
    if kind not in kinds:
        return None
    return ("pulse" if kind in ("mic", "speaker") else kind), (name or None)


def _sink(
    target: str | None, config: Config, on_state: Callable[[str], None] | None = None
) -> AudioSink | None:
    from assistant.audio.sinks import RawSink, WavSink

    if target is None:
        return None
    if target == "-":
        return RawSink()
    live = _live(target, LIVE_OUTPUTS)
    if live is not None:
        if live[0] == "pulse":
            from assistant.audio.pulse import PulseSink

            return PulseSink(live[1], on_state=on_state)
        from assistant.audio.portaudio import SoundDeviceSink

        return SoundDeviceSink(live[1], on_state=on_state)
    return WavSink(target, gap_ms=config.output.gap_ms)


def _source(args: argparse.Namespace, config: Config, on_state: Callable[[str], None]) -> AudioSource:
    from assistant.audio.sources import IdleSource, PcmSource, StreamSource

    live = _live(args.input, LIVE_INPUTS)
    if live is not None:
        if live[0] == "pulse":
            from assistant.audio.pulse import PulseSource

            return PulseSource(live[1], on_state=on_state, chunk_ms=config.input.chunk_ms)
        from assistant.audio.portaudio import SoundDeviceSource

        return SoundDeviceSource(live[1], on_state=on_state, chunk_ms=config.input.chunk_ms)
    if args.input == "-":
        return StreamSource(config.input, rate=args.input_rate, channels=args.input_channels)
    if args.input is not None:
        return PcmSource.from_file(args.input, config.input)
    return IdleSource()  # no --input: an MQTT-only daemon


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


def _with_wyoming(config: Config, url: str | None) -> Config:
    """``--wyoming tcp://HOST:PORT`` turns the Wyoming server on there."""
    if not url:
        return config
    from dataclasses import replace

    from assistant.config import tcp_address

    host, port = tcp_address("--wyoming", url)
    return replace(config, wyoming=replace(config.wyoming, enabled=True, host=host, port=port))


def _with_mqtt(config: Config, url: str | None) -> Config:
    """``--mqtt URL`` turns MQTT on and replaces the config's broker settings."""
    if not url:
        return config
    from dataclasses import replace

    try:
        from assistant.mqtt.protocol import config_from_url
    except ImportError as err:
        raise ConfigError(f"--mqtt needs aiomqtt: pip install 'assistant[mqtt]' ({err})") from err
    return replace(config, mqtt=config_from_url(url, config.mqtt))


async def _cmd_doctor(args: argparse.Namespace) -> int:
    import os
    import shlex

    from assistant.config import resolve_pipeline
    from assistant.doctor import Setup, effective_config, exit_code, format_config, run_checks, to_json
    from assistant.models.store import default_model_dir

    config = _with_mqtt(_config(args), args.mqtt)
    model_dir = _model_dir(config, args)
    given = {"--pipeline": args.pipeline if args.pipeline != "default" else None, "--mqtt": args.mqtt,
             "--model-dir": args.model_dir, "--input": args.input, "--output": args.output,
             "--report": args.report}  # fmt: skip
    if args.input is None and args.output is None and not config.mqtt.enabled:
        args.input, args.output = "mic", "speaker"  # what the service files run
    pipeline = resolve_pipeline(args.pipeline).resolve()
    pull = "assistant models pull"
    if model_dir != default_model_dir():
        pull = f"assistant --model-dir {shlex.quote(str(model_dir))} models pull"
    run_options = {"--input": args.input, "--output": args.output, "--report": args.report}
    setup = Setup(
        config=config,
        model_dir=model_dir,
        input=args.input,
        output=args.output,
        report=args.report,
        open_source=(lambda cb: _source(args, config, cb)) if _live(args.input, LIVE_INPUTS) else None,
        open_sink=(lambda cb: _sink(args.output, config, cb)) if _live(args.output, LIVE_OUTPUTS) else None,
        pull=pull,
        pipeline=pipeline,
        rows=effective_config(
            config, pipeline, model_dir=model_dir, given=given, environ=os.environ, run_options=run_options
        ),
    )
    audio_log = logging.getLogger("assistant.audio")
    level = audio_log.level
    if not args.verbose:  # a device that fails is a finding, not also a retry warning on stderr
        audio_log.setLevel(logging.ERROR)
    try:
        findings = await run_checks(setup)
    finally:
        audio_log.setLevel(level)
    if args.json:
        print(to_json(findings, setup, strict=args.strict))
        return exit_code(findings, strict=args.strict)
    for finding in findings:
        print(finding)
    if args.config or args.verbose:
        print(f"\nconfig (file: {pipeline}):\n{format_config(setup.rows)}")
    return exit_code(findings, strict=args.strict)


async def _cmd_ask(args: argparse.Namespace) -> int:
    from assistant.daemon import Daemon
    from assistant.engines import load_engines
    from assistant.pipeline import Pipeline

    config = _config(args)
    speak = args.output is not None
    engines = await asyncio.to_thread(load_engines, config, _model_dir(config, args), asr=False, tts=speak)
    out = sys.stdout if args.output != "-" else sys.stderr

    def show(turn_id: int, text: str) -> None:
        out.write(text)
        out.flush()

    pipeline = Pipeline(config, engines, _sink(args.output, config), on_token=show)
    await Daemon(pipeline).run_text(args.text)
    out.write("\n")
    if pipeline.errors:
        _, err = pipeline.errors[-1]
        raise err
    return 0


async def _cmd_say(args: argparse.Namespace) -> int:
    from assistant.engines.piper import PiperEngine
    from assistant.models.store import resolve
    from assistant.text.chunking import split_for_speech

    config = _config(args)
    path = resolve(config.tts.voice, "tts", _model_dir(config, args))
    engine = await asyncio.to_thread(PiperEngine, path, config.tts)
    sink = _sink(args.output, config)
    assert sink is not None
    for chunk in split_for_speech(args.text, config.chunker):
        await sink.write(await asyncio.to_thread(engine.synthesize_all, chunk), engine.sample_rate)
    await sink.close()
    return 0


async def _cmd_transcribe(args: argparse.Namespace) -> int:
    from assistant.audio.convert import read_audio_file
    from assistant.engines.whisper import WhisperEngine
    from assistant.models.store import resolve

    config = _config(args)
    pcm = read_audio_file(args.file)
    path = resolve(config.asr.model, "asr", _model_dir(config, args))
    engine = await asyncio.to_thread(WhisperEngine, path, config.asr)
    result = await asyncio.to_thread(engine.transcribe, pcm)
    print(result.text)
    return 0


def _cmd_devices(args: argparse.Namespace) -> int:
    from assistant.audio.devices import describe, list_devices

    listing = list_devices()
    for device in listing.devices:
        print(describe(device))
    for problem in listing.problems:
        print(f"note: {problem}")
    return 0 if listing.devices else 1


def _cmd_pipelines(args: argparse.Namespace) -> int:
    from assistant.config import pipeline_listing

    print("\n".join(pipeline_listing(args.pipeline)))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from assistant.bench.runner import format_table, plot, pyplot, run_bench

    if args.plot:
        pyplot()  # before a run of minutes, not after it
    config = _config(args)
    model_dir = _model_dir(config, args)
    if args.wake_bench:
        from assistant.bench.wake import format_wake, run_wake_bench

        return _report(run_wake_bench(model_dir, limit=args.limit, log=_log_line), format_wake, args.json)
    if args.echo_bench:
        from assistant.bench.echo import format_echo, run_echo_bench

        return _report(run_echo_bench(model_dir, limit=args.limit, log=_log_line), format_echo, args.json)
    if args.write_stream:
        import wave

        from assistant.bench.runner import bench_stream

        items, stream, _ = bench_stream(model_dir, args.all, args.limit, args.gap_ms)
        with wave.open(args.write_stream, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(16_000)
            out.writeframes(stream)
        print(f"{args.write_stream}: {len(items)} items, {len(stream) / 32_000:.1f} s")
        return 0
    if args.soak:
        from assistant.bench.soak import format_soak, run_soak

        soak = run_soak(
            _with_mqtt(config, args.mqtt), model_dir, turns=args.soak, mqtt=bool(args.mqtt), log=_log_line
        )
        _report(soak, format_soak, args.json)
        return 0 if soak["ok"] else 1
    result = run_bench(
        config, model_dir, every_variant=args.all, limit=args.limit, gap_ms=args.gap_ms, log=_log_line
    )
    _report(result, format_table, args.json)
    if args.plot:
        plot(result, args.plot)
    return 0


def _report(result: dict[str, Any], table: Callable[[dict[str, Any]], str], json_path: str | None) -> int:
    """Print a bench's table, and write its result as JSON where asked."""
    print(table(result))
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


def _log_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _cmd_models(args: argparse.Namespace) -> int:
    from assistant import models

    config = _config(args)
    model_dir = _model_dir(config, args)
    manifest = models.load_manifest()
    names = args.names
    if not names and args.models_command == "pull":
        names = [config.asr.model, config.llm.model, config.tts.voice]
        if config.vad.turn_model:
            from assistant.engines import TURN_MODEL

            names.append(TURN_MODEL)
    unknown = [name for name in names if name not in manifest]
    if unknown:
        raise ConfigError(f"unknown model {unknown[0]!r}: choose one of {sorted(manifest)}")
    if args.models_command == "list":
        print(f"models in {model_dir}")
        for spec, status in models.list_models(model_dir, manifest):
            if not names or spec.name in names:
                size = f"{spec.size / 1e6:,.0f} MB" if spec.size else "?"
                print(f"  {spec.name:34} {spec.role:9} {status:8} {size:>9}  {spec.license}")
        return 0
    if args.models_command == "pull":
        for name in names:
            print(models.pull(manifest[name], model_dir, log=_log_line))
        return 0
    if args.models_command == "verify":
        failed = 0
        present = [s.name for s, status in models.list_models(model_dir, manifest) if status != "missing"]
        for name in names or present:
            problems = models.verify(manifest[name], model_dir)
            print(f"{name}: {'ok' if not problems else '; '.join(problems)}")
            failed += bool(problems)
        return 1 if failed else 0
    if not names:
        raise ConfigError("models rm needs the names of the models to remove")
    for name in names:
        removed = models.remove(manifest[name], model_dir)
        print(f"{name}: {'removed' if removed else 'not present'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistant", description="An offline voice assistant.")
    parser.add_argument("--version", action="version", version=f"assistant {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log lines (-vv for debug)")
    parser.add_argument("--pipeline", default="default", help="name (assistant pipelines) or .toml path")
    parser.add_argument(
        "--model-dir", help="model cache (default: $ASSISTANT_MODEL_DIR or ~/.cache/assistant/models)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="listen and answer: audio in, spoken answers out")
    run.add_argument(
        "--input",
        help="mic (PulseAudio default source), pulse:NAME, portaudio[:NAME|INDEX], a WAV (any rate and"
        " channels), or - for raw s16le PCM on stdin",
    )
    run.add_argument("--input-rate", type=int, default=16_000, help="sample rate of raw stdin PCM (Hz)")
    run.add_argument("--input-channels", type=int, default=1, help="channels of raw stdin PCM")
    run.add_argument(
        "--output",
        help="speaker (PulseAudio default sink), pulse:NAME, portaudio[:NAME|INDEX], a WAV file, or -"
        " for raw s16le PCM on stdout",
    )
    run.add_argument("--report", help="JSON lines, one per turn (- for stderr)")
    run.add_argument("--fast", action="store_true", help="feed input as fast as the pipeline takes it")
    run.add_argument(
        "--push-to-talk",
        action="store_true",
        help="listen only when asked (listen.mode = push): MQTT listen, or Space/Enter in a terminal",
    )
    run.add_argument(
        "--wake",
        metavar="MODEL",
        help="answer only after this wake word (listen.mode = wake, wake_engine = micro): okay_nabu,"
        " hey_jarvis, hey_mycroft, alexa, or a microWakeWord model's .json",
    )
    run.add_argument(
        "--mqtt", metavar="URL", help="MQTT broker: mqtt://[user:pass@]host[:port] or mqtts://..."
    )
    run.add_argument(
        "--wyoming",
        metavar="URL",
        help="serve Wyoming (Home Assistant: ASR, TTS, satellite) on tcp://HOST:PORT, e.g. tcp://0.0.0.0:10700",
    )

    ask = sub.add_parser("ask", help="answer a typed question; the reply streams to stdout")
    ask.add_argument("text")
    ask.add_argument("--output", help="also speak the reply into this WAV (- for raw PCM on stdout)")

    say = sub.add_parser("say", help="speak text into a WAV file")
    say.add_argument("text")
    say.add_argument("--output", required=True, help="WAV file, or - for raw s16le PCM on stdout")

    tr = sub.add_parser("transcribe", help="print what is said in an audio file")
    tr.add_argument("file")

    sub.add_parser("devices", help="list the audio devices (PortAudio and PulseAudio)")
    sub.add_parser("pipelines", help="list the pipelines: the user's and the shipped ones")

    bench = sub.add_parser("bench", help="latency of the pipeline against a sequential baseline, same run")
    bench.add_argument("--all", action="store_true", help="every voice and noise variant (slow)")
    bench.add_argument("--limit", type=int, help="only the first N items")
    bench.add_argument("--gap-ms", type=float, default=4000.0, help="silence between questions")
    bench.add_argument("--json", help="write the full results here")
    bench.add_argument("--plot", help="draw the latency distributions into this PNG")
    bench.add_argument(
        "--soak", type=int, metavar="N", help="instead: N turns in one process (spoken, asked, cancelled,"
        " barge-ins): RSS, fds, threads, tasks after warm-up and at the end; exit 1 if one grew or failed",
    )  # fmt: skip
    bench.add_argument("--mqtt", metavar="URL", help="--soak: ask and cancel over this broker (mqtt://...)")
    bench.add_argument(
        "--write-stream", metavar="WAV", help="instead: write the bench's input (its items, order and gaps)"
        " as a WAV, e.g. for assistant run --input WAV",
    )  # fmt: skip
    bench.add_argument(
        "--wake", action="store_true", dest="wake_bench", help="instead: the wake word model's misses,"
        " false wakes per hour and CPU against always-on listening (--limit N: N questions per voice)",
    )  # fmt: skip
    bench.add_argument(
        "--echo", action="store_true", dest="echo_bench", help="instead: WebRTC audio processing: echo"
        " return loss enhancement, a question over the reply, WER with and without noise suppression"
        " at two SNRs, CPU per hour (--limit N: N questions per voice)",
    )  # fmt: skip

    doctor = sub.add_parser(
        "doctor",
        help="check models, microphone, speaker, folders and the MQTT broker; say what to fix (exit 1"
        " on a failure; with --strict, on a warning too)",
    )
    doctor.add_argument(
        "--input",
        help="as for run (default: mic and --output speaker, as the service files; none with MQTT on)",
    )
    doctor.add_argument("--output", help="as for run")
    doctor.add_argument("--report", help="as for run: its folder must be writable")
    doctor.add_argument("--mqtt", metavar="URL", help="as for run: check this broker instead of the config's")
    doctor.add_argument(
        "--config", action="store_true", help="also list every setting and where it came from"
    )
    doctor.add_argument("--json", action="store_true", help="findings and settings as JSON")
    doctor.add_argument("--strict", action="store_true", help="exit 1 on a warning too")

    mod = sub.add_parser("models", help="list, pull, verify or remove models")
    mod.add_argument("models_command", choices=["list", "pull", "verify", "rm"])
    mod.add_argument("names", nargs="*", help="model names (pull: default models when none given)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from assistant.service import allocator

    allocator.tune()  # ASSISTANT_ALLOCATOR=lean: freed memory given back (service/allocator.py)
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    commands = {"run": _cmd_run, "ask": _cmd_ask, "say": _cmd_say, "transcribe": _cmd_transcribe,
                "doctor": _cmd_doctor}  # fmt: skip
    try:
        if args.command == "models":
            return _cmd_models(args)
        if args.command == "bench":
            return _cmd_bench(args)
        if args.command == "devices":
            return _cmd_devices(args)
        if args.command == "pipelines":
            return _cmd_pipelines(args)
        return asyncio.run(commands[args.command](args))
    except AssistantError as err:
        print(f"error [{err.code}]: {err.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
