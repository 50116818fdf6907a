"""The one-shot commands: ``ask``, ``say``, ``transcribe``, ``devices``, ``pipelines``."""

from __future__ import annotations

import argparse
import asyncio
import sys

from assistant.cli.common import _config, _model_dir, _sink


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
