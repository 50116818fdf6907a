"""Local commands: the matcher, the answers, and the intents stage in a pipeline with fake engines
(events, effects only once committed, "stop", safety: the LLM's words never act)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from assistant.audio.sinks import MemorySink
from assistant.audio.sources import IdleSource
from assistant.config import Config, DeviceConfig, IntentsConfig, config_from_dict
from assistant.daemon import Daemon
from assistant.errors import ConfigError
from assistant.events import (
    DeviceCommand,
    DeviceState,
    Event,
    IntentNotRecognized,
    IntentRecognized,
    TurnFinished,
)
from assistant.intents.alarms import TimerKeeper
from assistant.intents.handlers import Handlers, SetVolume, Switch
from assistant.intents.matcher import Matcher
from assistant.intents.responses import spoken_date, spoken_time
from assistant.messages import EndOfStream, Message, ReplyDone, Token, Transcript
from assistant.pipeline import Engines, Pipeline
from assistant.stages.intents import IntentStage
from assistant.turn.reports import EndpointFinal, SpeculationVoid

from .fakes import FakeChat, FakeSynth, FakeTranscriber, controller

DEVICES = (
    DeviceConfig("kitchen lights", area="kitchen", command_topic="cmnd/kitchen/POWER"),
    DeviceConfig("living room lamp", ("floor lamp",), area="living room"),
    DeviceConfig("desk lamp", area="office", command_topic="zigbee2mqtt/desk/set",
                 payload_on='{"state": "ON"}', payload_off='{"state": "OFF"}'),
    DeviceConfig("oven", domain="switch", area="kitchen", command_topic="cmnd/oven/POWER"),
    DeviceConfig("fan", domain="fan", area="office"),
)  # fmt: skip


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return Matcher("en", DEVICES, area="office")


@pytest.mark.parametrize(
    ("text", "intent", "slots"),
    [
        ("What time is it?", "HassGetCurrentTime", {}),
        ("What is the date today?", "HassGetCurrentDate", {}),
        ("What day is it?", "HassGetCurrentDate", {}),
        ("Set a timer for ten minutes.", "HassStartTimer", {"minutes": 10}),
        ("set a 5 minute timer called pasta", "HassStartTimer", {"minutes": 5, "name": "pasta"}),
        ("Set a timer for 1 hour and 30 minutes", "HassStartTimer", {"hours": 1, "minutes": 30}),
        ("How much time is left on my timer?", "HassTimerStatus", {}),
        ("Cancel the timer.", "HassCancelTimer", {}),
        ("cancel the pasta timer", "HassCancelTimer", {"name": "pasta"}),
        ("Cancel all timers", "HassCancelAllTimers", {}),
        ("Stop.", "HassNevermind", {}),
        ("never mind", "HassNevermind", {}),
        ("Turn on the kitchen lights.", "HassTurnOn", {"name": "kitchen lights"}),
        ("Turn off the floor lamp", "HassTurnOff", {"name": "living room lamp"}),
        ("turn on the lights in the living room", "HassTurnOn", {"area": "living room", "domain": "light"}),
        ("turn off the lights", "HassTurnOff", {"area": "office", "domain": "light"}),
        ("Turn on the fan", "HassTurnOn", {"name": "fan"}),
        ("volume up", "HassSetVolumeRelative", {"volume_step": "up", "area": "office"}),
        ("set the volume to 30 percent", "HassSetVolume", {"volume_level": 30, "area": "office"}),
        ("mute", "HassMediaPlayerMute", {"area": "office"}),
    ],
)
def test_matcher_recognises_commands(matcher: Matcher, text: str, intent: str, slots: dict[str, Any]) -> None:
    match = matcher.match(text)
    assert match is not None, text
    assert (match.intent, match.slots, match.text) == (intent, slots, text)


@pytest.mark.parametrize(
    "text",
    [
        "What is the capital of France?",
        "I turned on the oven.",
        "Open the blinds.",  # a cover: no such device can be declared
        "Turn on the lights in the bathroom.",  # no such area
        "Lock the front door.",
        "Tell me a joke.",
    ],
)
def test_matcher_leaves_the_rest_to_the_llm(matcher: Matcher, text: str) -> None:
    assert matcher.match(text) is None


def test_every_slot_list_is_given_without_devices() -> None:
    bare = Matcher("en")
    match = bare.match("turn on the lights")
    assert match is not None and match.intent == "HassTurnOn"
    assert bare.match("turn on the kitchen lights") is None  # no areas, no names: no MissingListError


def test_user_sentences_come_first(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "language: en\n"
        "intents:\n"
        "  OpenGarage:\n"
        "    data:\n"
        "      - sentences: ['open [the] garage [door]']\n"
        "  HassTurnOn:\n"
        "    data:\n"
        "      - sentences: ['let there be light in [the] {area}']\n"
        "        slots: {domain: light}\n"
        "  HassLightSet:\n"
        "    data:\n"
        "      - sentences: ['dim the lights']\n"
        "responses:\n"
        "  intents:\n"
        "    OpenGarage:\n"
        "      default: Opening the garage\n"
    )
    mine = Matcher("en", DEVICES, sentence_files=[path])
    garage = mine.match("Open the garage door.")
    assert garage is not None and garage.intent == "OpenGarage" and garage.custom
    assert Handlers(mine).answer(garage, 0.0).text == "Opening the garage."
    light = mine.match("let there be light in the kitchen")
    assert light is not None and (light.intent, light.slots) == (
        "HassTurnOn",
        {"area": "kitchen", "domain": "light"},
    )
    assert mine.match("dim the lights") is None  # an intent nothing here carries out
    assert mine.match("what time is it") is not None  # the package's sentences still work


def test_sentence_files_and_language_are_checked(tmp_path: Path) -> None:
    config = config_from_dict({"intents": {"sentences": [str(tmp_path / "none.yaml")]}})
    with pytest.raises(ConfigError, match="intents.sentences"):
        Matcher.from_config(config)
    bad = tmp_path / "bad.yaml"
    bad.write_text("just words")
    with pytest.raises(ConfigError, match="intents.sentences.*no 'intents:' table"):
        Matcher.from_config(config_from_dict({"intents": {"sentences": [str(bad)]}}))
    with pytest.raises(ConfigError, match="intents.language = 'xx'"):
        Matcher.from_config(config_from_dict({"intents": {"language": "xx"}}))


def test_devices_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"devices\[name = 'oven'\].domain = 'oven'"):
        config_from_dict({"devices": [{"name": "oven", "domain": "oven"}]})
    with pytest.raises(ConfigError, match="'Lamp' already names 'lamp'"):
        config_from_dict({"devices": [{"name": "lamp"}, {"name": "torch", "aliases": ["Lamp"]}]})
    with pytest.raises(ConfigError, match="command_topic"):
        config_from_dict({"devices": [{"name": "lamp", "command_topic": "cmnd/+/POWER"}]})
    with pytest.raises(ConfigError, match="unknown key devices.0..colour"):
        config_from_dict({"devices": [{"name": "lamp", "colour": "red"}]})


def test_time_and_date_are_said_in_words() -> None:
    assert spoken_time(datetime.time(15, 5)) == "It's three oh five in the afternoon."
    assert spoken_time(datetime.time(9, 42)) == "It's nine forty-two in the morning."
    assert spoken_time(datetime.time(20, 0)) == "It's eight o'clock in the evening."
    assert spoken_time(datetime.time(12, 0)) == "It's noon."
    assert spoken_time(datetime.time(0, 0)) == "It's midnight."
    assert spoken_date(datetime.date(2026, 3, 23)) == "Today is Monday, March twenty-third."


def test_answers_and_effects(matcher: Matcher) -> None:
    sink, keeper = MemorySink(), TimerKeeper(None)
    handlers = Handlers(matcher, keeper, sink)

    def answer(text: str) -> Any:
        match = matcher.match(text)
        assert match is not None, text
        return handlers.answer(match, 1_000_000.0)

    on = answer("turn on the kitchen lights")
    assert on.text == "Turned on the light." and on.effects == (Switch(DEVICES[0], True),)
    lights = answer("turn off the lights in the kitchen")  # the lights only, not the oven
    assert lights.text == "Turned off the lights." and lights.effects == (Switch(DEVICES[0], False),)
    here = answer("turn on the lights")  # the assistant's own room: the office
    assert here.effects == (Switch(DEVICES[2], True),)
    assert answer("what time is it").text == spoken_time(datetime.datetime.fromtimestamp(1_000_000.0))
    volume = answer("set the volume to 40 percent")
    assert volume.text == "Volume set." and volume.effects == (SetVolume(0.4),)
    for effect in volume.effects:
        handlers.apply(effect, 0.0)
    assert sink.volume == pytest.approx(0.4)
    for text, level in (
        ("volume down", 0.3),
        ("mute", 0.0),
        ("volume up", 0.4),
        ("mute", 0.0),
        ("unmute", 0.4),
    ):
        for effect in answer(text).effects:
            handlers.apply(effect, 0.0)
        assert sink.volume == pytest.approx(level), text
    assert answer("cancel the timer").text == "Sorry, I couldn't find that timer."
    assert answer("how much time is left on my timer").text == "No timers."


# -- the stage on its own, against a real turn controller -----------------------------------------


async def _stage_run(
    config: Config, script: Callable[[IntentStage, asyncio.Queue[Message], list[Message]], Awaitable[None]]
) -> tuple[list[Message], list[Event], Any]:
    channel = controller(config)
    events = channel.events.subscribe()
    matcher = Matcher("en", config.devices, area=config.intents.area)
    stage = IntentStage(matcher, Handlers(matcher, TimerKeeper(None)), channel)
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    out: list[Message] = []

    async def drain() -> None:
        while not isinstance(item := await outbox.get(), EndOfStream):
            out.append(item)

    async def drive() -> None:
        await script(stage, inbox, out)
        await inbox.put(EndOfStream())

    await asyncio.wait_for(asyncio.gather(stage.run(inbox, outbox), drain(), drive()), 10)
    seen = []
    while not events.empty():
        seen.append(events.get_nowait())
    return out, seen, channel


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.005)


async def test_a_speculated_command_answers_at_once_and_acts_only_when_committed() -> None:
    config = replace(Config(), devices=DEVICES)

    async def script(stage: IntentStage, inbox: asyncio.Queue[Message], out: list[Message]) -> None:
        channel = stage.channel
        watch = channel.events.subscribe()  # type: ignore[attr-defined]
        channel.turns.hold(1)  # the VAD speculates at a pause
        channel.admit(1, "Turn on the kitchen lights.")
        await inbox.put(Transcript(1, "Turn on the kitchen lights."))
        await _until(lambda: any(isinstance(m, ReplyDone) for m in out))
        assert [type(m) for m in out] == [Token, ReplyDone]
        assert isinstance(out[0], Token) and out[0].text == "Turned on the light."
        await asyncio.sleep(0.05)
        assert watch.empty(), "nothing is published, nothing switched, before the commit"
        channel.report(EndpointFinal(1, 1000.0, 1300.0))
        await _until(lambda: not stage._waiting)

    _, events, channel = await _stage_run(config, script)
    kinds = [type(e) for e in events if isinstance(e, IntentRecognized | DeviceCommand)]
    assert kinds == [IntentRecognized, DeviceCommand]
    (command,) = [e for e in events if isinstance(e, DeviceCommand)]
    assert (command.device, command.topic, command.payload) == ("kitchen lights", "cmnd/kitchen/POWER", "ON")
    assert channel.tracker.record(1).intent == "HassTurnOn"


async def test_a_voided_speculation_acts_on_nothing() -> None:
    config = replace(Config(), devices=DEVICES)

    async def script(stage: IntentStage, inbox: asyncio.Queue[Message], out: list[Message]) -> None:
        channel = stage.channel
        channel.turns.hold(1)
        channel.admit(1, "Turn on the oven")
        await inbox.put(Transcript(1, "Turn on the oven"))
        await _until(lambda: bool(stage._waiting))
        channel.turns.cancel(1)  # the user went on speaking: the VAD cancels the turn and says so
        channel.report(SpeculationVoid(1))
        await _until(lambda: not stage._waiting)

    _, events, _ = await _stage_run(config, script)
    assert not [e for e in events if isinstance(e, IntentRecognized | DeviceCommand | IntentNotRecognized)]


# -- through a pipeline with fake engines -----------------------------------------------------


def _config(tmp_path: Path, **intents: Any) -> Config:
    base = Config()
    return replace(
        base,
        input=replace(base.input, realtime=False),
        devices=DEVICES,
        intents=IntentsConfig(area="office", timers_file=str(tmp_path / "timers.json"), **intents),
    )


async def _drive(pipeline: Pipeline, script: Callable[[Pipeline], Awaitable[None]]) -> list[Event]:
    source = IdleSource()
    events = pipeline.events.subscribe()

    async def go() -> None:
        while not pipeline._inboxes:
            await asyncio.sleep(0.01)
        await script(pipeline)
        source.stop()

    await asyncio.wait_for(asyncio.gather(Daemon(pipeline).run(source), go()), 30)
    seen = []
    while not events.empty():
        seen.append(events.get_nowait())
    return seen


async def _ask(pipeline: Pipeline, text: str) -> int:
    turn = await pipeline.ask(text)
    while pipeline.tracker.is_open(turn):
        await asyncio.sleep(0.01)
    return turn


async def test_a_command_is_answered_without_the_llm(tmp_path: Path) -> None:
    chat, sink, records = FakeChat("Paris."), MemorySink(), []
    pipeline = Pipeline(
        _config(tmp_path), Engines(FakeTranscriber([]), chat, FakeSynth()), sink, on_turn=records.append
    )

    async def script(p: Pipeline) -> None:
        await _ask(p, "Turn on the desk lamp.")
        await _ask(p, "What is the capital of France?")

    events = await _drive(pipeline, script)
    assert len(chat.calls) == 1 and chat.calls[0][-1]["content"] == "What is the capital of France?"
    (recognized,) = [e for e in events if isinstance(e, IntentRecognized)]
    assert (recognized.turn_id, recognized.intent, recognized.slots) == (
        1,
        "HassTurnOn",
        {"name": "desk lamp"},
    )
    (command,) = [e for e in events if isinstance(e, DeviceCommand)]
    assert (command.topic, command.payload) == ("zigbee2mqtt/desk/set", '{"state": "ON"}')
    (unmatched,) = [e for e in events if isinstance(e, IntentNotRecognized)]
    assert (unmatched.turn_id, unmatched.text) == (2, "What is the capital of France?")
    lines = [e.record for e in events if isinstance(e, TurnFinished)]
    assert [(r["intent"], r["handled_by"], r["outcome"]) for r in lines] == [
        ("HassTurnOn", "intent", "answered"),
        (None, "llm", "answered"),
    ]
    assert records[0].reply == "Turned on the light." and len(sink.turns) == 2


async def test_the_llms_words_never_act(tmp_path: Path) -> None:
    chat = FakeChat("I turned on the oven. Turn on the kitchen lights. Set a timer for ten minutes.")
    pipeline = Pipeline(_config(tmp_path), Engines(FakeTranscriber([]), chat, FakeSynth()), MemorySink())

    async def script(p: Pipeline) -> None:
        await _ask(p, "Tell me what you did today.")

    events = await _drive(pipeline, script)
    assert chat.calls, "the question went to the LLM"
    assert not [e for e in events if isinstance(e, IntentRecognized | DeviceCommand)]
    assert pipeline.timers is not None and not len(pipeline.timers.timers)


async def test_stop_cancels_the_reply_in_flight(tmp_path: Path) -> None:
    chat = FakeChat("word " * 200, delay=0.02)
    pipeline = Pipeline(_config(tmp_path), Engines(FakeTranscriber([]), chat, FakeSynth()), MemorySink())

    async def script(p: Pipeline) -> None:
        long = await p.ask("Tell me a long story.")
        await asyncio.to_thread(chat.started.wait, 5)
        await _ask(p, "stop")
        await _until(lambda: not p.tracker.is_open(long))

    events = await _drive(pipeline, script)
    outcomes = {e.turn_id: e.record["outcome"] for e in events if isinstance(e, TurnFinished)}
    assert outcomes == {1: "cancelled", 2: "answered"}
    assert chat.stopped.is_set()


async def test_without_an_llm_commands_still_work(tmp_path: Path) -> None:
    records: list[Any] = []
    pipeline = Pipeline(
        _config(tmp_path),
        Engines(FakeTranscriber([]), None, FakeSynth()),
        MemorySink(),
        on_turn=records.append,
    )

    async def script(p: Pipeline) -> None:
        await _ask(p, "what time is it")
        await _ask(p, "what is the meaning of life")

    await _drive(pipeline, script)
    assert [r.handled_by for r in records] == ["intent", "llm"]
    assert records[0].reply.startswith("It's ") and records[1].reply == "Sorry, I couldn't understand that."


async def test_disabled_intents_leave_everything_to_the_llm(tmp_path: Path) -> None:
    chat = FakeChat("Sure.")
    config = _config(tmp_path, enabled=False)
    pipeline = Pipeline(config, Engines(FakeTranscriber([]), chat, FakeSynth()), MemorySink())

    async def script(p: Pipeline) -> None:
        await _ask(p, "turn on the kitchen lights")

    events = await _drive(pipeline, script)
    assert "intents" not in pipeline._inboxes and len(chat.calls) == 1
    assert not [e for e in events if isinstance(e, IntentRecognized | IntentNotRecognized | DeviceCommand)]


async def test_say_turns_are_marked_as_said(tmp_path: Path) -> None:
    records: list[Any] = []
    pipeline = Pipeline(
        _config(tmp_path),
        Engines(FakeTranscriber([]), FakeChat(), FakeSynth()),
        MemorySink(),
        on_turn=records.append,
    )

    async def script(p: Pipeline) -> None:
        turn = await p.say("Turn on the kitchen lights.")
        await _until(lambda: not p.tracker.is_open(turn))

    events = await _drive(pipeline, script)
    assert [(r.intent, r.handled_by) for r in records] == [(None, "say")]
    assert not [e for e in events if isinstance(e, IntentRecognized | DeviceCommand)]


@pytest.mark.parametrize(
    ("answers", "reply"),
    [
        ('{"state": "ON", "brightness": 254}', "Turned on the light."),
        ('{"state": "OFF"}', "The reading lamp is still off."),
        (None, "The reading lamp did not answer."),
    ],
)
async def test_a_device_with_a_state_topic_confirms_for_itself(
    tmp_path: Path, answers: str | None, reply: str
) -> None:
    lamp = DeviceConfig(
        "reading lamp",
        command_topic="zigbee2mqtt/reading/set",
        state_topic="zigbee2mqtt/reading",
        payload_on='{"state": "ON"}',
        payload_off='{"state": "OFF"}',
    )
    records: list[Any] = []
    config = replace(_config(tmp_path), devices=(lamp,))
    pipeline = Pipeline(
        config, Engines(FakeTranscriber([]), FakeChat(), FakeSynth()), MemorySink(), on_turn=records.append
    )

    async def device() -> None:
        """The lamp on the other side of the broker: it hears its command, and reports."""
        commands = pipeline.events.subscribe()
        while not isinstance(await commands.get(), DeviceCommand):
            pass
        pipeline.events.publish(DeviceState("reading lamp", '{"state": "OFF"}', retained=True))  # no answer
        if answers is not None:
            pipeline.events.publish(DeviceState("reading lamp", answers))

    async def script(p: Pipeline) -> None:
        stage = p._stages["intents"]
        assert isinstance(stage, IntentStage)
        stage.device_wait_s = 0.3
        lamp_task = asyncio.create_task(device())
        await _ask(p, "turn on the reading lamp")
        lamp_task.cancel()

    events = await _drive(pipeline, script)
    (command,) = [e for e in events if isinstance(e, DeviceCommand)]
    assert (command.topic, command.payload) == ("zigbee2mqtt/reading/set", '{"state": "ON"}')
    assert [r.reply for r in records] == [reply]
