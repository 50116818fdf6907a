"""The audio processing check: does WebRTC's APM (the ``aec`` extra) load and run here, and what
will it do to this input (echo cancellation needs a live speaker; files are left alone unless
``audio_processing.inputs = "all"``)?"""

from __future__ import annotations

import asyncio
import time
from importlib import metadata

import numpy as np

from assistant.audio.processing import INSTALL_HINT, Features, ProcessingUnavailable, Processor, features
from assistant.doctor.base import Finding, Setup
from assistant.messages import SAMPLE_RATE

OS_ALTERNATIVE = "or PulseAudio/PipeWire's module-echo-cancel (README: Echo cancellation)"


def _run_one_second(wanted: Features) -> float:
    """A second of noise through the APM; its process time in ms."""
    processor = Processor(wanted)
    near = (np.random.default_rng(0).standard_normal(SAMPLE_RATE) * 1000).astype(np.int16)
    far = near[::-1].copy() if wanted.echo else None
    started = time.process_time()
    processor.process(near, far)
    return (time.process_time() - started) * 1000


async def check_processing(setup: Setup) -> list[Finding]:
    """Off: nothing to check. Else the library is loaded and a second of audio processed."""
    config = setup.config.audio_processing
    live_in = setup.open_source is not None
    live_out = setup.open_sink is not None
    if not config.active:
        return [Finding("processing", "ok", "audio processing is off ([audio_processing])")]
    applies = config.inputs == "all" or live_in
    wanted = Features.of(config, echo=live_out)
    lost = ", ".join(features(config, echo=live_out)) or "nothing"
    try:
        cpu_ms = await asyncio.to_thread(_run_one_second, wanted)
    except ProcessingUnavailable as err:
        level = "warn" if applies else "ok"
        message = f"{err}: the microphone is heard raw (no {lost})"
        return [Finding("processing", level, message, f"{INSTALL_HINT}, {OS_ALTERNATIVE}" if applies else "")]
    try:
        version = metadata.version("pywebrtc-audio")
    except metadata.PackageNotFoundError:  # imported from a path, not installed
        version = "(version unknown)"
    what = ", ".join(features(config, echo=live_out)) or "nothing"
    if not applies:
        where = f"--input {setup.input}" if setup.input else "no --input"
        message = f"pywebrtc-audio {version} loads; {where} is not a live microphone: heard as it is"
        return [Finding("processing", "ok", message + " (audio_processing.inputs = 'all' to process it)")]
    notes = []
    if config.echo_cancellation and not live_out:
        notes.append("no live speaker, so no echo cancellation")
    message = f"pywebrtc-audio {version}: {what} on the microphone ({cpu_ms:.1f} ms of CPU per second here)"
    return [Finding("processing", "ok", message + (f"; {notes[0]}" if notes else ""))]
