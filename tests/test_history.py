"""Conversation memory: token budget, oldest first out, sessions, too-long questions."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.chat.history import MESSAGE_OVERHEAD, History
from assistant.clock import StreamClock
from assistant.config import DEFAULT_HISTORY_TOKENS, LlmConfig
from assistant.errors import TooLongError
from assistant.messages import ReplyDone, Transcript
from assistant.stages.llm import LlmStage, memory_tokens
from assistant.turn.reports import Failed, ReportLog

from .fakes import FakeChat, run_stage


def words(text: str) -> int:
    return len(text.split())


def make(budget: int = 1000, limit: int = 200, idle: float = 60.0) -> History:
    return History("Be brief.", words, budget_tokens=budget, limit_tokens=limit, idle_s=idle)


def test_first_turn_is_system_then_user() -> None:
    assert make().messages_for("hello there", 0.0) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there"},
    ]


def test_oldest_turns_drop_first_and_the_system_prompt_stays() -> None:
    hist = make(limit=3 * 20 + 2 * MESSAGE_OVERHEAD + 40)
    for i in range(30):
        hist.add(f"question {i} " + "w " * 8, f"answer {i} " + "w " * 8, float(i))
    msgs = hist.messages_for("last one", 31.0)
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    assert msgs[-1] == {"role": "user", "content": "last one"}
    kept = [m["content"].split()[1] for m in msgs[1:-1]]
    assert kept and kept[-1] == "29" and kept == sorted(kept, key=int)  # newest kept, in order
    assert "0" not in kept
    total = sum(words(m["content"]) + MESSAGE_OVERHEAD for m in msgs)
    assert total <= hist.limit_tokens


def test_history_budget_bounds_memory_even_with_room() -> None:
    hist = make(budget=2 * (2 + 2 * MESSAGE_OVERHEAD), limit=10_000)
    for i in range(10):
        hist.add(f"q{i}", f"a{i}", float(i))
    msgs = hist.messages_for("now", 10.0)
    # over budget: trimmed to half the room, keeping the newest
    assert [m["content"] for m in msgs[1:-1]] == ["q9", "a9"]
    # the next turns fit again without trimming: the prompt's start stays the same (the
    # evaluated prefix is reused) until the budget is reached again
    hist.add("now", "ok", 11.0)
    msgs = hist.messages_for("next", 12.0)
    assert [m["content"] for m in msgs[1:-1]] == ["q9", "a9", "now", "ok"]


def test_new_session_after_idle_time() -> None:
    hist = make(idle=60.0)
    hist.messages_for("a", 0.0)
    hist.add("a", "b", 1.0)
    assert len(hist.messages_for("c", 50.0)) == 4
    assert len(hist.messages_for("d", 200.0)) == 2 and hist.session == 2


def test_empty_reply_and_zero_budget_keep_nothing() -> None:
    hist = make()
    hist.add("q", "  ", 0.0)
    assert not hist.exchanges
    hist = make(budget=0)
    hist.add("q", "a", 0.0)
    assert hist.messages_for("x", 1.0)[1:] == [{"role": "user", "content": "x"}]


def test_too_long_question_is_refused_before_tokenizing_50kb() -> None:
    counted: list[int] = []

    def count(text: str) -> int:
        counted.append(len(text))
        return len(text)

    hist = History("sys", count, budget_tokens=100, limit_tokens=500, idle_s=60)
    with pytest.raises(TooLongError) as err:
        hist.messages_for("x" * 50_000, 0.0)
    assert err.value.code == "too_long"
    assert 50_000 not in counted
    with pytest.raises(TooLongError, match="tokens"):
        hist.messages_for("y" * 600, 0.0)  # under the byte bound, over the token limit


async def test_stage_remembers_answers_and_forgets_cancelled_turns() -> None:
    chat = FakeChat("Paris.")
    log = ReportLog()
    turns = log.turns
    stage = LlmStage(chat, LlmConfig(), log)
    await run_stage(stage, [Transcript(1, "Capital of France?"), Transcript(2, "And Spain?")])
    assert chat.calls[1][1:] == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And Spain?"},
    ]
    turns.cancel(3)
    await run_stage(stage, [Transcript(3, "ignored"), Transcript(4, "Again?")])
    assert [m["content"] for m in chat.calls[-1]].count("ignored") == 0


async def test_stage_reports_too_long_and_the_next_turn_works() -> None:
    log = ReportLog()
    stage = LlmStage(FakeChat("ok."), LlmConfig(), log)
    out = await run_stage(stage, [Transcript(1, "why " * 12_500), Transcript(2, "hi")])
    assert [(f.turn_id, f.error.code) for f in log.of(Failed)] == [(1, "too_long")]
    assert [m for m in out if isinstance(m, ReplyDone)] == [ReplyDone(2, "ok.", "stop")]


def _clock() -> StreamClock:
    clock = StreamClock(realtime=False)
    clock.start()
    return clock


def test_forgotten_history_is_dropped_from_the_kv_cache_not_re_read(model_dir: Path) -> None:
    """Real SmolLM2: once the oldest exchanges are forgotten, the kept ones are shifted in the
    cache over them, so only the new question is evaluated, and the model still answers it."""
    from dataclasses import replace

    from assistant import models
    from assistant.config import Config
    from assistant.engines.llama import LlamaEngine

    config = replace(Config().llm, warm=False)
    engine = LlamaEngine(models.resolve(config.model, "llm", model_dir), config)
    system = {"role": "system", "content": config.system_prompt}
    questions = ["What time is it?", "Will it rain today?", "Who wrote Romeo and Juliet?"]
    questions += ["How far away is the moon from the earth, in kilometres, on an average day?"]
    questions += ["What is the capital of France?"]
    history: list[dict[str, str]] = []
    for turn, question in enumerate(questions):
        kept = history[-4:] if turn >= 3 else history  # from turn 3 on, the oldest are forgotten
        pieces: list[str] = []
        engine.chat([system, *kept, {"role": "user", "content": question}], pieces.append)
        assert (engine.shifted_tokens > 0) is (turn >= 3)
        if turn:  # everything before the new question came from the cache
            assert len(engine.last_prompt) - engine.reused_tokens <= engine.count_tokens(question) + 12
        reply = "".join(pieces).strip()
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
    assert "Paris" in reply  # the shifted cache still makes sense to the model
    # a new session asking a kept question again does not reuse that old turn's cache entries
    assert engine.count_tokens(questions[3]) > 16
    engine.chat([system, {"role": "user", "content": questions[3]}], lambda _p: None)
    assert engine.shifted_tokens == 0


def test_upcoming_is_what_the_next_short_question_follows_and_changes_nothing() -> None:
    hist = make(limit=3 * 20 + 2 * MESSAGE_OVERHEAD + 80)
    for i in range(30):
        hist.add(f"question {i} " + "w " * 8, f"answer {i} " + "w " * 8, float(i))
    before = list(hist.exchanges)
    upcoming = hist.upcoming(31.0)
    assert list(hist.exchanges) == before  # no trimming, no new session
    assert hist.messages_for("and now?", 31.0)[:-1] == upcoming
    assert make().upcoming(0.0) == [{"role": "system", "content": "Be brief."}]
    hist.add("q", "a", 40.0)
    assert hist.upcoming(40.0 + 61.0) == [{"role": "system", "content": "Be brief."}]  # idle: a new session


class PrimingChat(FakeChat):
    """A fake engine that can evaluate the next prompt's start."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.primed: list[list[dict[str, str]]] = []

    def prime(self, messages: list[dict[str, str]]) -> int:
        self.primed.append([dict(m) for m in messages])
        return 5


