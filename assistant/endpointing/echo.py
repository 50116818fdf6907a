"""Keeping the assistant's own voice from triggering barge-in.

While the speaker plays, a microphone frame counts as the user's speech only if a stricter VAD
calls it speech *and* it is louder than the assistant's own voice coming back, by a margin.
The sink reports how loud it played at any recent moment (``playback_peak(start_ns, end_ns)``,
RMS 0..1 of the audio heard in that span). The echo in a microphone frame left the speaker a
little before the frame reached the daemon, smeared by the room and the devices' buffers, so
the gate compares the frame against the loudest playback of the ``hold_ms`` before the frame's
arrival, times the echo path's *coupling*. The frame's own arrival time is used, not the time
it is classified: a pipeline running late classifies frames in bursts, and the playback of
that moment has nothing to do with the echo in them.

The coupling (microphone level / playback level) depends on the room, the speaker volume and
the microphone gain: a headset hears none of the speaker, a loopback hears all of it. The gate
learns it (Geigel-style double-talk detection with a measured echo return loss): it starts at
1 (0 dB: the microphone hears the reply as loud as it is played) and, once it has seen
``learn_min`` frames of playback, becomes the largest microphone/playback ratio of the last
``learn_frames`` playback frames that were not the user. Frames whose playback reference is
under ``learn_floor`` (a reply's quiet onset) teach nothing: room noise over them is no echo.
Nor do frames whose echo the playback clock may not place: a reply's *onset* (the playback
``onset_ms`` before the frame's window ended was under ``onset_share`` of the reference: where the
sink's clock runs a little late, the microphone already hears the loud part the reference does
not have yet) and a reference under ``quiet_share`` of the reply's loudest of the last
``loud_frames`` (the quiet ends of words, where a few ms of misplacement is a large ratio). On
the virtual devices' 0 dB loopback those frames alone took the learnt coupling to 1.7-2.6 where
the others gave 1.2-1.3 (and the true one is about 1), so the user had to be 3-7 dB louder than
the gate's margin. The same frames are judged against a safer reference: an onset against the
reply's loudest, a quiet one against ``quiet_share`` of it.
A frame is learned only once ``lookback_frames`` newer frames have passed without the user
speaking: when a frame is let through as the user's (double talk), the frames just before it
(the onset of the user's speech) are forgotten and learning pauses for ``freeze_frames``, so the
user's own voice never teaches the gate to ignore the user.

Level alone cannot hear a user who is no louder than the echo (0 dB echo). Where the speaker
reports what it played, the gate also lets through a strictly voiced frame that is not like the
playback (``waveform.EchoWaveform``: double talk) and is louder than the echo estimate, or than
the margin over the playback at the echo's place (so once the speaker has paused at the user's
first syllable, the user is heard at once, not only after ``hold_ms``). The echo's frames teach
the waveform judge where the microphone hears them at ``likeness_level`` of the coupling or more
(silence is like nothing), onsets and quiet ends included (a waveform does not mind a few ms of
misplacement).
Pure: the playback is passed in through callables and every time by the caller.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from assistant.contracts import EchoReference, Speaker
from assistant.endpointing.waveform import EchoWaveform, frame_rms

__all__ = ["EchoGate", "frame_rms", "gate_for"]


class EchoGate:
    """Decides, frame by frame, whether voiced audio during playback is the user or the echo."""

    def __init__(
        self,
        peak: Callable[[int, int], float],
        played: Callable[[int, int], bytes] | None = None,
        *,
        margin_db: float = 6.0,
        hold_ms: int = 300,
        learn_frames: int = 200,
        learn_min: int = 20,
        learn_floor: float = 0.01,
        lookback_frames: int = 10,
        freeze_frames: int = 33,
        onset_ms: int = 100,
        onset_share: float = 0.5,
        quiet_share: float = 0.2,
        loud_frames: int = 100,
        likeness_level: float = 0.25,
    ) -> None:
        """``peak(start_ns, end_ns)``: the playback's loudest RMS in that span; ``played(start_ns,
        count)``: the 16 kHz samples heard from ``start_ns`` on (None: level alone judges);
        ``hold_ms``: how long before a frame's arrival its echo may have been played;
        ``learn_frames``, ``learn_min``, ``lookback_frames``, ``freeze_frames``: counts of VAD
        frames."""
        self.peak = peak
        self.waveform = None if played is None else EchoWaveform(played, hold_ms=hold_ms, keep=learn_frames)
        self.factor = 10 ** (margin_db / 20)
        """How much louder than the echo estimate the user must be (amplitude ratio)."""
        self._hold_ns = hold_ms * 1_000_000
        self._onset_ns = onset_ms * 1_000_000
        self._onset_share = onset_share
        self._quiet_share = quiet_share
        self._louds: deque[float] = deque(maxlen=loud_frames)
        self._reference = 0.0
        """The playback level the last frame is judged against (before the coupling)."""
        self._ratios: deque[float] = deque(maxlen=learn_frames)
        self._pending: deque[tuple[float | None, tuple[float, int] | None]] = deque()
        self._likeness_level = likeness_level
        self._match: tuple[float, int] | None = None
        """The waveform's match of the last frame ``playing()`` was given, if it took one."""
        self._at_ns = 0
        self._lookback = lookback_frames
        self._learn_min = learn_min
        self._learn_floor = learn_floor
        self._freeze_frames = freeze_frames
        self._frozen = 0
        self.gated = 0
        """Voiced frames dismissed as the assistant's own voice."""
        self.unlike = 0
        """Voiced frames let through as the user's because they were not like the playback."""

    @property
    def coupling(self) -> float:
        """Echo path gain estimate (microphone RMS / playback RMS); 1.0 until learned."""
        return max(self._ratios) if len(self._ratios) >= self._learn_min else 1.0

    def playing(self, pcm: bytes, at_ns: int) -> bool:
        """True if the speaker played within ``hold_ms`` before ``at_ns``, when the microphone
        frame ``pcm`` arrived. Call it for every frame: the gate learns the echo coupling."""
        self._at_ns, self._match = at_ns, None
        reference = max(0.0, float(self.peak(at_ns - self._hold_ns, at_ns)))
        self._louds.append(reference)
        loud = max(self._louds)
        early = max(0.0, float(self.peak(at_ns - self._hold_ns, at_ns - self._onset_ns)))
        onset = early < self._onset_share * reference
        quiet = reference < self._quiet_share * loud
        self._reference = max(loud if onset else reference, self._quiet_share * loud)
        if pcm and reference >= self._learn_floor:
            if self._frozen:
                self._frozen -= 1
            else:
                self._learn(pcm, at_ns, reference, steady=not (onset or quiet))
        return reference > 0.0

    def _learn(self, pcm: bytes, at_ns: int, reference: float, *, steady: bool) -> None:
        """Queue what the frame says about the echo (its ratio only where ``steady``; its
        likeness where the microphone hears the echo) and learn from the frame
        ``lookback_frames`` older."""
        ratio = frame_rms(pcm) / reference
        match = None
        if self.waveform is not None and ratio >= self._likeness_level * self.coupling:
            match = self._match = self.waveform.match(pcm, at_ns)
        self._pending.append((ratio if steady else None, match))
        if len(self._pending) <= self._lookback:
            return
        old_ratio, match = self._pending.popleft()
        if old_ratio is not None:
            self._ratios.append(old_ratio)
        if match is not None and self.waveform is not None:
            self.waveform.learn(match)

    def allow(self, pcm: bytes, strict_voiced: bool) -> bool:
        """Call after ``playing()`` returned True: is this voiced frame the user's?"""
        echo = self._reference * self.coupling
        level = frame_rms(pcm)
        if strict_voiced and (level > echo * self.factor or self._unlike(pcm, level, echo)):
            self._pending.clear()  # the user's voice (and its onset) is not echo: never learn it
            self._frozen = self._freeze_frames
            return True
        self.gated += 1
        return False

    def _unlike(self, pcm: bytes, level: float, echo: float) -> bool:
        """Double talk: the frame is less like the playback than the echo ever is, and louder
        than the echo estimate, or than the margin over the playback at the echo's place."""
        waveform = self.waveform
        floor, lag = (None, None) if waveform is None else (waveform.floor, waveform.lag_ns)
        if waveform is None or floor is None or lag is None:
            return False
        if (self._match or waveform.match(pcm, self._at_ns))[0] >= floor:
            return False
        now = waveform.echo_now(pcm, self._at_ns, lag)
        if level <= echo and level <= now * self.coupling * self.factor:
            return False
        self.unlike += 1
        return True


def gate_for(speaker: Speaker, margin_db: float) -> EchoGate:
    """The gate for a live speaker: by level, and by waveform too where it reports what it played."""
    played = speaker.played if isinstance(speaker, EchoReference) else None
    if not callable(played):  # a speaker's attribute of that name that is no such report
        played = None
    else:
        played(0, 0)  # the sink keeps what it plays from its first reply on
    return EchoGate(speaker.playback_peak, played, margin_db=margin_db)
