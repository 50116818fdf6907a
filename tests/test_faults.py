"""Faults injected into the real engines, the real audio sink and a real LLM server while the
daemon runs as it does in production: ``Daemon`` with its MQTT bridge on a real Mosquitto,
spoken questions in (the example WAV, espeak-ng), a WAV file out.

Each case arms one fault (``tests/faulty.py``) and asks a spoken question. Then:

- that turn produced exactly one ``error`` event, with the expected code, and one
  ``outcome: error`` record; the daemon is still running;
- its apology was played (not where the output itself failed: there is nowhere to play it);
- the next spoken question, and the next MQTT ``ask``, are answered;
- once the daemon has stopped, asyncio tasks, threads and open file descriptors are back to
  their baseline (abandoned model calls included: they must finish on their own).

Expected codes: an exception raised before the real engine runs escapes the engine unmapped, so
the stage's error boundary makes it ``internal``; one raised inside the engine's call (from its
token or audio callback, where a runtime's own exception surfaces) is mapped at the engine's seam
to ``<stage>_failed``; one of ours keeps its code; a hang is ``stage_timeout``. Without the
boundary (``stages.base.run_inbox``) the first exception would end its stage's task and the
daemon's TaskGroup with it: the daemon would stop and the next question would go unanswered.

The malformed-stream cases put ``FaultyProxy`` between the OpenAI engine and a real
``python -m llama_cpp.server``; the seam cases make each real runtime raise mid-call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant.audio.convert import read_audio_file
from assistant.audio.sinks import WavSink
from assistant.config import Config, DeadlineConfig
from assistant.daemon import Daemon
from assistant.engines import Engines
from assistant.errors import AudioDeviceError, ModelCorruptError, StageError
from assistant.mqtt.bridge import MqttBridge
from assistant.pipeline import Pipeline
from assistant.turn.kinds import Action

from .conftest import silence
from .faulty import (
    Fault,
    FaultyChat,
    FaultyProxy,
    FaultySink,
    FaultySynth,
    FaultyTranscriber,
    GatedSource,
    StreamFault,
)
from .mosquitto import Broker, Recorder, running_broker
from .test_mqtt import mqtt_config
from .test_openai_engine import config as openai_config
from .test_openai_engine import default_llm, llama_cpp_server

pytestmark = pytest.mark.models

T = "assistant/default"
REPO = Path(__file__).resolve().parent.parent
MAX_PIECES = 16
"""Replies are cut after this many pieces: short answers keep the file fast."""
DEADLINE_S = 3.0
"""The hung stage's deadline in hang cases (its real calls here take well under 0.5 s on an idle machine)."""
HANG_S = DEADLINE_S + 1.0
WAIT_S = 60.0
"""Generous bound for anything the test waits for (a turn, the daemon's stop)."""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    yield from running_broker(tmp_path_factory.mktemp("broker"))


@dataclass(frozen=True)
class Question:
    pcm: bytes
    word: str
    """A word the transcript must contain."""


@pytest.fixture(scope="module")
def questions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Question, Question]:
    """The example WAV (the default piper voice), and a second question spoken by espeak-ng."""
    out = tmp_path_factory.mktemp("espeak") / "q.wav"
    try:
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(out), "What is two plus two?"],
                       check=True, timeout=30)  # fmt: skip
    except FileNotFoundError:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")

    def padded(pcm: bytes) -> bytes:
        return np.concatenate([silence(300), np.frombuffer(pcm, dtype="<i2"), silence(1000)]).tobytes()

    france = read_audio_file(REPO / "examples" / "what-is-the-capital-of-france.wav")
    return Question(padded(france), "capital"), Question(padded(read_audio_file(out)), "plus")


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FaultyProxy, str]]:
    """A fault-injecting proxy in front of a real llama_cpp.server (SmolLM2): (proxy, its URL)."""
    with llama_cpp_server(default_llm(), "smol", tmp_path_factory.mktemp("server")) as upstream:
        faulty = FaultyProxy(upstream)
        with faulty.serving() as url:
            yield faulty, url