async def test_stage_primes_the_engine_with_the_conversation_after_each_reply() -> None:
    chat = PrimingChat("Paris.")
    log = ReportLog()
    turns = log.turns
    stage = LlmStage(chat, LlmConfig(), log)
    await run_stage(stage, [Transcript(1, "Capital of France?")])
    assert chat.primed == [
        [
            {"role": "system", "content": LlmConfig().system_prompt},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
        ]
    ]
    assert stage.primed_tokens == 5
    turns.cancel(2)
    await run_stage(stage, [Transcript(2, "never mind")])
    assert len(chat.primed) == 1  # a cancelled turn primes nothing


def test_primed_prompt_start_leaves_the_turn_only_its_question(model_dir: Path) -> None:
    """Real SmolLM2: after ``prime``, the next turn evaluates its question and the template's
    generation prompt, nothing of the exchange before it."""
    from dataclasses import replace

    from assistant import models
    from assistant.config import Config
    from assistant.engines.llama import LlamaEngine

    config = replace(Config().llm, warm=False)
    engine = LlamaEngine(models.resolve(config.model, "llm", model_dir), config)
    hist = History(
        config.system_prompt, engine.count_tokens, budget_tokens=1024, limit_tokens=1500, idle_s=60.0
    )
    unprimed = primed = 0
    for turn, question in enumerate(["What is the capital of France?", "And of Spain?", "And of Italy?"]):
        pieces: list[str] = []
        engine.chat(hist.messages_for(question, float(turn)), pieces.append)
        read = len(engine.last_prompt) - engine.reused_tokens
        if turn == 1:
            unprimed = read
        if turn == 2:
            primed = read
        hist.add(question, "".join(pieces), float(turn))
        if turn == 1:  # prime before the third turn only
            assert engine.prime(hist.upcoming(float(turn))) > 0
            assert engine.prime(hist.upcoming(float(turn))) == 0  # nothing left to do
    assert primed < unprimed
    assert primed <= engine.count_tokens("And of Italy?") + 6


