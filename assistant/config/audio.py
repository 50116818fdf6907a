"""The audio sections: where it comes from (``[input]``), WebRTC's processing of it
(``[audio_processing]``), voice activity and endpointing (``[vad]``), where speech goes (``[output]``)."""

from __future__ import annotations

from dataclasses import dataclass

from assistant.config.checks import _check_choice, _check_range
from assistant.errors import ConfigError


@dataclass(frozen=True)
class InputConfig:
    """Where audio comes from."""

    realtime: bool = True
    """Feed file/stdin audio at the speed it would arrive from a microphone."""
    chunk_ms: int = 20
    """Size of the pieces the source hands to the endpointer, in ms."""
    tail_silence_ms: int = 1000
    """Silence appended after a file or stdin ends, so the last utterance can end naturally."""

    def __post_init__(self) -> None:
        _check_range("input.chunk_ms", self.chunk_ms, 10, 200)
        _check_range("input.tail_silence_ms", self.tail_silence_ms, 0, 10_000)


@dataclass(frozen=True)
class VadConfig:
    """Voice activity detection and endpointing (webrtcvad)."""

    aggressiveness: int = 2
    """webrtcvad mode: 0 (least) to 3 (most aggressive at filtering out non-speech)."""
    frame_ms: int = 30
    """VAD frame length; webrtcvad takes 10, 20 or 30 ms."""
    preroll_ms: int = 300
    """Audio kept from before speech starts, so the first syllable is not lost."""
    start_ms: int = 90
    """Voiced audio needed (within a short window) before a turn starts."""
    end_silence_ms: int = 600
    """Silence after speech that ends the turn."""
    min_speech_ms: int = 250
    """Utterances with less voiced audio than this are dropped as noise."""
    max_utterance_ms: int = 15_000
    """An utterance is cut here even if the speaker goes on (TV, noise)."""
    speculate_after_ms: int = 120
    """Silence after which ASR, LLM and TTS start speculatively, before the endpoint; 0 = off."""
    quick_end_silence_ms: int = 300
    """End-of-turn silence when the speculative transcript is clearly a complete sentence."""
    fine_end: bool = True
    """Place the end of speech inside the last voiced frames by a 10 ms energy envelope, and count
    the silences above from there (webrtcvad's last voiced frame ends tens of ms late); in those
    silences, a voiced frame quieter than the envelope's speech level does not resume the turn."""
    floor_gate: bool = True
    """A frame webrtcvad calls speech must stand 6 dB above the noise floor of the last 1.5 s: a
    steady noise that starts out of silence is not taken for speech for seconds on end."""
    turn_model: bool = True
    """Ask the end-of-turn model (Smart Turn v3.2, manifest ``smart-turn-v3.2``) at each pause
    whether the utterance is complete: complete ends it after ``quick_end_silence_ms``, incomplete
    holds it for ``hold_silence_ms`` (a transcript that ends a question, or a recognised command,
    still ends it sooner). Without the model file or onnxruntime, the endpointer says so and goes
    on with the transcript alone."""
    turn_threshold: float = 0.5
    """The turn model's probability at or above which the utterance counts as complete."""
    agreed_end_silence_ms: int = 200
    """End-of-turn silence when the turn model and the transcript both say the utterance is
    complete; never longer than ``quick_end_silence_ms``."""
    hold_silence_ms: int = 750
    """End-of-turn silence while the utterance looks unfinished (the turn model says incomplete,
    or the transcript ends on "the", "of", "for"...); never shorter than ``end_silence_ms``. The
    budget overrules the judges: a held turn is answered at this silence plus the moment its
    speculated answer needs to start, so above ``latency.budget_ms`` minus ~50 ms a turn the judges
    took for unfinished misses the budget; a pause longer than this, mid-request, ends the turn,
    and the speech after it continues the turn (``continue_ms``)."""
    continue_ms: int = 1000
    """Speech that comes back within this long of a turn's end of speech continues that turn: the
    turn is cancelled wherever it is (action ``continued``; the speaker stops if its answer began)
    and a new turn hears both parts as one utterance ("Set a timer for ... five minutes", a pause
    longer than the endpoint's silence). 0: every turn stands alone."""

    def __post_init__(self) -> None:
        _check_choice("vad.aggressiveness", self.aggressiveness, range(4))
        _check_choice("vad.frame_ms", self.frame_ms, (10, 20, 30))
        _check_range("vad.preroll_ms", self.preroll_ms, 0, 2000)
        _check_range("vad.start_ms", self.start_ms, self.frame_ms, 1000)
        _check_range("vad.end_silence_ms", self.end_silence_ms, 100, 5000)
        _check_range("vad.min_speech_ms", self.min_speech_ms, 0, 5000)
        _check_range("vad.max_utterance_ms", self.max_utterance_ms, 1000, 30_000)
        _check_range("vad.speculate_after_ms", self.speculate_after_ms, 0, self.end_silence_ms)
        quick = self.quick_end_silence_ms
        _check_range("vad.quick_end_silence_ms", quick, self.frame_ms, self.end_silence_ms)
        _check_range("vad.turn_threshold", self.turn_threshold, 0.0, 1.0)
        _check_range("vad.hold_silence_ms", self.hold_silence_ms, 100, 10_000)
        _check_range("vad.agreed_end_silence_ms", self.agreed_end_silence_ms, self.frame_ms, 5000)
        _check_range("vad.continue_ms", self.continue_ms, 0, 5000)


