"""``assistant bench --soak`` in short, on the real models and a real broker: spoken, asked and
cancelled turns and barge-ins; every command answered once; nothing grows after warm-up."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant.bench.soak import format_soak, plan, soak
from assistant.cli import build_parser
from assistant.config import Config
from assistant.mqtt.protocol import config_from_url

from .mosquitto import Broker, running_broker

QUESTIONS = ("What is the capital of France?", "Who wrote Romeo and Juliet?", "How far away is the moon?")
HISTORY_TOKENS = 128
"""The default model keeps no conversation; the test gives it some, to see it stay bounded."""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from running_broker(tmp_path)


def test_plan_puts_a_spoken_question_a_cancel_and_a_barge_in_in_every_cycle() -> None:
    episodes = plan(40)
    assert len(episodes) + episodes.count("barge_in") == 40
    assert Counter(episodes) == {"ask": 28, "silent": 4, "voice": 2, "cancel": 2, "barge_in": 2}
    assert episodes[:9] == ["ask", "voice", "ask", "ask", "cancel", "ask", "ask", "barge_in", "ask"]
    args = build_parser().parse_args(["bench", "--soak", "1000", "--mqtt", "mqtt://127.0.0.1:1883"])
    assert (args.soak, args.mqtt) == (1000, "mqtt://127.0.0.1:1883")


@pytest.mark.models
async def test_a_short_soak_answers_every_command_once_and_grows_nothing(
    broker: Broker, engines: Any, speak: Callable[[str], np.ndarray]
) -> None:
    lead = np.zeros(4800, dtype=np.int16)  # 300 ms of silence either side, as in the corpus
    utterances = [(q, np.concatenate([lead, speak(q), lead]).tobytes()) for q in QUESTIONS]
    base = Config()
    config = replace(
        base,
        mqtt=config_from_url(broker.url(), base.mqtt),
        llm=replace(base.llm, history_tokens=HISTORY_TOKENS),
    )
    # 32 turns: 2 spoken questions, 2 cancels, 2 barge-ins (4 turns), 24 asked; warm-up: 10 turns,
    # the first cycle's voice, cancel and barge-in included
    result = await soak(config, engines, utterances, episodes=plan(32, cycle=16), mqtt=True)
    print(format_soak(result))  # RSS is printed, not asserted: too noisy for CI

    outcomes, samples = result["outcomes"], result["samples"]
    assert result["problems"] == []  # every command: one ack, one end, one final reply or error
    assert not any(key.endswith((".error", ".refused")) for key in outcomes), outcomes
    assert outcomes["voice.answered"] == 4 and outcomes["ask.cancelled"] >= 2, outcomes
    assert result["actions"].get("barge_in", 0) >= 1 and result["interrupts"] >= 1, result["misses"]
    asked = sum(n for key, n in outcomes.items() if key.startswith("ask."))
    assert result["mqtt"]["accepted"] == asked + 2  # the asks and the two cancels
    warm = next(s for s in samples if s["turn"] == result["warmup_turn"])
    end = samples[-1]
    assert (end["fds"], end["tasks"]) == (warm["fds"], warm["tasks"]), samples
    assert not result["threads_started"], result["threads_started"]  # tqdm's monitor: never started
    assert end["threads"] - warm["threads"] <= len(result["threads_started"])
    assert end["pool"] <= min(32, (os.cpu_count() or 1) + 4)  # asyncio's default executor's bound
    assert samples[0]["models"] == end["models"] >= 4  # no model loaded again (other tests may hold more)
    prompts = [s["prompt_tokens"] for s in samples[1:]]
    # bounded: system prompt and question (under 60 tokens) and at most the history budget
    assert max(prompts) <= HISTORY_TOKENS + 60, prompts
    assert max(prompts) > 60, prompts  # the history was used
    assert max(s["kv_tokens"] for s in samples) <= HISTORY_TOKENS + 60 + config.llm.max_tokens
