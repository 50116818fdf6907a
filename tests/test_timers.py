"""Timers: the clock-free logic on a fake clock (long timers, alarms, their limit), the file that
keeps them across a restart, and a 2-second timer that rings through a pipeline until "stop"."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from assistant.audio.sinks import MemorySink
from assistant.audio.sources import IdleSource
from assistant.config import Config, IntentsConfig
from assistant.daemon import Daemon
from assistant.intents.alarms import TimerKeeper
from assistant.intents.timers import Timers, default_timers_path, duration_label, load_timers, save_timers
from assistant.pipeline import Engines, Pipeline

from .fakes import FakeChat, FakeSynth, FakeTranscriber

T0 = 1_767_225_600.0
"""A fake clock's start (2026-01-01), seconds since the epoch."""


def test_timers_run_out_in_order() -> None:
    timers = Timers()
    long = timers.start(T0, 3 * 3600, "roast")
    short = timers.start(T0 + 5, 600)
    assert [t.id for t in timers.running()] == [short.id, long.id]
    assert timers.next_end() == T0 + 605
    assert short.label == "10 minute" and long.label == "roast"
    assert duration_label(5400) == "1 hour 30 minute" and duration_label(45) == "45 second"
    assert timers.due(T0 + 604) == [] and timers.due(T0 + 605) == [short]
    assert timers.find(name="ROAST") == [long] and timers.find(seconds=3 * 3600) == [long]
    assert long.left(T0 + 3600) == 2 * 3600
    assert timers.due(T0 + 3 * 3600 - 1) == [] and timers.due(T0 + 3 * 3600) == [long]
    assert timers.next_end() is None


def test_a_long_timer_rings_on_a_fake_clock_until_its_limit() -> None:
    keeper = TimerKeeper(None, alarm_limit_s=30, repeat_s=5)
    keeper.start(T0, 8 * 3600, "bread")
    assert keeper.next_wake(T0) == 8 * 3600
    assert keeper.step(T0 + 8 * 3600 - 0.5) == []
    said = [(t, keeper.step(T0 + 8 * 3600 + t)) for t in range(0, 40)]
    rang = [t for t, texts in said if texts]
    assert rang == [0, 5, 10, 15, 20, 25], rang  # every 5 s, until 30 s have passed
    assert said[0][1] == ["Your bread timer is done."]
    assert keeper.ringing == [] and keeper.next_wake(T0 + 8 * 3600 + 40) is None


def test_stop_silences_a_ringing_alarm_and_others_ring_on() -> None:
    keeper = TimerKeeper(None, alarm_limit_s=60, repeat_s=5)
    keeper.start(T0, 2)
    keeper.start(T0, 3600)
    assert keeper.step(T0 + 2) == ["Your 2 second timer is done."]
    assert keeper.next_wake(T0 + 2) == 5
    assert keeper.silence() == 1
    assert [keeper.step(T0 + 2 + t) for t in range(1, 30)] == [[]] * 29
    assert keeper.next_wake(T0 + 100) == 3600 - 100
    assert keeper.step(T0 + 3600) == ["Your 1 hour timer is done."]


def test_the_file_is_written_whole_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "timers.json"
    timers = Timers()
    timers.start(T0, 600, "pasta")
    timers.start(T0, 60)
    save_timers(path, timers)
    assert [p.name for p in path.parent.iterdir()] == ["timers.json"], "no temporary file left"
    data = json.loads(path.read_text())
    assert data["version"] == 1 and [t["name"] for t in data["timers"]] == ["", "pasta"]
    again = load_timers(path)
    assert [(t.id, t.seconds, t.started_at, t.name) for t in again.running()] == [
        (2, 60.0, T0, ""),
        (1, 600.0, T0, "pasta"),
    ]
    assert again.start(T0, 5).id == 3


def test_a_broken_file_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "timers.json"
    path.write_text("{not json")
    assert len(load_timers(path)) == 0
    assert (tmp_path / "timers.json.bad").read_text() == "{not json" and not path.exists()
    assert len(load_timers(tmp_path / "missing.json")) == 0