# -- resources -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resources:
    """What a run may leave behind, compared exactly (no tolerance is needed): asyncio tasks,
    threads (by identity: every thread started during the run must have ended; the engines' own
    threads, started when they loaded, stay) and open file descriptors."""

    tasks: int
    threads: frozenset[int]
    fds: int

    @classmethod
    def now(cls) -> Resources:
        idents = frozenset(t.ident for t in threading.enumerate() if t.ident is not None)
        return cls(len(asyncio.all_tasks()), idents, len(os.listdir("/proc/self/fd")))

    def left_over(self, base: Resources) -> list[str]:
        """What is here now that was not at ``base`` (threads started since and still alive)."""
        out = []
        if self.tasks != base.tasks:
            out.append(f"tasks {base.tasks} -> {self.tasks}: {[t.get_coro() for t in asyncio.all_tasks()]}")
        if new := self.threads - base.threads:
            out.append(f"threads {[t.name for t in threading.enumerate() if t.ident in new]}")
        if self.fds != base.fds:
            out.append(f"fds {base.fds} -> {self.fds}")
        return out


async def back_to(base: Resources, limit_s: float = 20.0) -> None:
    """Wait (bounded) until tasks, threads and fds are back at ``base``; abandoned model calls and
    a stalled server's handler may take a few seconds to finish on their own."""
    deadline = time.monotonic() + limit_s
    while (left := Resources.now().left_over(base)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not left, left


# -- a running daemon -------------------------------------------------------------------------


@dataclass
class Running:
    """A daemon with its MQTT bridge, a recorder on the broker, and what they saw."""

    pipeline: Pipeline
    source: GatedSource
    sink: FaultySink
    rec: Recorder
    task: asyncio.Task[None]
    asked: int = 0

    def turns(self, kind: str) -> list[dict[str, Any]]:
        """Finished turns of one kind (``voice``, ``ask``), as published on ``latency``."""
        return [m for m in self.rec.on(f"{T}/latency") if m["kind"] == kind]

    async def until(self, predicate: Callable[[], Any], limit_s: float = WAIT_S) -> Any:
        """Wait (bounded) until ``predicate()`` is truthy; fail at once if the daemon stops."""

        def check() -> Any:
            if self.task.done():
                error = None if self.task.cancelled() else self.task.exception()
                raise AssertionError(f"the daemon stopped: {error!r}")
            return predicate()

        return await self.rec.wait_for(check, limit_s)

    async def next_voice_turn(self, question: Question) -> dict[str, Any]:
        seen = len(self.turns("voice"))
        self.source.say(question.pcm)
        return (await self.until(lambda: self.turns("voice")[seen:]))[0]  # type: ignore[no-any-return]

    async def ask(self, text: str = "What is the capital of France?") -> dict[str, Any]:
        self.asked += 1
        rid = f"q{self.asked}"
        await self.rec.publish(f"{T}/ask", {"text": text, "id": rid})
        return (await self.until(lambda: [m for m in self.turns("ask") if m["id"] == rid]))[0]  # type: ignore[no-any-return]

    def apology_played(self) -> bool:
        spoken = self.pipeline.controller._announced.get(self.pipeline.config.output.apology.strip())
        return spoken is not None and spoken[0] in self.sink.written

    async def apologised(self, times: int) -> None:
        """Wait (bounded) until ``times`` apologies have been played."""
        await self.until(lambda: self.pipeline.tracker.actions[Action.APOLOGY_PLAYED] == times, 10)


@contextlib.asynccontextmanager
async def running(
    broker: Broker, config: Config, engines: Engines, sink: FaultySink
) -> AsyncIterator[Running]:
    """Start the daemon as ``assistant run --mqtt`` does; on exit stop it (the source ends) and
    check that tasks, threads and file descriptors are back at their baseline."""
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(thread_name_prefix="faults")  # to_thread's, shut down at the end
    loop.set_default_executor(executor)
    base = Resources.now()
    rec = Recorder(broker, [f"{T}/#"])
    try:
        async with rec.running():
            pipeline = Pipeline(config, engines, sink)
            bridge = MqttBridge(pipeline, config.mqtt)
            source = GatedSource(config.input)
            task = asyncio.create_task(Daemon(pipeline, [("mqtt", bridge.run)]).run(source), name="daemon")
            try:
                await asyncio.wait_for(bridge.connected.wait(), WAIT_S)
                yield Running(pipeline, source, sink, rec, task)
                assert not task.done(), "the daemon stopped while it should have been running"
            finally:
                source.stop()
                await asyncio.wait_for(task, WAIT_S)
    except Exception:
        executor.shutdown(wait=False)
        with contextlib.suppress(AssertionError):  # what a failed case left running ends before the next
            await back_to(base)
        raise
    executor.shutdown(wait=False)  # idle workers leave now, busy ones when their call ends
    await back_to(base)
    loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="after"))


