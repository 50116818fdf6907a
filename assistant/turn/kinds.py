"""The names a turn is described by: kinds, marks, outcomes, actions (states: ``events.State``).

``StrEnum`` members are their own values, so they go into JSON, MQTT payloads and the ``--report``
line as the plain strings documented in the README, and compare equal to them.
"""

from __future__ import annotations

from enum import StrEnum


class TurnKind(StrEnum):
    """How a turn began."""

    VOICE = "voice"
    """Heard through the microphone (or an input file)."""
    ASK = "ask"
    """A question as text (``assistant ask``, MQTT ``ask``)."""
    SAY = "say"
    """Text to speak as it is (MQTT ``say``)."""


class Mark(StrEnum):
    """Latency marks, in the order a turn passes them (DESIGN.md, "Latency: definitions")."""

    SPEECH_START = "speech_start"
    SPEECH_END = "speech_end"
    ENDPOINT = "endpoint"
    TRANSCRIPT = "transcript"
    FIRST_TOKEN = "first_token"
    FIRST_SPEAKABLE_TOKEN = "first_speakable_token"
    FIRST_AUDIO = "first_audio"
    FIRST_ANSWER_AUDIO = "first_answer_audio"
    DONE = "done"


class Outcome(StrEnum):
    """How a turn ended (``open`` until it has)."""

    OPEN = "open"
    ANSWERED = "answered"
    EMPTY_REPLY = "empty_reply"
    CANCELLED = "cancelled"
    ERROR = "error"
    REPROMPTED = "reprompted"
    """No usable words in time: the user was asked to say it again (``output.reprompt``)."""


class Action(StrEnum):
    """Named actions taken on a turn, counted and listed in its report line
    (``over_budget.<span>`` is added per span)."""

    ACK_PLAYED = "ack_played"
    FIRST_CHUNK_SHORTENED = "first_chunk_shortened"
    THINKING_CUT = "thinking_cut"
    BARGE_IN = "barge_in"
    STAGE_TIMEOUT = "stage_timeout"
    APOLOGY_PLAYED = "apology_played"
    REPROMPT = "reprompt"
    FIRST_TOKEN_LATE = "first_token_late"
    """The answer missed ``latency.hold_ms`` with no speakable word from the LLM: a holding phrase."""
    FIRST_AUDIO_LATE = "first_audio_late"
    """The answer missed ``latency.hold_ms`` while its first chunk was being synthesized: a holding phrase."""
    CONTINUED = "continued"
    """Speech came back within ``vad.continue_ms`` of the turn's end: the turn was cancelled and
    a new one hears its words and the new ones as one utterance."""
    STOP_WORD = "stop_word"
    """The stop word was heard over playback: the reply or alarm stopped (counted once per
    stop, on no turn's record: the stop word is no turn)."""