def test_the_state_folder() -> None:
    assert default_timers_path({"STATE_DIRECTORY": "/var/lib/assistant:/other"}) == Path(
        "/var/lib/assistant/timers.json"
    )
    assert default_timers_path({}).name == "timers.json"


def test_timers_that_ended_while_down_are_said_once(tmp_path: Path) -> None:
    path = tmp_path / "timers.json"
    timers = Timers()
    timers.start(T0, 600)
    timers.start(T0, 7200, "roast")
    save_timers(path, timers)
    keeper = TimerKeeper(path, alarm_limit_s=60)
    keeper.load(T0 + 3600)  # the daemon was down from before the 10 minutes until an hour on
    assert keeper.step(T0 + 3600) == ["Your 10 minute timer ended while I was off."]
    assert keeper.step(T0 + 3605) == [] and keeper.ringing == []
    assert [t.name for t in keeper.timers.running()] == ["roast"]
    assert keeper.step(T0 + 7200) == ["Your roast timer is done."]


# -- through a pipeline ---------------------------------------------------------------------


def _pipeline(path: Path, sink: MemorySink, records: list[Any] | None = None) -> Pipeline:
    base = Config()
    config = replace(
        base,
        input=replace(base.input, realtime=False),
        intents=IntentsConfig(timers_file=str(path), alarm_limit_s=30),
    )
    on_turn = records.append if records is not None else None
    return Pipeline(config, Engines(FakeTranscriber([]), FakeChat(), FakeSynth()), sink, on_turn=on_turn)


async def _run(pipeline: Pipeline, script: Any) -> None:
    source = IdleSource()

    async def go() -> None:
        while not pipeline._inboxes:
            await asyncio.sleep(0.01)
        await script(pipeline)
        source.stop()

    await asyncio.wait_for(asyncio.gather(Daemon(pipeline).run(source), go()), 60)


async def _ask(pipeline: Pipeline, text: str) -> None:
    turn = await pipeline.ask(text)
    while pipeline.tracker.is_open(turn):
        await asyncio.sleep(0.01)


async def test_a_two_second_timer_rings_until_stop(tmp_path: Path) -> None:
    sink = MemorySink()
    pipeline = _pipeline(tmp_path / "timers.json", sink)
    keeper = pipeline.timers
    assert keeper is not None
    keeper.repeat_s = 1.0
    alarm = len("Your 2 second timer is done.")  # FakeSynth: one sample per character

    async def script(p: Pipeline) -> None:
        await _ask(p, "Set a timer for two seconds.")
        assert len(sink.turns) == 1 and keeper.ringing == []
        async with asyncio.timeout(5):
            while sum(len(t) // 2 == alarm for t in sink.turns) < 2:  # it rang, and rang again
                await asyncio.sleep(0.02)
        await _ask(p, "stop")
        rung = len(sink.turns)
        await asyncio.sleep(2.5)
        assert keeper.ringing == [] and len(sink.turns) == rung, "silent after stop"

    await _run(pipeline, script)
    assert len(keeper.timers) == 0


async def test_a_timer_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "timers.json"
    first = _pipeline(path, MemorySink())

    async def start(p: Pipeline) -> None:
        await _ask(p, "Set a timer for ten minutes.")
        await _ask(p, "set a timer for 2 hours named roast")

    await _run(first, start)
    assert len(load_timers(path)) == 2

    records: list[Any] = []
    second = _pipeline(path, MemorySink(), records)  # a new daemon, the same file

    async def ask(p: Pipeline) -> None:
        await _ask(p, "How much time is left on my timer?")
        await _ask(p, "Cancel the roast timer.")

    await _run(second, ask)
    status, cancelled = (r.reply for r in records)
    assert re.fullmatch(
        r"2 running timers\. (10 minutes|9 minutes and 5\d seconds) left on 10 minute timer\.", status
    )
    assert cancelled == "Timer cancelled."
    assert [t.label for t in load_timers(path).running()] == ["10 minute"]
