"""What ``describe`` answers: the ``info`` event, built with the ``wyoming`` library's own classes
so that Home Assistant's parser (the same classes) reads every field it needs.

Listed: our ASR (the pipeline's ASR engine: the short-window Whisper), our voice (streaming
synthesis: ``supports_synthesize_streaming``), and, when the microphone and a sink are there, an
Assist satellite with its own VAD. Home Assistant makes a speech-to-text entity, a text-to-speech
entity and a satellite device of one server.
"""

from __future__ import annotations

import re
import warnings

with warnings.catch_warnings():  # wyoming.audio imports audioop, deprecated since Python 3.11
    warnings.simplefilter("ignore", DeprecationWarning)
    from wyoming.info import (
        AsrModel,
        AsrProgram,
        Attribution,
        Info,
        Satellite,
        TtsProgram,
        TtsVoice,
    )

from assistant import __version__
from assistant.config import Config
from assistant.wyoming.protocol import WireEvent

ATTRIBUTION = Attribution(name="assistant", url="https://github.com/rhasspy/wyoming")
"""Who made the services (this daemon; the protocol's home as the link)."""
_LOCALE = re.compile(r"(?<![A-Za-z])([a-z]{2,3}_[A-Z]{2})(?![A-Za-z])")


def voice_language(voice: str, fallback: str) -> str:
    """The locale in a piper voice's name (``piper-en_US-joe-medium`` -> ``en_US``), else ``fallback``."""
    match = _LOCALE.search(voice)
    return match.group(1) if match else fallback


def build_info(config: Config, *, asr: bool, tts: bool, satellite: bool) -> WireEvent:
    """The ``info`` event for what this server offers right now."""
    wy, language = config.wyoming, config.asr.language or "en"
    info = Info()
    if asr:
        model = AsrModel(
            name=config.asr.model,
            attribution=Attribution(
                name="OpenAI Whisper, SYSTRAN faster-whisper", url="https://github.com/SYSTRAN/faster-whisper"
            ),
            installed=True,
            description=f"{config.asr.model} ({config.asr.window} window)",
            version=None,
            languages=[language],
        )
        info.asr = [
            AsrProgram(
                name=f"{wy.name} whisper",
                attribution=ATTRIBUTION,
                installed=True,
                description="faster-whisper, the utterance's own window (an offline voice assistant)",
                version=__version__,
                models=[model],
            )
        ]
    if tts:
        voice = config.tts.remote_voice if config.tts.engine == "wyoming" else config.tts.voice
        info.tts = [
            TtsProgram(
                name=f"{wy.name} piper",
                attribution=ATTRIBUTION,
                installed=True,
                description="piper, streamed sentence by sentence (an offline voice assistant)",
                version=__version__,
                voices=[
                    TtsVoice(
                        name=voice or "default",
                        attribution=Attribution(name="rhasspy", url="https://github.com/rhasspy/piper"),
                        installed=True,
                        description=voice or "the server's default voice",
                        version=None,
                        languages=[voice_language(voice, language)],
                    )
                ],
                supports_synthesize_streaming=True,
            )
        ]
    if satellite:
        info.satellite = Satellite(
            name=wy.name,
            attribution=ATTRIBUTION,
            installed=True,
            description="the microphone and speaker of an offline voice assistant",
            version=__version__,
            area=wy.area or None,
            has_vad=True,
            supports_trigger=False,
        )
    event = info.event()
    return WireEvent(event.type, event.data)