@dataclass(frozen=True)
class OutputConfig:
    """Where speech goes."""

    gap_ms: int = 300
    """Silence written between two turns' replies in a file."""
    apology: str = "Sorry, something went wrong."
    """Spoken when a turn that was to be answered aloud fails (synthesized on first need); empty: none."""
    reprompt: str = "Sorry, could you say that again?"
    """Spoken when no usable transcript was ready in time (``latency.transcript_ms``); synthesized
    at start-up on live input. Empty: silence."""

    def __post_init__(self) -> None:
        _check_range("output.gap_ms", self.gap_ms, 0, 10_000)
        for key in ("apology", "reprompt"):
            if len(getattr(self, key)) > 200:
                raise ConfigError(
                    f"output.{key} is {len(getattr(self, key))} characters long: allowed at most 200"
                )


NOISE_LEVELS = ("off", "low", "moderate", "high", "very_high")
"""``audio_processing.noise_suppression``: WebRTC's levels (6, 12, 18, 21 dB of suppression)."""


@dataclass(frozen=True)
class AudioProcessingConfig:
    """WebRTC's audio processing on the microphone, before the wake word, the VAD and ASR (the
    ``aec`` extra, ``pywebrtc-audio``; without it the daemon warns once and hears the raw
    microphone). See ``audio/processing.py`` and the README's "Echo cancellation"."""

    inputs: str = "live"
    """``live``: microphones only (PulseAudio, PortAudio); ``all``: files and stdin too (off by
    default, so the bench and recorded tests hear their audio unaltered); ``none``: never."""
    echo_cancellation: bool = False
    """Remove what the speaker plays (the far end, aligned by the playback clock) from the
    microphone (WebRTC AEC3) before the wake word, the VAD's speech verdicts and ASR. Needs a live
    speaker. The energy echo gate stays as the second line and judges the microphone as captured,
    so the canceller's residue, which jumps on a loaded machine, never makes the assistant
    interrupt itself. Off by default: while the speaker plays, AEC3 also cuts the user's own
    speech (a one-second "Stop." over a reply reached the VAD as 150 ms of speech, and was
    dropped as too little), so the stop word and barge-in are heard more surely without it where
    the speaker is not loud in the microphone; turn it on for a loud speaker beside the mic."""
    noise_suppression: str = "off"
    """``off``, ``low``, ``moderate``, ``high``, ``very_high`` (6, 12, 18, 21 dB). Off by default:
    on the noisy corpus Whisper did worse after ``moderate`` and barely better after ``very_high``
    (README: Echo cancellation)."""
    gain_control: bool = False
    """Automatic gain control (WebRTC AGC2, adaptive digital): quiet or distant speech raised.
    Off by default: it raises the residual echo too, and Whisper and the VAD cope with level."""
    max_gain_db: float = 30.0
    """``gain_control``: the most the adaptive gain may raise the microphone, in dB."""
    reference_margin_ms: int = 30
    """Echo cancellation: the far end fed with a microphone frame runs this far ahead of it (what
    the speaker played up to this long after the frame was captured), so an echo never reaches
    the canceller before its reference, even where the speaker's latency estimate is too long.
    AEC3 finds the delay that remains itself (measured: up to 150 ms fully). Keep it under what
    the speaker queues ahead of its device (about 50 ms with pacat)."""

    def __post_init__(self) -> None:
        _check_choice("audio_processing.inputs", self.inputs, ("live", "all", "none"))
        _check_choice("audio_processing.noise_suppression", self.noise_suppression, NOISE_LEVELS)
        _check_range("audio_processing.max_gain_db", self.max_gain_db, 0.0, 50.0)
        _check_range("audio_processing.reference_margin_ms", self.reference_margin_ms, 0, 300)

    @property
    def active(self) -> bool:
        """Something is to be done to some input."""
        wanted = self.echo_cancellation or self.noise_suppression != "off" or self.gain_control
        return self.inputs != "none" and wanted
