"""llama-cpp-python adapter: a chat reply generated from tokens, streamed piece by piece.

The prompt is the model's own chat template (``tokenizer.chat_template`` from the GGUF) rendered
by ``assistant.prompt``, with every message's content tokenized as data: no user text can become
``<｜Assistant｜>``, ``<think>`` or ``<|im_start|>``. Generation runs ``Llama.generate`` on that
token list; llama-cpp-python reuses the longest prefix already in the KV cache, so a turn only
evaluates what changed (its own question, after the system prompt and the remembered turns).

Warm start: at load, the system prompt's KV state is evaluated once and saved to
``<state_cache>/<hash>.llstate``, the hash covering the model file (name, size, mtime), the
prompt's tokens, ``n_ctx`` and the llama-cpp-python version; the next start loads it instead.

Reasoning hooks: ``chat(..., prefill=...)`` appends assistant-side text (an empty or open think
block) to the prompt; ``steer()``, called after every token, may return text to append to the
context (``</think>`` when the thinking budget is spent), after which generation continues.

A llama.cpp context is not thread-safe, so one lock guards it; and every evaluation runs on the
engine's own thread (``_on_own_thread``), whichever thread calls. llama.cpp's batch threads are an
OpenMP team per calling thread, and once libgomp manages more threads than there are cores (a
second calling thread is enough on two cores) it stops spinning at barriers and puts threads to
sleep at each of the hundreds of barriers of an evaluation: a question's 12 tokens took 105 ms
instead of 67 ms, and the daemon's worker threads take turns calling. The generator is consumed
on that thread too, so ``on_token`` is called there.
"""

from __future__ import annotations

import codecs
import ctypes
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from assistant.chat.prompt import CHATML, ChatMessage, ChatTemplate, data_tokens, prompt_tokens
from assistant.config import LlmConfig
from assistant.contracts import ChatEngine
from assistant.engines.share import CoreShare
from assistant.errors import (
    AssistantError,
    ModelCorruptError,
    ModelMissingError,
    StageError,
    TooLongError,
)

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")
RESERVE_TOKENS = 16
"""Context kept free beyond ``max_tokens`` for a prefill or a budget's closing tag."""
_STATE_MAGIC = b"ASSTKV1\n"
DEFAULT_THREADS_MAX = 4
"""``llm.n_threads = 0`` generates on every core the process may use, up to this many."""


def generation_threads(config: LlmConfig) -> int:
    """Threads generating tokens: ``llm.n_threads``, or every usable core up to four (measured on
    two cores: 90 tokens/s on both against 48-56 on one, with ``service/threads.py``'s short
    spin; more than four is not measured, and a small model gains little from them)."""
    if config.n_threads:
        return config.n_threads
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity call on this platform
        cores = os.cpu_count() or 1
    return max(1, min(cores, DEFAULT_THREADS_MAX))


class _Vocab:
    """``prompt.Vocab`` over a loaded ``Llama``."""

    def __init__(self, llm: Any) -> None:
        self._llm = llm

    def tokenize(self, text: bytes, add_bos: bool, special: bool) -> list[int]:
        return list(self._llm.tokenize(text, add_bos=add_bos, special=special))

    def token_attr(self, token: int) -> int:
        return int(self._llm._model.token_get_attr(token))

    def token_text(self, token: int) -> str:
        return str(self._llm._model.token_get_text(token))


PRIME_MAX_TOKENS = 64
"""``prime`` evaluates at most this many tokens (the end of a reply and the template's opening)."""
SHIFT_PROBE_TOKENS = 16
"""Tokens after the common prefix that must be found further on in the cache to shift it."""


def default_state_dir(model_dir: Path | None = None) -> Path:
    """``state`` beside the model cache (``model_dir``, default the user's)."""
    from assistant.models.store import default_model_dir

    return (model_dir or default_model_dir()).parent / "state"


