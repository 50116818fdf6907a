"""What a command says back: the intents package's responses, and the time and date in words.

Home Assistant's sentences come with their answers, per intent and response key ("Turned on the
lights", "Timer set for 10 minutes"), written as Jinja templates over the matched ``slots`` (and
``state`` for a device). They are rendered here in Jinja's sandbox, white space folded, as Home
Assistant renders them. The time and date are said as a person says them ("It's five past
three in the afternoon"), not read off a clock face ("3:05 PM"), so they sound right when spoken.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import SandboxedEnvironment

_LOGGER = logging.getLogger(__name__)

_ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
]  # fmt: skip
_TENS = {20: "twenty", 30: "thirty", 40: "forty", 50: "fifty"}
_ORDINALS = [
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
    "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
    "eighteenth", "nineteenth", "twentieth",
]  # fmt: skip


def number_words(n: int) -> str:
    """0-59 in words ("forty-two")."""
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens * 10] + (f"-{_ONES[ones]}" if ones else "")


def ordinal_words(n: int) -> str:
    """1-31 as an ordinal in words ("twenty-third")."""
    if n <= 20:
        return _ORDINALS[n - 1]
    tens, ones = divmod(n, 10)
    if ones == 0:
        return _TENS[tens * 10][:-1] + "ieth"
    return f"{_TENS[tens * 10]}-{_ORDINALS[ones - 1]}"


def spoken_time(moment: datetime.time | datetime.datetime) -> str:
    """ "It's three forty-two in the afternoon." Noon and midnight by name."""
    hour, minute = moment.hour, moment.minute
    if minute == 0 and hour in (0, 12):
        return "It's midnight." if hour == 0 else "It's noon."
    twelve = hour % 12 or 12
    if minute == 0:
        clock = f"{number_words(twelve)} o'clock"
    elif minute < 10:
        clock = f"{number_words(twelve)} oh {number_words(minute)}"
    else:
        clock = f"{number_words(twelve)} {number_words(minute)}"
    if hour < 12:
        part = "in the morning" if hour else "at night"
    elif hour < 18:
        part = "in the afternoon"
    else:
        part = "in the evening" if hour < 21 else "at night"
    return f"It's {clock} {part}."


def spoken_date(day: datetime.date) -> str:
    """ "Today is Tuesday, March third." """
    return f"Today is {day:%A}, {day:%B} {ordinal_words(day.day)}."


def spoken_duration(seconds: float) -> str:
    """ "1 hour and 5 minutes", "10 minutes", "30 seconds" (rounded to what is worth saying)."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        secs = 0
    parts = [
        f"{value} {unit}{'' if value == 1 else 's'}"
        for value, unit in ((hours, "hour"), (minutes, "minute"), (secs, "second"))
        if value
    ]
    if not parts:
        return "0 seconds"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


class Responses:
    """The answers of one language's intents: per intent and key, and the error answers."""

    def __init__(
        self, intents: Mapping[str, Mapping[str, str]], errors: Mapping[str, str] | None = None
    ) -> None:
        self.intents = intents
        self.errors = errors or {}
        self._env = SandboxedEnvironment()

    def has(self, intent: str, key: str = "default") -> bool:
        return key in self.intents.get(intent, {})

    def intent(self, intent: str, key: str, fallback: str = "Done.", **values: Any) -> str:
        """The answer to ``intent`` under ``key`` (else its ``default``), rendered with ``values``
        (``slots=``, ``state=``); ``fallback`` where the package has none or it fails to render."""
        answers = self.intents.get(intent, {})
        template = answers.get(key, answers.get("default"))
        return fallback if template is None else self.render(template, fallback, **values)

    def error(self, key: str, fallback: str, **values: Any) -> str:
        """An error answer (``timer_not_found``, ``no_entity``...), rendered with ``values``."""
        template = self.errors.get(key)
        return fallback if template is None else self.render(template, fallback, **values)

    def render(self, template: str, fallback: str = "", **values: Any) -> str:
        try:
            text = self._env.from_string(template).render(**values)
        except (TemplateError, TypeError, ValueError, KeyError, AttributeError) as err:  # package data
            _LOGGER.warning("intents: a response did not render (%s); said %r instead", err, fallback)
            return fallback
        return sentence(text)


def sentence(text: str) -> str:
    """White space folded, and a full stop where the text ends without one ("Turned on the
    light" -> "Turned on the light."): a reply is said, and cut into clauses, as a sentence."""
    text = " ".join(text.split())
    return text + "." if text and text[-1].isalnum() else text
