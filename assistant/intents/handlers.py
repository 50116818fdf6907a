"""The built-in handlers: a ``Match`` becomes an ``Answer``: its words, and its effects.

Answering and acting are apart. ``answer(match, now)`` is pure: it reads the timers and the
devices but changes nothing, so a speculative transcript's answer is ready at the endpoint and a
speculation that is voided leaves no trace. The effects it lists (start a timer, switch a
device...) are carried out only once the turn is committed: by ``apply`` for those that live here
(timers, volume), by the turn controller for the others (``Switch`` becomes a ``DeviceCommand``
event, ``StopReplies`` cancels the replies in flight); see ``stages/intents.py``.

What each intent does:

    HassGetCurrentTime / Date     the local clock, in words ("It's five past three...")
    HassStartTimer                a timer (hours, minutes, seconds; optionally a name)
    HassCancelTimer               the timer named or of that length (or the only one); a ringing
                                  alarm is silenced
    HassCancelAllTimers           every timer
    HassTimerStatus               what is left on the timers
    HassNevermind ("stop")        cancels the reply in flight and silences ringing alarms
    HassSetVolume[Relative]       the output's gain (``contracts.Volume``): set, up, down
    HassMediaPlayer[Un]Mute       the gain to 0 and back
    HassTurnOn / HassTurnOff      the declared devices named, or of that domain in that area
    the user's own intents        their own response; the published intent is their effect

The words come from the intents package's responses ("Turned on the lights", "Timer set for 10
minutes", its error answers), except the time and date (``responses.spoken_time``). A device with
a ``state_topic`` confirms for itself: its answer waits for what it reports (``confirmation``).
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass
from typing import Any

from assistant.config import DeviceConfig
from assistant.contracts import Volume
from assistant.intents.alarms import TimerKeeper
from assistant.intents.matcher import Match, Matcher
from assistant.intents.responses import spoken_date, spoken_time
from assistant.intents.timers import same_name

_LOGGER = logging.getLogger(__name__)

VOLUME_STEP = 0.1
""""Volume up" and "volume down" move the gain by this much (of 0.0..1.0)."""


@dataclass(frozen=True)
class Effect:
    """What a command does once its turn is committed (never for a voided speculation)."""


@dataclass(frozen=True)
class StartTimer(Effect):
    seconds: float
    name: str = ""


@dataclass(frozen=True)
class CancelTimers(Effect):
    ids: tuple[int, ...]


@dataclass(frozen=True)
class Silence(Effect):
    """Stop the ringing alarms."""


@dataclass(frozen=True)
class StopReplies(Effect):
    """Cancel the replies in flight (the turn controller does it)."""


@dataclass(frozen=True)
class SetVolume(Effect):
    level: float
    """0.0 to 1.0."""


@dataclass(frozen=True)
class StepVolume(Effect):
    step: float
    """Added to the volume at the time (negative: down)."""


@dataclass(frozen=True)
class Mute(Effect):
    muted: bool


@dataclass(frozen=True)
class Switch(Effect):
    """Switch a declared device (the turn controller publishes its ``DeviceCommand``)."""

    device: DeviceConfig
    on: bool


@dataclass(frozen=True)
class Answer:
    """A command's reply and what it does."""

    text: str
    """Spoken and published as the reply; empty for "stop"."""
    effects: tuple[Effect, ...] = ()


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _seconds(slots: dict[str, Any], prefix: str = "") -> float | None:
    """hours/minutes/seconds slots (``start_`` ones for a timer named by its length) -> seconds."""
    parts = [
        (slots.get(prefix + unit), scale)
        for unit, scale in (("hours", 3600), ("minutes", 60), ("seconds", 1))
    ]
    if all(value is None for value, _ in parts):
        return None
    return sum(_number(value) * scale for value, scale in parts if value is not None)