def test_every_evaluation_runs_on_the_engine_s_own_thread(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real SmolLM2: the warm start, ``prime`` and ``chat`` evaluate on one thread, whichever
    thread calls. llama.cpp's OpenMP team is per calling thread, and with more of them than
    cores every barrier of an evaluation put its threads to sleep."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    import llama_cpp

    from assistant import models
    from assistant.config import Config
    from assistant.engines.llama import LlamaEngine

    evaluated_on: set[int] = set()
    original = llama_cpp.Llama.eval

    def eval_(self: llama_cpp.Llama, tokens: list[int]) -> None:
        evaluated_on.add(threading.get_ident())
        original(self, tokens)

    monkeypatch.setattr(llama_cpp.Llama, "eval", eval_)
    config = replace(Config().llm, warm=True, max_tokens=4)
    engine = LlamaEngine(models.resolve(config.model, "llm", model_dir), config, state_dir=tmp_path)
    assert engine.warm_source == "evaluated" and len(evaluated_on) == 1
    system = {"role": "system", "content": config.system_prompt}
    question = [system, {"role": "user", "content": "What is two plus two?"}]
    engine.chat(question, lambda _p: None)
    caller = threading.Thread(
        target=engine.chat, args=([system, {"role": "user", "content": "Hi."}], lambda _p: None)
    )
    caller.start()
    caller.join()
    with ThreadPoolExecutor(2) as pool:
        assert pool.submit(engine.prime, question).result() > 0
        pool.submit(engine.chat, question, lambda _p: None).result()
    assert len(evaluated_on) == 1 and threading.get_ident() not in evaluated_on


class Remembers(FakeChat):
    history_tokens: int | None = 0


@pytest.mark.parametrize(
    ("configured", "model", "used"),
    [(-1, 0, 0), (-1, None, DEFAULT_HISTORY_TOKENS), (512, 0, 512), (0, None, 0)],
)
def test_memory_is_the_configured_or_else_what_the_model_copes_with(
    configured: int, model: int | None, used: int
) -> None:
    engine = Remembers()
    engine.history_tokens = model
    assert memory_tokens(LlmConfig(history_tokens=configured), engine) == used
    stage = LlmStage(engine, LlmConfig(history_tokens=configured), ReportLog())
    assert stage.history.budget_tokens == used


def test_the_bench_timing_wrapper_hides_nothing_of_the_engine() -> None:
    """The bench wraps the engine to time it; the stage must still see what the daemon sees."""
    from assistant.bench.runner import TimedChat

    engine = Remembers()
    timed = TimedChat(engine)
    assert memory_tokens(LlmConfig(), timed) == 0
    assert timed.calls == 0 and timed.history_tokens == 0
    assert timed.prime([]) == 0  # the fake cannot prime (the contract's default): nor can its wrapper


def test_the_kv_cache_type_reaches_llama_and_keys_the_warm_state(model_dir: Path, tmp_path: Path) -> None:
    """``llm.kv_cache`` on the default model: the q8_0 state holds about half the bytes of the
    f16 one for the same tokens, each type has its own warm state, and both answer."""
    from dataclasses import replace

    from assistant import models
    from assistant.config import Config
    from assistant.engines.llama import LlamaEngine

    config = replace(Config().llm, warm=True, max_tokens=8)
    question = [
        {"role": "system", "content": config.system_prompt},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    states, replies = {}, {}
    for kind in ("f16", "q8_0"):
        engine = LlamaEngine(
            models.resolve(config.model, "llm", model_dir), replace(config, kv_cache=kind), state_dir=tmp_path
        )
        assert engine.kv_cache == kind and engine.warm_source == "evaluated", kind
        (states[kind],) = set(tmp_path.glob("*.llstate")) - set(states.values())
        pieces: list[str] = []
        engine.chat(question, pieces.append)
        replies[kind] = "".join(pieces)
    f16, q8 = (states[k].stat().st_size for k in ("f16", "q8_0"))
    assert 0.4 * f16 < q8 < 0.7 * f16, (f16, q8)
    assert "Paris" in replies["f16"] and "Paris" in replies["q8_0"], replies
