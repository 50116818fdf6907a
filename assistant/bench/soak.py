"""``assistant bench --soak N``: N turns in one process, to show that nothing grows with them
(RELIABILITY.md, "Soak"): RSS flat after warm-up; fds, threads, tasks constant; models loaded once.

The configured models in one ``Pipeline``, run by ``Daemon`` (beside ``MqttBridge`` given a broker);
a live microphone paced in real time (``Microphone``); a sink that keeps no audio (``CountingSink``;
``MemorySink`` keeps every reply). The soak is one more service: it plays the turns one after the
other, then stops the microphone, which ends the daemon. Per 20 turns (``plan``): a spoken question
(a corpus utterance, 2-4 s); a barge-in (an asked question's answer plays in real time, the sink
pacing only then, and a spoken question talks over it: two turns); a cancel at the first token of
an asked question (MQTT ``cancel`` of that turn, every other time of all; or ``Pipeline.cancel``);
16 questions asked as text (MQTT ``ask``, else ``Pipeline.ask``), spoken into the sink through the
same chain, every 8th with ``speak: false``. After the spoken question the assistant is left idle
for ``IDLE_PAUSE_S``.

Samples (``Soak.sample``) at the start, after warm-up (5% of the turns, at least 20, at most a
third), at eight points after it, at the end. Checks: no turn failed or was refused; one end per
asked turn, and over MQTT per command ``id`` one ``ack``, then per ask one ``latency``, one final
``reply`` if answered, an ``error`` only if failed; fds, threads, tasks the same as after warm-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import os
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from assistant.audio.sinks import NullSink
from assistant.audio.sources import BYTES_PER_MS, feed
from assistant.clock import StreamClock
from assistant.config import Config, InputConfig
from assistant.daemon import Daemon, Service
from assistant.engines import Engines, load_engines
from assistant.engines.llama import LlamaEngine
from assistant.messages import Message
from assistant.mqtt.protocol import Topics, tls_context
from assistant.pipeline import Pipeline
from assistant.turn.kinds import Action, Mark, Outcome
from assistant.turn.latency import TurnRecord

BARGE_IN_QUESTION = "Tell me about the history of Rome."
"""Asked before a barge-in: its reply is long enough to be talked over."""
MODEL_CLASSES = frozenset({"Llama", "WhisperModel", "PiperVoice", "InferenceSession"})
"""Objects that hold a loaded model (llama.cpp, faster-whisper, piper, onnxruntime)."""
IDLE_PAUSE_S = 1.5
"""After each voice turn (one per 20), the assistant is left idle this long, as between a user's
questions: long enough for the heaps' idle trim (``service/allocator.py``) to run."""
TURN_LIMIT_S = 120.0
"""A turn not ended by then is reported lost."""


def plan(turns: int, cycle: int = 20, silent_every: int = 8) -> list[str]:
    """The episodes, in order: ``voice`` at turn 1 of each cycle, ``cancel`` at 4, ``barge_in`` at 7
    (two turns; the last may end at ``turns + 1``), else ``ask``, every ``silent_every``-th ``silent``."""
    episodes: list[str] = []
    turn = asks = 0
    while turn < turns:
        kind = {1: "voice", 4: "cancel", 7: "barge_in"}.get(turn % cycle, "ask")
        if kind == "ask":
            asks += 1
            kind = "silent" if asks % silent_every == 0 else "ask"
        episodes.append(kind)
        turn += 2 if kind == "barge_in" else 1
    return episodes


class CountingSink(NullSink):
    """A speaker that keeps no audio: it counts it, and plays in real time only while ``realtime``
    is set (so that a reply can be talked over); ``interrupt`` cuts the piece playing."""

    def __init__(self) -> None:
        self.realtime = False
        self.interrupts = 0
        self._playing: asyncio.Future[None] | None = None

    async def write(self, pcm: bytes, sample_rate: int) -> None:
        if self.realtime:
            self._playing = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(len(pcm) / 2 / sample_rate):
                    await self._playing
            self._playing = None

    def interrupt(self) -> None:
        self.interrupts += 1
        if self._playing is not None and not self._playing.done():
            self._playing.set_result(None)

    def pause(self) -> None: ...  # fmt: skip
    def resume(self) -> None: ...  # fmt: skip
    def playback_peak(self, start_ns: int, end_ns: int) -> float: return 0.0  # fmt: skip


