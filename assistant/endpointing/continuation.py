"""The last turn's audio, kept for a moment after its end: speech that comes back within
``vad.continue_ms`` of where it ended continues it (``Segmenter``; a pause mid-request longer than
the endpoint's silence, "Set a timer for ... five minutes").

The segmenter hands over a turn's whole buffer when it ends (``ended``) and every frame after it
(``push``); at the next turn's start it asks ``take`` whether that speech continues the last turn,
and if so gets the audio to begin the new turn's buffer with: the last turn's, and everything since.
A turn cut at ``max_utterance_ms``, dropped, or forgotten (the stop word, a new wake word) is
continued by nothing. Pure: positions are in samples, given by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Continued:
    """What the new turn takes over from the one it continues."""

    buffer: bytearray
    """The last turn's audio from its first kept sample, and every frame since, int16 (handed
    over, not copied: the new turn's buffer grows from it)."""
    buffer_start: int
    """Input position of ``buffer``'s first sample."""
    speech_start: int
    """The last turn's first voiced sample: the continued turn's speech starts there."""
    voiced_frames: int
    """The last turn's voiced frames."""


class LastTurn:
    """The last ended turn, while speech may still continue it."""

    def __init__(self, continue_samples: int, window_samples: int) -> None:
        """``continue_samples``: the longest silence between the last turn's end of speech and new
        speech that continues it (0: nothing is continued); ``window_samples``: the segmenter's
        start window (a turn starts up to this long after its first voiced frame)."""
        self.continue_samples = continue_samples
        self._window = window_samples
        self._buffer = bytearray()
        self._buffer_start = 0
        self._speech_start = 0
        self._speech_end = 0
        self._voiced_frames = 0
        self._kept = False

    def ended(
        self, buffer: bytearray, buffer_start: int, speech_start: int, speech_end: int, voiced: int
    ) -> None:
        """A turn ended (not cut, not dropped): ``buffer`` is all its audio, up to the endpoint (kept
        as it is: the caller hands it over)."""
        if not self.continue_samples:
            return
        self._buffer = buffer
        self._buffer_start, self._speech_start, self._speech_end = buffer_start, speech_start, speech_end
        self._voiced_frames, self._kept = voiced, True

    def push(self, frame: bytes, frame_end: int) -> None:
        """A frame after the last turn's end (no turn open); the turn is let go once new speech
        could no longer continue it."""
        if not self._kept:
            return
        if frame_end - self._speech_end > self.continue_samples + self._window:
            self.forget()
            return
        self._buffer += frame

    def take(self, first_voiced: int, upto: int) -> Continued | None:
        """New speech starts at sample ``first_voiced``; its start window ends at ``upto`` (the
        frames pushed so far reach it). The last turn's audio and everything since, if the speech
        continues it; else None. Either way the last turn is let go."""
        if not self._kept:
            return None
        kept = Continued(self._buffer, self._buffer_start, self._speech_start, self._voiced_frames)
        soon = first_voiced - self._speech_end <= self.continue_samples
        # never join audio that is not contiguous
        whole = self._buffer_start + len(self._buffer) // 2 == upto
        self.forget()
        return kept if soon and whole else None

    def forget(self) -> None:
        """Nothing continues the last turn."""
        self._buffer = bytearray()
        self._kept = False
