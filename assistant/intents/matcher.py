"""Matching a transcript to a command: hassil over Home Assistant's sentences and the user's own.

The intents package (``home_assistant_intents``) ships the sentences of Home Assistant's Assist
per language. Only the intents the handlers carry out are kept (``HANDLED``); of those, only the
sentences that can mean something here: ``HassTurnOn``/``HassTurnOff`` for the device domains a
pipeline can declare (``config.DEVICE_DOMAINS``), volume and mute for the assistant's own
speaker, timers without areas or delayed commands, nothing about floors. The user's own sentence
files (``intents.sentences``, hassil YAML) may add sentences to those intents or declare intents
of their own; theirs are tried first.

Every slot list a sentence refers to must exist, or hassil raises ``MissingListError``: ``area``
(the devices' areas and ``intents.area``), ``name`` (the devices' names and aliases, each with its
domain as context) and ``floor`` (none) are made here; the package brings the rest (numbers,
volume steps, timer names). The assistant's own room is every match's context (``area``), as a
satellite's room is in Home Assistant, so "turn on the lights" and "volume up" match.

The package's sentences are parsed once per process and language (``package_intents``; read-only
once parsed). A first match parses the templates it meets (~430 ms for English), so ``warm`` runs
one at start-up, off the event loop. ``match`` is thread-safe.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hassil import Intents, RecognizeResult, SlotList, TextSlotList, recognize_best
from hassil.util import merge_dict

from assistant.config import DEVICE_DOMAINS, Config, DeviceConfig, user_pipelines_dir
from assistant.errors import ConfigError
from assistant.intents.responses import Responses

_LOGGER = logging.getLogger(__name__)

HANDLED = frozenset(
    {
        "HassGetCurrentTime",
        "HassGetCurrentDate",
        "HassStartTimer",
        "HassCancelTimer",
        "HassCancelAllTimers",
        "HassTimerStatus",
        "HassNevermind",
        "HassSetVolume",
        "HassSetVolumeRelative",
        "HassMediaPlayerMute",
        "HassMediaPlayerUnmute",
        "HassTurnOn",
        "HassTurnOff",
    }
)
"""The package's intents that the handlers (``handlers.py``) carry out."""

SPEAKER_INTENTS = frozenset(
    {"HassSetVolume", "HassSetVolumeRelative", "HassMediaPlayerMute", "HassMediaPlayerUnmute"}
)
"""Intents about the assistant's own speaker: only their sentences without a room or a name."""
TIMER_INTENTS = frozenset({"HassStartTimer", "HassCancelTimer", "HassCancelAllTimers", "HassTimerStatus"})

EXTRA_SENTENCES: dict[str, dict[str, list[str]]] = {
    "en": {
        "HassNevermind": [
            "stop [it|that|talking]",
            "(be|keep) quiet",
            "(quiet|silence|enough|shut up|cancel|cancel that|that's enough)",
            "(stop|silence|dismiss) the (alarm|timer alarm)",
            "turn (off|out) the alarm",
        ],
        "HassGetCurrentDate": ["what day is (it|today) [today]", "(what's|what is) today"],
    }
}
"""Sentences of ours, besides the package's: "stop" silences a reply or a ringing alarm; "what
day is it" asks the date."""

WARM_TEXT = "what time is it"


@dataclass(frozen=True)
class Match:
    """A transcript that matched a command."""

    intent: str
    """The intent's name (``HassTurnOn``), or a user intent's own."""
    slots: dict[str, Any]
    """Slot name -> value, JSON-able (``{"area": "kitchen", "domain": "light"}``; numbers as
    numbers: ``{"minutes": 10}``)."""
    said: dict[str, str]
    """Slot name -> the words said for it (``{"minutes": "ten"}``); absent for fixed slots."""
    text: str
    """The words matched (the transcript)."""
    response: str = "default"
    """The key of its answer among the intent's responses (``lights_area``)."""
    custom: bool = False
    """Matched by one of the user's own sentences."""


@dataclass(frozen=True)
class Package:
    """One language's sentences and answers, from the intents package."""

    intents: Intents
    responses: Mapping[str, Mapping[str, str]]
    errors: Mapping[str, str]


def _domains(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {str(v) for v in value}
    return set()


def keeps(intent: str, data: Mapping[str, Any]) -> bool:
    """Whether one of the package's sentence groups can mean something here."""
    combination = str(data.get("metadata", {}).get("slot_combination", ""))
    if "floor" in combination or combination.startswith("command"):
        return False
    if intent in SPEAKER_INTENTS:
        return combination == "default"
    if intent in TIMER_INTENTS and "area" in combination:
        return False
    domains = _domains(data.get("slots", {}).get("domain"))
    domains |= _domains(data.get("requires_context", {}).get("domain"))
    return not domains or bool(domains & set(DEVICE_DOMAINS))


@functools.lru_cache(maxsize=4)
def package_intents(language: str) -> Package:
    """The intents package's sentences for ``language``, kept to what is handled here."""
    from home_assistant_intents import get_intents, get_languages

    data = get_intents(language)
    if data is None:
        raise ConfigError(
            f"intents.language = {language!r} has no command sentences: choose one of {get_languages()}"
        )
    data["intents"] = {
        name: {"data": [group for group in intent["data"] if keeps(name, group)]}
        for name, intent in data["intents"].items()
        if name in HANDLED
    }
    for name, sentences in EXTRA_SENTENCES.get(language, {}).items():
        data["intents"].setdefault(name, {"data": []})["data"].append({"sentences": sentences})
    responses = data.get("responses", {})
    return Package(Intents.from_dict(data), responses.get("intents", {}), responses.get("errors", {}))


def sentence_path(path: str) -> Path:
    """``intents.sentences`` entry -> file: ``~`` expanded, relative to the config folder."""
    given = Path(path).expanduser()
    return given if given.is_absolute() else user_pipelines_dir().parent / given


def load_user_sentences(paths: Sequence[Path], language: str) -> dict[str, Any]:
    """The user's sentence files merged into one hassil dict (``{}`` when there are none)."""
    import yaml

    merged: dict[str, Any] = {}
    for path in paths:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"intents.sentences: cannot read {path}: {err}") from err
        except yaml.YAMLError as err:
            raise ConfigError(f"intents.sentences: {path} is not valid YAML: {err}") from err
        if not isinstance(data, dict) or not isinstance(data.get("intents"), dict):
            raise ConfigError(f"intents.sentences: {path} has no 'intents:' table (see README)")
        merge_dict(merged, data)
    if not merged:
        return {}
    merged.setdefault("language", language)
    for name in [n for n in merged["intents"] if n.startswith("Hass") and n not in HANDLED]:
        _LOGGER.warning("intents: %s is not carried out here; its sentences are ignored", name)
        del merged["intents"][name]
    return merged