class Handlers:
    """Answers matches and carries out their effects, for one pipeline."""

    def __init__(
        self, matcher: Matcher, timers: TimerKeeper | None = None, volume: Volume | None = None
    ) -> None:
        self.matcher = matcher
        self.timers = timers
        self.volume = volume
        self._unmuted = 1.0
        """The volume before "mute"."""

    def adopt(self, old: Handlers) -> None:
        """Carry over what ``old`` remembers (the volume before "mute"): these handlers replace
        them after a reload."""
        self._unmuted = old._unmuted

    # -- answering (pure) --------------------------------------------------------------------

    def answer(self, match: Match, now: float) -> Answer:
        """The reply to ``match`` and its effects, as of ``now`` (seconds since the epoch)."""
        name = match.intent
        if name in self.matcher.custom_intents:
            return Answer(self._say(match))
        if name == "HassGetCurrentTime":
            return Answer(spoken_time(datetime.datetime.fromtimestamp(now)))
        if name == "HassGetCurrentDate":
            return Answer(spoken_date(datetime.datetime.fromtimestamp(now).date()))
        if name == "HassNevermind":
            return Answer("", (StopReplies(), Silence()))
        if name in ("HassTurnOn", "HassTurnOff"):
            return self._switch(match, on=name == "HassTurnOn")
        if name == "HassSetVolume":
            level = min(max(_number(match.slots.get("volume_level")) / 100.0, 0.0), 1.0)
            return Answer(self._say(match), (SetVolume(level),))
        if name == "HassSetVolumeRelative":
            step = match.slots.get("volume_step", "up")
            size = VOLUME_STEP if isinstance(step, str) else _number(step) / 100.0
            return Answer(self._say(match), (StepVolume(-size if step == "down" else size),))
        if name in ("HassMediaPlayerMute", "HassMediaPlayerUnmute"):
            return Answer(self._say(match), (Mute(name == "HassMediaPlayerMute"),))
        return self._timer(match, now)

    def not_understood(self) -> str:
        """The answer to words that match nothing, where no LLM follows."""
        return self.matcher.responses.error("no_intent", "Sorry, I couldn't understand that.")

    def _slots(self, match: Match) -> dict[str, Any]:
        """Slots as Home Assistant gives them to its responses: the words said, else the value."""
        return {name: match.said.get(name, value) for name, value in match.slots.items()}

    def _say(self, match: Match, fallback: str = "Done.", **values: Any) -> str:
        slots = self._slots(match) | values.pop("slots", {})
        return self.matcher.responses.intent(match.intent, match.response, fallback, slots=slots, **values)

    def _error(self, key: str, fallback: str, **values: Any) -> Answer:
        return Answer(self.matcher.responses.error(key, fallback, **values))

    def _switch(self, match: Match, *, on: bool) -> Answer:
        devices, slots = self.matcher.devices, match.slots
        area = str(slots.get("area", ""))
        if "name" in slots:
            named = [d for d in devices if d.name == slots["name"]]
            if area and area != self.matcher.area:
                named = [d for d in named if same_name(d.area, area)]
                if not named:
                    return self._error("no_entity_in_area", "Sorry, I don't know that device there.",
                                       entity=match.said.get("name", slots["name"]), area=area)  # fmt: skip
            targets = named
        else:
            domain = str(slots.get("domain", ""))
            targets = [d for d in devices if d.domain == domain and (not area or same_name(d.area, area))]
            if not targets:
                key = "no_domain_in_area" if area else "no_domain"
                return self._error(key, "Sorry, I don't know any of those.", domain=domain, area=area)
        if not targets:
            return self._error("no_entity", "Sorry, I don't know that device.", entity=match.text)
        text = self._say(match, "Done.", state={"domain": targets[0].domain, "name": targets[0].name})
        return Answer(text, tuple(Switch(device, on) for device in targets))

    def _timer(self, match: Match, now: float) -> Answer:
        timers, name = self.timers, match.intent
        if timers is None:
            return self._error("no_timer_support", "Sorry, timers are not supported here.")
        if name == "HassStartTimer":
            seconds = _seconds(match.slots) or 0.0
            if seconds <= 0:
                return self._error("handle_error", "Sorry, how long should the timer run?")
            return Answer(
                self._say(match, "Timer set."), (StartTimer(seconds, str(match.slots.get("name", ""))),)
            )
        if name == "HassCancelAllTimers":
            ids = tuple(t.id for t in timers.timers.running())
            effects = (CancelTimers(ids), Silence())
            return Answer(self._say(match, "Timers cancelled.", slots={"canceled": len(ids)}), effects)
        target_name = match.slots.get("name")
        found = timers.timers.find(
            name=None if target_name is None else str(target_name), seconds=_seconds(match.slots, "start_")
        )
        if name == "HassTimerStatus":
            return Answer(self._say(match, "No timers.", slots={"timers": [_status(t, now) for t in found]}))
        if name != "HassCancelTimer":
            raise ValueError(f"no handler for the intent {name}")
        if not found and timers.ringing:
            return Answer("", (Silence(),))  # "stop the timer" while it rings
        if not found:
            return self._error("timer_not_found", "Sorry, I couldn't find that timer.")
        if len(found) > 1:
            return self._error("multiple_timers_matched", "Sorry, which timer?")
        return Answer(self._say(match, "Timer cancelled."), (CancelTimers((found[0].id,)), Silence()))

    # -- acting (once committed) -------------------------------------------------------------

    def apply(self, effect: Effect, now: float) -> None:
        """Carry out an effect that lives here: timers and volume."""
        match effect:
            case StartTimer(seconds, name) if self.timers is not None:
                self.timers.start(now, seconds, name)
            case CancelTimers(ids) if self.timers is not None:
                self.timers.cancel(ids)
            case Silence() if self.timers is not None:
                self.timers.silence()
            case SetVolume(level):
                self._set_volume(level)
            case StepVolume(step) if self.volume is not None:
                base = self._unmuted if self.volume.volume == 0.0 else self.volume.volume
                self._set_volume(base + step)
            case Mute(True) if self.volume is not None and self.volume.volume > 0.0:
                self._unmuted = self.volume.volume
                self._set_volume(0.0, remember=False)
            case Mute(False) if self.volume is not None and self.volume.volume == 0.0:
                self._set_volume(self._unmuted)
            case _:
                _LOGGER.debug("intents: nothing to do here for %r", effect)

    def _set_volume(self, level: float, *, remember: bool = True) -> None:
        if self.volume is None:
            return
        level = round(min(max(level, 0.0), 1.0), 3)
        self.volume.volume = level
        if remember and level > 0.0:
            self._unmuted = level
        _LOGGER.info("intents: volume %.0f%%", level * 100)