def case_config(broker: Broker, deadlines: DeadlineConfig | None = None) -> Config:
    """Unpaced input (no acknowledgements, no barge-in), the shared broker, ``deadlines``; no
    conversation memory (the default model's own setting), so the same question gets the same
    answer whichever turns came before."""
    base = Config()
    return replace(
        base,
        input=replace(base.input, realtime=False),
        llm=replace(base.llm, history_tokens=0),
        mqtt=mqtt_config(broker),
        deadlines=deadlines or DeadlineConfig(),
    )


# -- the fault matrix ----------------------------------------------------------------------------


def _key() -> Exception:
    return KeyError("injected")


def _runtime() -> Exception:
    return RuntimeError("injected: llama_decode returned -1")


def _corrupt() -> Exception:
    return ModelCorruptError("injected: the model file changed under us")


def _device() -> Exception:
    return AudioDeviceError("injected: the output device is gone")


@dataclass(frozen=True)
class Case:
    part: str
    """``asr``, ``llm`` (in process), ``llm-http`` (llama_cpp.server), ``tts`` or ``output``."""
    fault: Fault
    code: str
    """The failed turn's error code."""

    @property
    def id(self) -> str:
        error = self.fault.error() if self.fault.error else None
        return f"{self.part}-{self.fault.mode}-{type(error).__name__ if error else 'sleep'}"

    def deadlines(self) -> DeadlineConfig:
        if self.fault.mode != "hang":
            return DeadlineConfig()
        key = {"asr": "asr_s", "tts": "tts_s", "output": "output_s"}.get(self.part, "llm_stall_s")
        return replace(DeadlineConfig(), **{key: DEADLINE_S})


HANG = Fault("hang", hang_s=HANG_S)


def _llm_cases(part: str) -> list[Case]:
    return [
        Case(part, Fault("first", _key), "internal"),
        Case(part, Fault("inside", _runtime, after=3), "llm_failed"),
        Case(part, Fault("inside", _corrupt, after=3), "model_corrupt"),
        Case(part, HANG, "stage_timeout"),
    ]


