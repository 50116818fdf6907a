"""Spoken commands that Whisper tiny.en hears right, in three espeak-ng voices: shared by the
tests that speak commands through the real pipeline (``test_intents_voice``, ``test_intents_broker``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from assistant.bench.corpus import CorpusItem, Voice, build_corpus
from assistant.config import DeviceConfig

VOICES = (
    Voice("espeak-en-us", "espeak", "en-us", 175, 50),
    Voice("espeak-en-m4", "espeak", "en-us+m4", 155, 45),
    Voice("espeak-en-f3", "espeak", "en-us+f3", 165, 60),
)
"""Three espeak-ng voices: the default American one, a slower, lower male variant, and a higher
female one. Whisper tiny.en mishears espeak-ng often, and where a recording is cut into 30 ms
frames changes what it hears; these voices and wordings were picked because it hears them right
wherever the stream is cut (British RP, for one, gets "What time in it?" and "Center timer")."""
LIGHTS = DeviceConfig("kitchen lights", area="kitchen", command_topic="cmnd/kitchen/POWER")
COMMANDS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("What time is it?", "HassGetCurrentTime", {}),
    ("What is the current date?", "HassGetCurrentDate", {}),
    ("Set a timer for ten minutes.", "HassStartTimer", {"minutes": 10}),
    ("How much time is left on my timer?", "HassTimerStatus", {}),
    ("Cancel the timer.", "HassCancelTimer", {}),
    ("Turn on the kitchen lights.", "HassTurnOn", {"name": "kitchen lights"}),
    ("Turn off the kitchen lights.", "HassTurnOff", {"name": "kitchen lights"}),
)
"""(words, the intent they match, its slots), in an order that makes sense in one stream."""
SHORT_TIMER, STOP, QUESTION = "Set a timer for two seconds.", "Stop.", "What is the capital of France?"


def spoken_corpus(model_dir: Path, cache_dir: Path) -> dict[tuple[str, str], CorpusItem]:
    """(text, voice name) -> the text spoken in that voice, 16 kHz, 300 ms of silence around:
    every command, the short timer, "stop" and the question."""
    texts = [text for text, _, _ in COMMANDS] + [SHORT_TIMER, STOP, QUESTION]
    items = build_corpus(model_dir, questions=texts, voices=VOICES, snr_db=None, cache_dir=cache_dir)
    return {(item.text, item.voice): item for item in items}
