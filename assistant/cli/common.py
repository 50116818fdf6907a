"""What the commands share: the pipeline's config with the command line's overrides (``--fast``,
``--wake``, ``--mqtt``, ``--wyoming``...), the model folder, the audio source and sink an option names."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from assistant.config import Config, load_config
from assistant.errors import ConfigError

if TYPE_CHECKING:
    from assistant.audio.sinks import AudioSink
    from assistant.audio.sources import AudioSource


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


def _log_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