def state_word(payload: str) -> str | None:
    """The state in a device's payload, lower case: ``ON``, ``{"state": "ON"}`` (Zigbee2MQTT),
    ``{"POWER": "ON"}`` (Tasmota) -> ``on``; None where there is none."""
    text = payload.strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text.lower() or None
    if isinstance(data, str):
        return data.lower()
    if isinstance(data, dict):
        for key in ("state", "State", "POWER", "power"):
            if isinstance(data.get(key), str):
                return str(data[key]).lower()
    return None


def reported_on(device: DeviceConfig, payload: str) -> bool | None:
    """What a device's state report says: on (True), off (False), or nothing readable (None)."""
    word = state_word(payload)
    if word is None:
        return None
    if word == state_word(device.payload_on):
        return True
    if word == state_word(device.payload_off):
        return False
    return {"on": True, "off": False}.get(word)


def confirmation(answer: Answer, reports: dict[str, bool | None]) -> str:
    """The answer to a command that switched devices which report their state, from what they
    reported (device name -> on/off/unreadable; absent: no report in time)."""
    for effect in answer.effects:
        if not isinstance(effect, Switch) or not effect.device.state_topic:
            continue
        name = effect.device.name
        if name not in reports:
            return f"The {name} did not answer."
        if reports[name] is not None and reports[name] != effect.on:
            return f"The {name} is still {'off' if effect.on else 'on'}."
    return answer.text


def _status(timer: Any, now: float) -> dict[str, Any]:
    """A timer as the package's ``HassTimerStatus`` answer reads it (Home Assistant's fields)."""
    left = round(timer.left(now))
    hours, rest = divmod(left, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        minutes, seconds = minutes + (seconds >= 30), 0
    start_hours, start_rest = divmod(round(timer.seconds), 3600)
    start_minutes, start_seconds = divmod(start_rest, 60)
    return {
        "id": timer.id,
        "name": timer.name,
        "area": None,
        "is_active": True,
        "total_seconds_left": left,
        "rounded_hours_left": hours,
        "rounded_minutes_left": minutes,
        "rounded_seconds_left": seconds,
        "start_hours": start_hours,
        "start_minutes": start_minutes,
        "start_seconds": start_seconds,
    }