def kv_cache_params(kind: str) -> dict[str, Any]:
    """``Llama``'s arguments for a KV cache of ``kind`` (``llm.kv_cache``): a quantized V cache
    needs flash attention."""
    import llama_cpp

    if kind == "f16":
        return {}
    ggml = {"q8_0": llama_cpp.GGML_TYPE_Q8_0, "q4_0": llama_cpp.GGML_TYPE_Q4_0}[kind]
    return {"type_k": ggml, "type_v": ggml, "flash_attn": True}


class LlamaEngine(ChatEngine):
    """A loaded GGUF model."""

    def __init__(
        self,
        gguf_path: Path,
        config: LlmConfig,
        *,
        state_dir: Path | None = None,
        share: CoreShare | None = None,
        history_tokens: int | None = None,
    ) -> None:
        """``history_tokens``: the conversation memory this model copes with (its manifest
        entry's), used where ``llm.history_tokens`` is -1; None: the general default."""
        try:
            from llama_cpp import Llama
        except ImportError as err:
            raise ModelMissingError(
                "llama-cpp-python is not installed: pip install llama-cpp-python"
            ) from err
        self.config = config
        self.path = gguf_path
        self.share = share
        """When set, generation waits between tokens while speech is being synthesized."""
        self.history_tokens = history_tokens
        self.yielded_s = 0.0
        """Seconds the last generation waited for synthesis (``share``)."""
        self._lock = threading.Lock()
        self._own = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        """The one thread every llama.cpp evaluation runs on (see the module's docstring)."""
        self._own_ident = self._own.submit(threading.get_ident).result()
        self.kv_cache = config.kv_cache
        """The KV cache's number type in use: ``llm.kv_cache``, or ``f16`` where the model
        cannot have that (a quantized cache needs heads of at least 32 dimensions)."""
        self._llm: Any = self._load(Llama, gguf_path, config)
        self.vocab = _Vocab(self._llm)
        model = self._llm._model
        bos, eos = self._llm.token_bos(), self._llm.token_eos()
        self.template = ChatTemplate(
            self._llm.metadata.get("tokenizer.chat_template") or CHATML,
            model.token_get_text(bos) if bos != -1 else "",
            model.token_get_text(eos) if eos != -1 else "",
        )
        self.n_ctx: int = self._llm.n_ctx()
        """Context length, in tokens."""
        think = self._llm.tokenize(b"<think>", add_bos=False, special=True)
        self._thinks = len(think) == 1 and self.vocab.token_attr(think[0]) & 0b11000 != 0
        self._opens_think = self.template.opens_think()
        self.last_prompt: list[int] = []
        """Token ids of the last prompt (prefill included), for tests and reports."""
        self.last_context: list[int] = []
        """The last turn's whole context: prompt, generated and injected tokens."""
        self.warm_tokens = 0
        """Tokens of the system prompt whose KV state was restored or evaluated at start-up."""
        self.warm_source = "off"
        """``loaded`` (from disk), ``evaluated`` (and saved) or ``off``."""
        self.shifted_tokens = 0
        """Cached tokens the last turn kept by shifting them over forgotten history."""
        self.reused_tokens = 0
        """Tokens at the start of the last prompt already in the cache (at most; llama.cpp
        evaluates the rest)."""
        if config.warm:
            self._warm(
                Path(config.state_cache).expanduser()
                if config.state_cache
                else state_dir or default_state_dir()
            )

    @property
    def thinks(self) -> bool:
        """The vocabulary has ``<think>`` as one special token: a reasoning model."""
        return self._thinks

    @property
    def template_opens_think(self) -> bool:
        """The generation prompt already opens a think block."""
        return self._opens_think

    def reconfigure(self, config: LlmConfig) -> None:
        """Sampling, reasoning and prompt keys apply from the next turn."""
        self.config = config

    def _on_own_thread(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``work(*args, **kwargs)`` on the engine's own thread; blocks until it is done."""
        if threading.get_ident() == self._own_ident:
            return work(*args, **kwargs)
        return self._own.submit(work, *args, **kwargs).result()

    # -- prompt --------------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as plain data."""
        return len(data_tokens(self.vocab, text))

    def prompt(self, messages: list[ChatMessage], prefill: str = "") -> list[int]:
        """The token ids generation starts from."""
        return prompt_tokens(self.vocab, self.template.render(messages), prefill)

    def next_prefix(self, messages: list[ChatMessage]) -> list[int]:
        """Tokens the prompt of the next question after ``messages`` begins with: up to where
        that question's words start."""
        segments = self.template.render([*messages, {"role": "user", "content": "?"}])
        question = max(i for i, s in enumerate(segments) if s.data and s.text == "?")
        return prompt_tokens(self.vocab, segments[:question])

    def prime(self, messages: list[ChatMessage]) -> int:
        """Evaluate now, while nobody waits, what the next turn's prompt will begin with (the
        conversation ``messages`` and the template's opening of the next question), so that turn
        evaluates only the question's own tokens. Returns the tokens evaluated; 0 when more than
        ``PRIME_MAX_TOKENS`` would be needed (the turn itself reads them then)."""
        try:
            return self._on_own_thread(self._prime, self.next_prefix(messages))
        except AssistantError:
            raise
        except Exception as err:  # llama.cpp's RuntimeError/ValueError, or its Python layer's own
            raise StageError(
                "llm", f"evaluating the next prompt's start failed: {type(err).__name__}: {err}"
            ) from err

    def _prime(self, prefix: list[int]) -> int:
        with self._lock:
            llm = self._llm
            same = 0
            for a, b in zip(llm.input_ids[: llm.n_tokens].tolist(), prefix, strict=False):
                if a != b:
                    break
                same += 1
            todo = prefix[same:]
            if not todo or len(todo) > PRIME_MAX_TOKENS:
                return 0
            if same < llm.n_tokens:
                llm._ctx.kv_cache_seq_rm(-1, same, -1)
                llm.n_tokens = same
            llm.eval(todo)
            return len(todo)

    def _load(self, llama: Any, gguf_path: Path, config: LlmConfig) -> Any:
        """``gguf_path`` in llama.cpp, with the KV cache ``llm.kv_cache`` asks for if it can."""
        kinds = [config.kv_cache] if config.kv_cache == "f16" else [config.kv_cache, "f16"]
        for kind in kinds:
            try:
                llm = self._on_own_thread(
                    llama,
                    model_path=str(gguf_path),
                    n_ctx=config.n_ctx,
                    n_threads=generation_threads(config),
                    n_threads_batch=config.n_threads_batch or None,
                    seed=config.seed,
                    verbose=False,
                    **kv_cache_params(kind),
                )
            except (ValueError, RuntimeError, OSError) as err:
                # only the context can refuse the cache type; a model file that does not load
                # ("Failed to load model from file") is corrupt whatever the cache
                if kind != kinds[-1] and "context" in str(err):
                    _LOGGER.warning(
                        "llm: %s cannot have a %s KV cache (%s): using f16, which takes more"
                        ' memory; set llm.kv_cache = "f16" to skip this try',
                        gguf_path.name,
                        kind,
                        err,
                    )
                    continue
                raise ModelCorruptError(f"{gguf_path}: llama.cpp cannot load this model: {err}") from err
            self.kv_cache = kind
            return llm
        raise AssertionError("unreachable: the last kind raises")

    def system_prefix(self) -> list[int]:
        """Tokens every turn's prompt begins with: up to where the first question starts."""
        return self.next_prefix([{"role": "system", "content": self.config.system_prompt}])

    # -- warm start ----------------------------------------------------------------------------

    def _state_file(self, folder: Path, prefix: list[int]) -> Path:
        import llama_cpp

        stat = self.path.stat()
        key = json.dumps(
            [
                self.path.name,
                stat.st_size,
                stat.st_mtime_ns,
                prefix,
                self.n_ctx,
                llama_cpp.__version__,
                self.kv_cache,
            ]
        )
        return folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.llstate"

    def _warm(self, folder: Path) -> None:
        prefix = self.system_prefix()
        if not prefix:
            return
        path = self._state_file(folder, prefix)
        self._on_own_thread(self._warm_from, path, prefix)
        _LOGGER.info("llm: system prompt warm (%d tokens, %s)", len(prefix), self.warm_source)

    def _warm_from(self, path: Path, prefix: list[int]) -> None:
        with self._lock:
            if path.is_file() and self._load_state(path, prefix):
                self.warm_source = "loaded"
            else:
                self._llm.reset()
                self._llm.eval(prefix)
                self.warm_source = "evaluated"
                self._save_state(path)
            self.warm_tokens = len(prefix)

    def _save_state(self, path: Path) -> None:
        import llama_cpp

        ctx = self._llm._ctx.ctx
        size = llama_cpp.llama_state_get_size(ctx)
        buf = (ctypes.c_uint8 * size)()
        n = llama_cpp.llama_state_get_data(ctx, buf, size)
        head = json.dumps({"tokens": self._llm._input_ids.tolist()}).encode()
        tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as fh:
                fh.write(_STATE_MAGIC + len(head).to_bytes(8, "little") + head)
                fh.write(memoryview(buf)[:n])
            tmp.replace(path)
        except OSError as err:  # a read-only cache costs speed, not the turn
            _LOGGER.warning("llm: cannot save the warm state to %s: %s", path, err)
            tmp.unlink(missing_ok=True)

    def _load_state(self, path: Path, prefix: list[int]) -> bool:
        import llama_cpp

        try:
            data = path.read_bytes()
            if not data.startswith(_STATE_MAGIC):
                raise ValueError("not a state file")
            at = len(_STATE_MAGIC) + 8
            n_head = int.from_bytes(data[len(_STATE_MAGIC) : at], "little")
            tokens = json.loads(data[at : at + n_head])["tokens"]
            if tokens != prefix:
                raise ValueError("state holds other tokens")
            blob = data[at + n_head :]
            buf = (ctypes.c_uint8 * len(blob)).from_buffer_copy(blob)
            self._llm.reset()
            if llama_cpp.llama_state_set_data(self._llm._ctx.ctx, buf, len(blob)) != len(blob):
                raise ValueError("llama.cpp refused the state")
        except (OSError, ValueError, KeyError) as err:
            _LOGGER.warning("llm: warm state %s unusable (%s); evaluating the prompt", path, err)
            return False
        self._llm.input_ids[: len(tokens)] = tokens
        self._llm.n_tokens = len(tokens)
        self._llm._requires_eval = True
        return True

    # -- generation ----------------------------------------------------------------------------

    def chat(
        self,
        messages: list[ChatMessage],
        on_token: Callable[[str], None],
        stop: threading.Event | None = None,
        *,
        prefill: str = "",
        steer: Callable[[], str | None] | None = None,
    ) -> str:
        """Generate a reply, calling ``on_token`` per piece; returns the finish reason; blocks.

        ``prefill`` is evaluated after the generation prompt and not reported; ``steer`` is
        called after each piece and may return text to append to the context (not reported).
        Raises ``TooLongError`` when the prompt and ``max_tokens`` do not fit in the context.
        """
        try:
            context = self.prompt(messages, prefill)
            limit = self.n_ctx - self.config.max_tokens - RESERVE_TOKENS
            if len(context) > limit:
                raise TooLongError(
                    f"the prompt is {len(context)} tokens; at most {max(limit, 0)} fit in"
                    f" llm.n_ctx = {self.n_ctx} with room for llm.max_tokens = {self.config.max_tokens}"
                )

            def locked() -> str:
                with self._lock:
                    if stop is not None and stop.is_set():  # stopped while it waited: evaluate nothing
                        return "cancelled"
                    self.last_prompt = list(context)
                    return self._generate(context, on_token, stop, steer)

            return self._on_own_thread(locked)
        except AssistantError:
            raise
        except Exception as err:  # llama.cpp's RuntimeError/ValueError, or its Python layer's own
            raise StageError("llm", f"generation failed: {type(err).__name__}: {err}") from err

    def _generate(
        self,
        context: list[int],
        on_token: Callable[[str], None],
        stop: threading.Event | None,
        steer: Callable[[], str | None] | None,
    ) -> str:
        import llama_cpp

        self.last_context = context
        self.shifted_tokens = self._drop_forgotten_span(context)
        self.reused_tokens = min(self._llm.n_tokens, len(context))
        self.yielded_s = 0.0
        vocab = self._llm._model.vocab
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        produced = 0
        while True:
            inject: list[int] = []
            gen = self._llm.generate(
                context,
                top_k=40,
                top_p=self.config.top_p,
                min_p=0.05,
                temp=self.config.temperature,
                repeat_penalty=1.0,
            )
            try:
                for token in gen:
                    if stop is not None and stop.is_set():
                        return "cancelled"
                    if llama_cpp.llama_vocab_is_eog(vocab, token):
                        return "stop"
                    context.append(token)
                    produced += 1
                    piece = decoder.decode(self._llm.detokenize([token], special=False))
                    if piece:
                        on_token(piece)
                    if produced >= self.config.max_tokens:
                        return "length"
                    if self.share is not None:
                        self.yielded_s += self.share.wait_turn(stop)
                    extra = steer() if steer is not None else None
                    if extra:
                        inject = self._llm.tokenize(extra.encode(), add_bos=False, special=True)
                        break
            finally:
                gen.close()
            if not inject:
                return "stop"
            context += inject  # the last sampled token and these are evaluated by the next call

    def _drop_forgotten_span(self, context: list[int]) -> int:
        """When ``context`` is the cached context with one span left out (the oldest exchanges
        that conversation memory forgot), remove that span from the KV cache and shift what
        follows into its place, instead of letting llama.cpp re-read everything after it.
        Returns the number of tokens kept this way (0: nothing to do).

        As with llama.cpp's own context shift, the kept tokens' cache entries were computed with
        the forgotten ones in view, so the reply may differ from a cold evaluation of the same
        prompt; the gain is the turn after memory is trimmed: 234 ms to the first token
        instead of 1.2-1.6 s on this project's 2-core machine (bench item 18)."""
        llm = self._llm
        cached = llm.input_ids[: llm.n_tokens].tolist()
        start = 0
        for a, b in zip(cached, context, strict=False):
            if a != b:
                break
            start += 1
        probe = context[start : start + SHIFT_PROBE_TOKENS]
        if start == 0 or len(probe) < SHIFT_PROBE_TOKENS:
            return 0
        for end in range(start + 1, len(cached) - len(probe) + 1):
            if cached[end : end + len(probe)] == probe:
                break
        else:
            return 0
        kept = 0
        while end + kept < len(cached) and start + kept < len(context):
            if cached[end + kept] != context[start + kept]:
                break
            kept += 1
        if end + kept < len(cached):
            return 0  # not the kept history up to the last reply (e.g. a question asked again)
        ctx = llm._ctx
        ctx.kv_cache_seq_rm(0, end + kept, -1)
        if not ctx.kv_cache_seq_rm(0, start, end):
            llm.n_tokens = start  # the cache cannot drop a span: llama.cpp re-reads from here
            return 0
        ctx.kv_cache_seq_shift(0, end, end + kept, start - end)
        llm.input_ids[start : start + kept] = context[start : start + kept]
        llm.n_tokens = start + kept
        _LOGGER.info("llm: %d forgotten tokens dropped from the cache, %d kept", end - start, kept)
        return kept

    def timed_first_token(self, messages: list[ChatMessage]) -> float:
        """Seconds from the call to the first generated piece (a measurement helper)."""
        start = time.perf_counter()
        first: list[float] = []
        done = threading.Event()

        def on_token(_: str) -> None:
            if not first:
                first.append(time.perf_counter() - start)
                done.set()

        self.chat(messages, on_token, done)
        return first[0] if first else float("nan")