def slot_lists(devices: Sequence[DeviceConfig], area: str) -> dict[str, SlotList]:
    """The lists hassil needs that only the pipeline knows: areas, device names, floors (none)."""
    areas = sorted({d.area for d in devices if d.area} | ({area} if area else set()))
    names = [(name, d.name, {"domain": d.domain}) for d in devices for name in d.names]
    return {
        "area": TextSlotList.from_tuples([(a, a) for a in areas], allow_template=False, name="area"),
        "name": TextSlotList.from_tuples(names, allow_template=False, name="name"),
        "floor": TextSlotList.from_tuples([], name="floor"),
    }


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    return str(value)


class Matcher:
    """Matches transcripts against one language's sentences, the user's and the devices' names."""

    def __init__(
        self,
        language: str = "en",
        devices: Sequence[DeviceConfig] = (),
        *,
        area: str = "",
        sentence_files: Sequence[Path] = (),
    ) -> None:
        """Reads the user's sentence files now (a bad one is a ``ConfigError`` at start-up); the
        package's sentences are read by ``warm`` or the first ``match``."""
        self.language = language
        self.area = area
        self.devices = tuple(devices)
        user = load_user_sentences(sentence_files, language)
        self._user = Intents.from_dict(user) if user else None
        self._user_responses: dict[str, dict[str, str]] = user.get("responses", {}).get("intents", {})
        self.custom_intents = frozenset(n for n in (user.get("intents") or {}) if n not in HANDLED)
        """The user's own intents: published and answered with their own response."""
        self._lists = slot_lists(self.devices, area)
        self._context = {"area": {"value": area, "text": area}}
        self._lock = threading.Lock()
        self._package: Package | None = None
        self._responses: Responses | None = None

    @classmethod
    def from_config(cls, config: Config) -> Matcher:
        files = [sentence_path(path) for path in config.intents.sentences]
        for path in files:
            if not path.is_file():
                raise ConfigError(f"intents.sentences: {path} is not a file")
        language = config.intents.language or config.asr.language
        from home_assistant_intents import get_languages

        if language not in get_languages():
            raise ConfigError(
                f"intents.language = {language!r} has no command sentences: choose one of"
                f" {sorted(get_languages())} (empty: asr.language)"
            )
        return cls(language, config.devices, area=config.intents.area, sentence_files=files)

    @property
    def responses(self) -> Responses:
        """The answers (the package's, the user's over them); reads the package on first use."""
        if self._responses is not None:  # read once: no lock (a match may hold it for a while)
            return self._responses
        with self._lock:
            self._load()
            assert self._responses is not None
            return self._responses

    def warm(self) -> None:
        """Read the package's sentences and parse the templates a first match needs (~0.4 s)."""
        self.match(WARM_TEXT)

    def match(self, text: str) -> Match | None:
        """The command ``text`` says, or None. The user's sentences are tried first; among
        several matches, one that names a device wins (hassil's ``recognize_best``)."""
        with self._lock:
            package = self._load()
            if self._user is not None:
                result = recognize_best(
                    text,
                    self._user,
                    slot_lists={**package.intents.slot_lists, **self._lists, **self._user.slot_lists},
                    expansion_rules={**package.intents.expansion_rules, **self._user.expansion_rules},
                    skip_words=package.intents.skip_words,
                    intent_context=self._context,
                    language=self.language,
                    best_slot_name="name",
                )
                if result is not None:
                    return self._match(result, text, custom=True)
            result = recognize_best(
                text,
                package.intents,
                slot_lists=self._lists,
                intent_context=self._context,
                language=self.language,
                best_slot_name="name",
            )
            return None if result is None else self._match(result, text, custom=False)

    def _load(self) -> Package:
        if self._package is None:
            package = package_intents(self.language)
            answers = {name: dict(keys) for name, keys in package.responses.items()}
            merge_dict(answers, self._user_responses)
            self._responses = Responses(answers, package.errors)
            self._package = package
        return self._package

    @staticmethod
    def _match(result: RecognizeResult, text: str, *, custom: bool) -> Match:
        slots: dict[str, Any] = {}
        said: dict[str, str] = {}
        for name, entity in result.entities.items():
            value = _jsonable(entity.value)
            if value in ("", None):
                continue  # the assistant's own area, where it has none
            slots[name] = value
            if entity.text.strip():
                said[name] = entity.text.strip()
        return Match(result.intent.name, slots, said, text, result.response or "default", custom)