class Microphone:
    """A live microphone paced in real time: silence, and the utterances queued to be heard."""

    def __init__(self, config: InputConfig) -> None:
        self.config = config
        self.queue: deque[bytes] = deque()
        self.stopped = False

    async def run(self, outbox: asyncio.Queue[Message], clock: StreamClock) -> None:
        await feed(self._pieces(), outbox, clock, self.config)

    async def _pieces(self) -> AsyncIterator[bytes]:
        size = self.config.chunk_ms * BYTES_PER_MS
        while not self.stopped:  # ``feed`` paces every piece
            pcm = self.queue.popleft() if self.queue else bytes(size)
            for at in range(0, len(pcm), size):
                yield pcm[at : at + size]


async def until(predicate: Callable[[], object], limit_s: float) -> bool:
    """Poll ``predicate`` until it holds (True) or ``limit_s`` has passed (False)."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


class Soak:
    """Plays the turns (the ``soak`` service), checks what comes back and takes the samples."""

    def __init__(
        self, config: Config, engines: Engines, episodes: list[str],
        utterances: Sequence[tuple[str, bytes]], log: Callable[[str], None],
    ) -> None:  # fmt: skip
        self.sink, self.episodes, self.log = CountingSink(), episodes, log
        self.pipeline = Pipeline(config, engines, self.sink, on_turn=self.turn_ended)
        self.turns, self.mic = len(episodes) + episodes.count("barge_in"), Microphone(config.input)
        self.warmup = min(max(self.turns // 20, 20), self.turns // 3)
        self.utterances = itertools.cycle(utterances)
        self.bridge: Any = None  # the ``MqttBridge`` commands go through, or None: the pipeline
        self.client: Any = None
        self.outcomes: Counter[str] = Counter()  # ``<ask|voice>.<outcome>`` -> turns
        self.ended: dict[int, TurnRecord] = {}  # asked turns that have ended, until claimed
        self.voice: deque[TurnRecord] = deque()
        self.seen: dict[str, Counter[str]] = {}
        """Per command id in flight: ``ack``, ``refused``, ``latency``, ``final``, ``error``."""
        self.acked: dict[str, list[int]] = {}
        self.problems: list[str] = []
        self.counts: Counter[str] = Counter()
        self.samples: list[dict[str, Any]] = []
        self.thread_names: list[list[str]] = []  # per sample
        self.started = time.monotonic()
        self._ids = itertools.count(1)
        self._llm: Counter[str] = Counter()

    def turn_ended(self, rec: TurnRecord) -> None:
        voice = Mark.SPEECH_END in rec.marks
        self.outcomes[f"{'voice' if voice else 'ask'}.{rec.outcome}"] += 1
        if voice:
            self.voice.append(rec)
        else:
            self.ended[rec.turn_id] = rec

    async def run(self) -> None:
        try:
            if self.bridge is None:
                return await self._play()
            import aiomqtt

            await until(self.bridge.connected.is_set, 30)  # else no command is answered: problems
            cfg, self.topics = self.bridge.config, Topics(self.bridge.config)
            tls, user = tls_context(cfg) if cfg.tls else None, cfg.username or None
            client = aiomqtt.Client(cfg.host, cfg.port, username=user, password=cfg.password, tls_context=tls)
            topics = [(self.topics.out(name), 1) for name in ("ack", "error", "latency", "reply")]
            async with client, asyncio.TaskGroup() as group:
                await client.subscribe(topics)
                reader = group.create_task(self._read(client), name="soak-mqtt-read")
                self.client = client
                await self._play()
                reader.cancel()
        finally:
            self.client = None
            self.mic.stopped = True

    async def _read(self, client: Any) -> None:
        """Count each message on ``ack``, ``error``, ``latency`` and the final ``reply`` by its id."""
        async for message in client.messages:
            name = message.topic.value.rsplit("/", 1)[-1]
            with contextlib.suppress(ValueError, TypeError):
                body = json.loads(message.payload)
                rid = body.get("id")
                if not isinstance(rid, str) or name == "reply" and not body.get("final"):
                    continue
                if (seen := self.seen.get(rid)) is None:
                    self.problems.append(f"{rid}: {name} {body} after the command was settled")
                    continue
                if name == "ack":
                    self.acked[rid] = list(body.get("turns", []))
                kind = {"error": "error" if "turn" in body else "refused", "reply": "final"}.get(name, name)
                seen[kind] += 1

    def _settle(self, rid: str, **expect: int) -> None:
        """Command ``rid`` is done: what came for it must be ``expect``; anything later is a problem."""
        seen = self.seen.pop(rid, Counter())
        self.acked.pop(rid, None)
        if any(seen[key] != count for key, count in expect.items()):
            self.problems.append(f"{rid}: expected {expect}, got {dict(seen)}")

    async def _play(self) -> None:
        warmup, turns, turn = self.warmup, self.turns, 0
        points = sorted({*range(warmup, turns, max(1, (turns - warmup) // 8)), turns})
        await self.sample(0)
        for kind in self.episodes:
            if kind == "voice":
                self.mic.queue.append(next(self.utterances)[1])
                await self._voice_end()
                await asyncio.sleep(IDLE_PAUSE_S)
            elif kind == "cancel":
                await self._cancel()
            elif kind == "barge_in":
                await self._barge_in()
            else:
                await self._turn_end(*await self._ask(next(self.utterances)[0], speak=kind == "ask"))
            self.counts[kind] += 1
            turn += 2 if kind == "barge_in" else 1
            if isinstance(llm := self.pipeline.engines.llm, LlamaEngine):
                self._llm["prompt"] = max(self._llm["prompt"], len(llm.last_prompt))
                self._llm["kv"] = max(self._llm["kv"], len(llm.last_context))
            if turn >= points[0]:
                points = [point for point in points if point > turn] or [turns + 1]
                s = await self.sample(turn)
                self.log(f"turn {turn}/{turns}: {s['seconds']:.0f} s, RSS {s['rss_mb']} MB, fds {s['fds']},"
                         f" threads {s['threads']}+{s['pool']}, tasks {s['tasks']}")  # fmt: skip

    async def _cancel(self) -> None:
        tracker, first = self.pipeline.tracker, Mark.FIRST_TOKEN
        rid, turn = await self._ask(next(self.utterances)[0])
        if turn is not None:
            await until(lambda: not tracker.is_open(turn) or first in tracker.record(turn).marks, 60)
            target = turn if self.counts["cancel"] % 2 == 0 else None
            if self.client is None:
                self.pipeline.cancel(target)
            else:
                cancel = await self._command("cancel", {} if target is None else {"turn": target})
                self._settle(cancel, ack=1, refused=0, error=0)
        rec = await self._turn_end(rid, turn)
        self.counts["cancel_too_late"] += rec is not None and rec.outcome != Outcome.CANCELLED

    async def _barge_in(self) -> None:
        tracker, answer = self.pipeline.tracker, Mark.FIRST_ANSWER_AUDIO
        before = tracker.actions[Action.BARGE_IN]
        self.sink.realtime = True
        try:
            rid, turn = await self._ask(BARGE_IN_QUESTION)
            if turn is not None:
                await until(lambda: not tracker.is_open(turn) or answer in tracker.record(turn).marks, 60)
                await asyncio.sleep(0.5)  # the answer plays
            self.mic.queue.append(next(self.utterances)[1])
            rec = await self._turn_end(rid, turn)
            await self._voice_end()
        finally:
            self.sink.realtime = False
        cut = rec is not None and rec.outcome == Outcome.CANCELLED
        self.counts["barge_in_missed"] += not cut or tracker.actions[Action.BARGE_IN] == before

    async def _command(self, name: str, body: dict[str, Any]) -> str:
        """Publish a command with a fresh id, wait for its ``ack`` or ``error``; returns the id."""
        rid = body["id"] = f"soak-{next(self._ids)}"
        seen = self.seen[rid] = Counter()
        await self.client.publish(self.topics.out(name), json.dumps(body), qos=1)
        await until(lambda: seen["ack"] + seen["refused"], 30)  # else settled as a problem
        return rid

    async def _ask(self, text: str, *, speak: bool = True) -> tuple[str, int | None]:
        """Ask ``text``: its command id, and its turn (None if refused)."""
        if self.client is None:
            rid = f"soak-{next(self._ids)}"
            return rid, await self.pipeline.ask(text, rid, speak=speak)
        rid = await self._command("ask", {"text": text, "speak": speak})
        if turns := self.acked.get(rid, []):
            return rid, turns[0]
        self.outcomes["ask.refused"] += 1
        self._settle(rid, ack=0, refused=1)
        return rid, None

    async def _turn_end(self, rid: str, turn: int | None) -> TurnRecord | None:
        """The end of an asked turn; over MQTT, also what a client saw of it."""
        if turn is None:
            return None
        if not await until(lambda: turn in self.ended, TURN_LIMIT_S):
            self.problems.append(f"turn {turn} ({rid}) did not end within {TURN_LIMIT_S:.0f} s")
            return None
        rec = self.ended.pop(turn)
        if self.client is not None:
            seen = self.seen.get(rid, Counter())
            await until(lambda: seen["latency"], 10)
            final = 1 if rec.outcome == Outcome.ANSWERED else min(seen["final"], 1)  # cancelled: either
            self._settle(rid, ack=1, refused=0, latency=1, final=final, error=rec.outcome == Outcome.ERROR)
        return rec

    async def _voice_end(self) -> None:
        if not await until(lambda: self.voice, TURN_LIMIT_S):
            self.problems.append(f"a spoken question got no turn within {TURN_LIMIT_S:.0f} s")
        self.counts["voice_extra"] += max(0, len(self.voice) - 1)  # an utterance heard as two turns
        self.voice.clear()

    async def sample(self, turn: int) -> dict[str, Any]:
        """No turn in flight, and the assistant idle for ``IDLE_PAUSE_S`` (its heaps trimmed, as
        they are between a user's questions): ``rss_mb`` is its memory at rest. ``threads``: outside
        asyncio's default executor (``pool``: its workers, started on demand); ``prompt_tokens``,
        ``kv_tokens``: the largest LLM prompt and context since the last sample; ``records``:
        finished turns the tracker keeps; ``models``: ``MODEL_CLASSES``."""
        tracker = self.pipeline.tracker
        if not await until(lambda: not tracker.open_turns(), 30):
            self.problems.append(f"turns still open at turn {turn}: {tracker.open_turns()}")
        await asyncio.sleep(IDLE_PAUSE_S)
        names = [t.name for t in threading.enumerate() if not t.name.startswith("asyncio_")]
        status = Path("/proc/self/status").read_bytes()  # noqa: ASYNC240 - procfs: never blocks
        counted = turn in (0, self.turns)
        sample = {
            "turn": turn, "seconds": round(time.monotonic() - self.started, 1),
            "rss_mb": round(int(status.split(b"VmRSS:", 1)[1].split()[0]) / 1024, 1),
            "fds": len(os.listdir("/proc/self/fd")), "threads": len(names),
            "pool": threading.active_count() - len(names), "tasks": len(asyncio.all_tasks()),
            "prompt_tokens": self._llm.pop("prompt", 0), "kv_tokens": self._llm.pop("kv", 0),
            "records": len(tracker.finished),
            "models": sum(type(o).__name__ in MODEL_CLASSES for o in gc.get_objects()) if counted else None,
        }  # fmt: skip
        self.thread_names.append(names)
        self.samples.append(sample)
        return sample


async def soak(
    config: Config, engines: Engines, utterances: Sequence[tuple[str, bytes]], *, episodes: list[str],
    mqtt: bool = False, log: Callable[[str], None] = lambda _line: None,
) -> dict[str, Any]:  # fmt: skip
    """The soak on loaded ``engines``: ``episodes`` from ``plan``; ``utterances``: (text, 16 kHz
    mono int16 speech) to ask and to speak; ``mqtt``: commands through ``config.mqtt``'s broker."""
    with tempfile.TemporaryDirectory() as folder:  # the timers it sets are not the user's
        timers = replace(config.intents, timers_file=str(Path(folder) / "timers.json"))
        runner = Soak(replace(config, input=replace(config.input, realtime=True), intents=timers),
                      engines, episodes, utterances, log)  # fmt: skip
        services: list[Service] = [("soak", runner.run)]
        if mqtt:
            from assistant.mqtt.bridge import MqttBridge

            runner.bridge = MqttBridge(runner.pipeline, config.mqtt)
            services.insert(0, ("mqtt", runner.bridge.run))
        log(f"soak: {runner.turns} turns, {dict(Counter(episodes))}, commands over MQTT: {mqtt}")
        await Daemon(runner.pipeline, services).run(runner.mic)
    samples, problems, counts = runner.samples, runner.problems, runner.counts
    at = next(i for i, s in enumerate(samples) if s["turn"] >= runner.warmup)
    warm, end, names = samples[at], samples[-1], runner.thread_names
    problems += [f"turn {turn} ended twice, or was never claimed" for turn in runner.ended]
    steady = {key: end[key] == warm[key] for key in ("fds", "threads", "tasks")}
    failed = sum(n for key, n in runner.outcomes.items() if key.endswith((".error", ".refused")))
    return {
        "turns": runner.turns, "seconds": end["seconds"],
        "episodes": dict(Counter(runner.episodes)), "outcomes": dict(sorted(runner.outcomes.items())),
        "misses": {key: counts[key] for key in ("barge_in_missed", "cancel_too_late", "voice_extra")},
        "actions": dict(runner.pipeline.tracker.actions), "problems": problems,
        "warmup_turn": warm["turn"], "rss_drift_pct": round(100 * (end["rss_mb"] / warm["rss_mb"] - 1), 2),
        "threads_started": sorted(set(names[-1]) - set(names[at])),
        "steady": steady, "interrupts": runner.sink.interrupts, "samples": samples,
        "events_dropped": runner.pipeline.events.dropped, "mqtt": dict(runner.bridge.stats) if mqtt else {},
        "ok": failed == 0 and not problems and all(steady.values()),
    }  # fmt: skip


def format_soak(result: dict[str, Any]) -> str:
    """The summary printed by ``assistant bench --soak``: the samples as a table, then the checks."""
    samples = result["samples"]
    warm, end = next(s for s in samples if s["turn"] == result["warmup_turn"]), samples[-1]
    rows = [list(samples[0])] + [["" if v is None else v for v in s.values()] for s in samples]
    table = [" ".join(f"{v:>{max(len(k), 7)}}" for k, v in zip(samples[0], row, strict=True)) for row in rows]
    steady = ", ".join(f"{key} {'constant' if same else 'CHANGED'}" for key, same in result["steady"].items())
    return "\n".join([
        f"{result['turns']} turns in {end['seconds'] / 60:.1f} min, commands"
        f" {'over MQTT' if result['mqtt'] else 'in process'}: {result['episodes']}", "", *table, "",
        f"RSS after warm-up (turn {warm['turn']}) {warm['rss_mb']:.1f} MB, at the end {end['rss_mb']:.1f} MB:"
        f" {result['rss_drift_pct']:+.2f}%" + (" (more than 5%: not flat)" * (result["rss_drift_pct"] > 5)),
        f"after warm-up: {steady} (threads started: {result['threads_started']}); live models at the start"
        f" {samples[0]['models']}, at the end {end['models']}",
        f"outcomes: {result['outcomes']}; {result['misses']}; problems: {len(result['problems'])}",
        *(f"  {problem}" for problem in result["problems"][:20]), "OK" if result["ok"] else "FAILED",
    ])  # fmt: skip


def run_soak(
    config: Config, model_dir: Path, *, turns: int, mqtt: bool = False, log: Callable[[str], None]
) -> dict[str, Any]:
    """``assistant bench --soak``: the models, the corpus's unpaused utterances (one take each), the soak."""
    from assistant.bench.corpus import bench_corpus
    from assistant.bench.runner import pick_items

    log("loading models and the corpus")
    engines = load_engines(config, model_dir)
    items = pick_items(bench_corpus(model_dir), every_variant=False)
    # not the paused ones: the soak counts an utterance heard as two turns against the daemon
    utterances = [(item.text, item.pcm) for item in items if item.pause_start_ms is None]
    return asyncio.run(soak(config, engines, utterances, episodes=plan(turns), mqtt=mqtt, log=log))