CASES = [
    Case("asr", Fault("first", _key), "internal"),
    Case("asr", Fault("first", _corrupt), "model_corrupt"),
    Case("asr", HANG, "stage_timeout"),
    *_llm_cases("llm"),
    *_llm_cases("llm-http"),
    Case("tts", Fault("first", _key), "internal"),
    Case("tts", Fault("inside", _runtime, after=1), "tts_failed"),
    Case("tts", Fault("inside", _corrupt, after=1), "model_corrupt"),
    Case("tts", HANG, "stage_timeout"),
    Case("output", Fault("first", _key), "internal"),
    Case("output", Fault("inside", _runtime), "internal"),
    Case("output", Fault("first", _device), "audio_device_missing"),
    Case("output", HANG, "stage_timeout"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_a_fault_costs_one_turn_and_the_daemon_answers_the_next(
    case: Case,
    engines: Engines,
    broker: Broker,
    questions: tuple[Question, Question],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    assert engines.asr is not None and engines.llm is not None and engines.tts is not None
    config = case_config(broker, case.deadlines())
    llm = engines.llm
    if case.part == "llm-http":
        from assistant.engines.openai_http import OpenAIEngine

        _, url = request.getfixturevalue("proxy")  # started by the first case that needs it
        llm = OpenAIEngine(openai_config(url, max_tokens=MAX_PIECES))
    wrapped = Engines(
        FaultyTranscriber(engines.asr), FaultyChat(llm, max_pieces=MAX_PIECES), FaultySynth(engines.tts)
    )
    sink = FaultySink(WavSink(tmp_path / "replies.wav"))
    target = {"asr": wrapped.asr, "tts": wrapped.tts, "output": sink}.get(case.part, wrapped.llm)
    first, second = questions
    async with running(broker, config, wrapped, sink) as run:
        target.faults.arm(case.fault)  # type: ignore[union-attr]
        failed = await run.next_voice_turn(first)
        assert failed["outcome"] == "error" and failed["error"] == case.code, failed
        assert target.faults.fired == [case.fault]  # type: ignore[union-attr]
        assert not run.task.done()  # the daemon is still up
        if case.part != "output":  # no apology through a failed output
            await run.until(run.apology_played, 10)
        heard = await run.next_voice_turn(second)
        assert heard["outcome"] == "answered" and second.word in heard["transcript"].lower(), heard
        assert heard["reply"], heard
        asked = await run.ask()
        assert asked["outcome"] == "answered" and asked["reply"], (asked["outcome"], asked["reply"])
    (error,) = run.rec.on(f"{T}/error")
    assert error["code"] == case.code and error["turn"] == failed["turn"] and error["id"] is None
    assert [t["outcome"] for t in run.rec.on(f"{T}/latency")] == ["error", "answered", "answered"]
    apologised = case.part != "output"
    assert run.apology_played() == apologised
    assert run.pipeline.tracker.actions[Action.APOLOGY_PLAYED] == int(apologised)


# -- a real server's stream, spoiled ------------------------------------------------------------

WRONG_TYPES = (
    b'data: {"choices": ["x"]}',
    b'data: {"choices": [{"delta": "x"}]}',
    b'data: {"choices": null}',
    b"data: 5",
    b"data: [1, 2]",
)
STREAMS = {
    "wrong_types": [StreamFault((line,)) for line in WRONG_TYPES],
    "non_json": [
        StreamFault((b"data: {not json",)),
        StreamFault((b'data: {"choices": [{"delta": {"content": "Pa',)),
    ],
    "invalid_utf8": [StreamFault((b'data: {"choices": [{"delta": {"content": "caf\xe9 \xff"}}]}',))],
    "error_mid_stream": [StreamFault((b'data: {"error": {"message": "the model crashed", "code": 500}}',))],
    "ends_early": [StreamFault(cut=True)],
    "stall": [StreamFault(stall_s=HANG_S)],
}


@pytest.mark.parametrize("kind", STREAMS)
async def test_a_spoiled_stream_costs_one_request_and_the_next_answers(
    kind: str, broker: Broker, engines: Engines, proxy: tuple[FaultyProxy, str], tmp_path: Path
) -> None:
    from assistant.engines.openai_http import OpenAIEngine

    assert engines.asr is not None and engines.tts is not None
    faulty, url = proxy
    stall = kind == "stall"
    config = case_config(broker, DeadlineConfig(llm_stall_s=DEADLINE_S) if stall else DeadlineConfig())
    llm = OpenAIEngine(openai_config(url, max_tokens=MAX_PIECES))
    sink = FaultySink(WavSink(tmp_path / "replies.wav"))
    code = "stage_timeout" if stall else "llm_failed"
    spoiled = faulty.spoiled
    async with running(broker, config, Engines(engines.asr, llm, engines.tts), sink) as run:
        for n, fault in enumerate(STREAMS[kind], 1):
            faulty.faults.append(fault)
            bad = await run.ask()
            assert bad["outcome"] == "error" and bad["error"] == code, bad
            await run.apologised(n)
            good = await run.ask()
            assert good["outcome"] == "answered" and good["reply"], good
    assert faulty.spoiled - spoiled == len(STREAMS[kind])
    errors = run.rec.on(f"{T}/error")
    assert [(e["id"], e["code"]) for e in errors] == [
        (f"q{2 * i + 1}", code) for i in range(len(STREAMS[kind]))
    ]


# -- the engines' seams, with the real runtimes raising mid-call ---------------------------------


def _llama_breaks(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """llama.cpp fails after three tokens (as ``llama_decode`` does when the context is full)."""
    real = engine._llm.generate

    def generate(*args: Any, **kwargs: Any) -> Iterator[int]:
        tokens = real(*args, **kwargs)
        try:
            for n, token in enumerate(tokens):
                if n == 3:
                    raise RuntimeError("llama_decode returned -3")
                yield token
        finally:
            tokens.close()

    monkeypatch.setattr(engine._llm, "generate", generate)


def _piper_breaks(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime fails after the first sentence, with its own exception type."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    real = engine._voice.synthesize

    def synthesize(*args: Any, **kwargs: Any) -> Iterator[Any]:
        chunks = real(*args, **kwargs)
        yield next(chunks)
        raise Fail("[ONNXRuntimeError] : 1 : FAIL : injected")

    monkeypatch.setattr(engine._voice, "synthesize", synthesize)


def _whisper_breaks(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """faster-whisper fails while encoding, with an exception that is not CTranslate2's usual."""

    def encode(*args: Any, **kwargs: Any) -> Any:
        raise IndexError("list index out of range")

    monkeypatch.setattr(engine._model, "encode", encode)


def _chat(engines: Engines, out: list[Any]) -> None:
    assert engines.llm is not None
    engines.llm.chat([{"role": "user", "content": "What is the capital of France?"}], out.append)


def _speak(engines: Engines, out: list[Any]) -> None:
    assert engines.tts is not None
    engines.tts.synthesize("Paris is the capital. It is lovely in spring.", out.append)


def _hear(engines: Engines, out: list[Any]) -> None:
    assert engines.asr is not None
    pcm = read_audio_file(REPO / "examples" / "what-is-the-capital-of-france.wav")
    out.append(engines.asr.transcribe(pcm).text)


SEAMS = {
    "llama": ("llm", _llama_breaks, _chat, 3),
    "piper": ("tts", _piper_breaks, _speak, 1),
    "whisper": ("asr", _whisper_breaks, _hear, 0),
}


@pytest.mark.parametrize("name", SEAMS)
def test_a_runtime_failing_mid_call_is_the_stage_s_error_and_the_engine_still_works(
    name: str, engines: Engines, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage, breaks, call, before = SEAMS[name]
    engine = {"llm": engines.llm, "tts": engines.tts, "asr": engines.asr}[stage]
    with monkeypatch.context() as patch:
        breaks(engine, patch)
        out: list[Any] = []
        with pytest.raises(StageError) as err:
            call(engines, out)
        assert err.value.code == f"{stage}_failed" and err.value.__cause__ is not None
        assert type(err.value.__cause__).__name__ in err.value.message
        assert len(out) == before  # what came before the failure still went out
    again: list[Any] = []
    call(engines, again)
    assert again and all(again)


@pytest.mark.parametrize("part", ["llm", "llm-http"])
def test_a_call_already_stopped_costs_the_model_nothing(
    part: str, engines: Engines, request: pytest.FixtureRequest
) -> None:
    """An abandoned or cancelled call that reaches the engine late evaluates and sends nothing
    (llama_cpp.server would cut the stream it is serving short for a new request)."""
    from assistant.engines.llama import LlamaEngine
    from assistant.engines.openai_http import OpenAIEngine

    stopped = threading.Event()
    stopped.set()
    out: list[str] = []
    if part == "llm":
        assert isinstance(engines.llm, LlamaEngine)
        engines.llm.last_prompt = []
        assert engines.llm.chat([{"role": "user", "content": "Hi"}], out.append, stopped) == "cancelled"
        assert engines.llm.last_prompt == []
    else:
        faulty, url = request.getfixturevalue("proxy")
        requests = faulty.requests
        engine = OpenAIEngine(openai_config(url))
        assert engine.chat([{"role": "user", "content": "Hi"}], out.append, stopped) == "cancelled"
        assert faulty.requests == requests and engine.last_requests == []
    assert out == []
