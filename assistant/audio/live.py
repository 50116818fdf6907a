"""The live microphone and speaker backends' shared base, in one import.

- ``common.py``: ``ByteRing`` (bounded, drops the oldest), ``Converter`` (to 16 kHz mono int16),
  ``Backoff``, ``DeviceLost``;
- ``capture.py``: ``LiveSource``, the microphone base (device sessions, retries, a continuous
  timeline fed with silence while the device is away);
- ``playback.py``: ``Playout`` and ``LiveSink``, the speaker base (paced play-out, interrupt,
  playback level, retries).

Backends: ``pulse.py`` (``parec``/``pacat``) and ``portaudio.py`` (sounddevice).
"""

from __future__ import annotations

from assistant.audio.capture import LiveSource
from assistant.audio.common import Backoff, ByteRing, Converter, DeviceLost, StateCallback
from assistant.audio.playback import LiveSink, Playout

__all__ = [
    "Backoff",
    "ByteRing",
    "Converter",
    "DeviceLost",
    "LiveSink",
    "LiveSource",
    "Playout",
    "StateCallback",
]
