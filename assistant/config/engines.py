"""The engines' sections: speech recognition (``[asr]``), the language model (``[llm]``), how its
text is cut (``[chunker]``) and speech synthesis (``[tts]``)."""

from __future__ import annotations

from dataclasses import dataclass

from assistant.config.checks import _check_choice, _check_range, tcp_address
from assistant.errors import ConfigError


@dataclass(frozen=True)
class AsrConfig:
    """Speech recognition (faster-whisper)."""

    model: str = "whisper-tiny.en"
    """A model name from the manifest, or a path to a CTranslate2 Whisper directory."""
    language: str = "en"
    compute_type: str = "int8"
    beam_size: int = 1
    cpu_threads: int = 0
    """0 lets CTranslate2 decide."""
    no_speech_threshold: float = 0.6
    """Segments whose no-speech probability is above this are dropped."""
    min_avg_logprob: float = -1.0
    """Segments less confident than this are dropped when also likely no speech."""
    window: str = "short"
    """``short``: encode only the utterance plus ``window_margin_ms`` (falling back to the full window
    when the result looks wrong); ``full``: Whisper's 30 s window, as faster-whisper does it."""
    window_margin_ms: int = 500
    """Padding after the utterance in the short window, in ms."""
    second_window_ms: int = 6000
    """The second pass, when the short window's result is rejected: a window at least this long
    (the utterance and its margin where longer), decoded once; off the live path a result still
    rejected then goes to the full window with faster-whisper's temperature fallback. 30000:
    straight to the full window. On the bench's 183 items (61 utterances x 3 takes, 24 of them
    rejected): WER 21.1 % with 6 s, 21.5 % with 10 s, 21.6 % with the full window, and 6 s
    decodes in about 100 ms against 560 for the full window, with a fifth of its memory."""
    max_tokens_per_s: float = 5.0
    """Decode bound: at most this many tokens per second of audio, plus ``max_tokens_extra``."""
    max_tokens_extra: int = 10
    """Tokens allowed on top of the per-second bound (short utterances, numbers)."""
    fallback_logprob: float = -1.0
    """A short-window result less confident than this (mean log-probability per token) is redone
    on the full window."""
    short_no_speech_gate: float = 0.85
    """In the short window, text whose no-speech probability is above this is dropped, however
    confident (on silence the short window says "Thank you" at ~0.97; speech stays below ~0.7)."""
    engine: str = "whisper"
    """``whisper``: faster-whisper in this process; ``wyoming``: a Wyoming ASR server at ``asr.url``
    (wyoming-faster-whisper, or another assistant), which then needs no local model."""
    url: str = "tcp://127.0.0.1:10300"
    """The Wyoming server of ``asr.engine = "wyoming"``: ``tcp://HOST:PORT``."""
    during_speech: bool = True
    """On live input, transcribe the utterance while it is spoken (in the background, never in the
    way), so that at the pause the transcript is ready, or only what follows the words two passes
    agreed on is left to decode (the in-process engine, on the short window)."""
    during_speech_every_ms: int = 500
    """Speech between two of those passes, in ms (one more runs where a silence starts)."""

    def __post_init__(self) -> None:
        _check_choice("asr.engine", self.engine, ("whisper", "wyoming"))
        if self.engine == "wyoming":
            tcp_address("asr.url", self.url)
        _check_choice("asr.compute_type", self.compute_type, ("int8", "int8_float32", "float32", "default"))
        _check_range("asr.beam_size", self.beam_size, 1, 10)
        _check_range("asr.cpu_threads", self.cpu_threads, 0, 64)
        _check_range("asr.no_speech_threshold", self.no_speech_threshold, 0.0, 1.0)
        _check_range("asr.min_avg_logprob", self.min_avg_logprob, -10.0, 0.0)
        _check_choice("asr.window", self.window, ("short", "full"))
        _check_range("asr.window_margin_ms", self.window_margin_ms, 0, 5000)
        _check_range("asr.second_window_ms", self.second_window_ms, 1000, 30_000)
        _check_range("asr.max_tokens_per_s", self.max_tokens_per_s, 1.0, 20.0)
        _check_range("asr.max_tokens_extra", self.max_tokens_extra, 0, 200)
        _check_range("asr.fallback_logprob", self.fallback_logprob, -10.0, 0.0)
        _check_range("asr.short_no_speech_gate", self.short_no_speech_gate, 0.0, 1.0)
        _check_range("asr.during_speech_every_ms", self.during_speech_every_ms, 100, 10_000)


DEFAULT_HISTORY_TOKENS = 1024
"""Conversation memory, in tokens, where ``llm.history_tokens`` is -1 and the model says nothing."""
KV_CACHE_TYPES = ("q8_0", "f16", "q4_0")
"""``llm.kv_cache``'s choices (ggml's number types for the KV cache)."""


@dataclass(frozen=True)
class LlmConfig:
    """Language model (llama-cpp-python, chat template from the GGUF)."""

    model: str = "smollm2-135m-instruct"
    """A model name from the manifest, or a path to a GGUF file."""
    system_prompt: str = "You are a helpful voice assistant. Answer in one or two short, plain sentences."
    max_tokens: int = 96
    temperature: float = 0.0
    top_p: float = 0.95
    n_ctx: int = 2048
    n_threads: int = 0
    """Threads generating tokens one by one; 0 uses every core the process may use, up to four
    (llama-cpp-python's own default is half the cores: on two cores, one thread decoded the
    default model at 48-56 tokens/s, two at 90). Where another program keeps a core busy, fewer
    are faster (two cores, one busy: 23-24 ms a token on one thread, 41-45 on two)."""
    n_threads_batch: int = 0
    """Threads evaluating the prompt (a batch); 0 uses every core."""
    kv_cache: str = "q8_0"
    """The KV cache's number type (llama engine): ``q8_0`` (about half the memory of ``f16``: 12.5 MB
    instead of 23.6 for the default model at ``n_ctx`` 1,024; needs llama.cpp's flash attention,
    which it turns on), ``f16`` (llama.cpp's default) or ``q4_0`` (a quarter)."""
    yield_to_tts: bool = True
    """Wait between tokens while a chunk is being synthesized (in-process engine): the chunk is
    what the listener waits for, and the LLM writes faster than the reply is spoken."""
    seed: int = 0
    engine: str = "llama"
    """``llama``: in-process llama-cpp-python; ``openai``: an OpenAI-compatible server at ``llm.url``."""
    url: str = "http://127.0.0.1:8080/v1"
    """Base URL of the OpenAI-compatible server (``llm.engine = "openai"``), up to and with ``/v1``."""
    api_key: str = ""
    """Bearer token for the server; empty sends none."""
    remote_model: str = ""
    """Model name sent to the server; empty sends ``llm.model``."""
    request_timeout_s: float = 30.0
    """Seconds to wait for the server to connect and for each streamed piece."""
    reasoning: str = "hidden"
    """Reasoning models (``<think>...</think>``): ``hidden`` thinks but never speaks it;
    ``skip`` prefills an empty think block so the model answers at once; ``budget`` thinks up to
    ``think_budget_tokens``/``think_budget_ms``, then closes the block (action ``thinking_cut``).
    Models without think tokens ignore this."""
    think_budget_tokens: int = 256
    """``budget`` mode: reasoning tokens before the think block is closed."""
    think_budget_ms: int = 0
    """``budget`` mode: reasoning time, in ms from the start of generation, before the block is
    closed; 0 = no time limit."""
    history_tokens: int = -1
    """Tokens of earlier turns kept as conversation memory (oldest dropped first); 0 = none;
    -1 = what the model's manifest entry says (none for the default SmolLM2-135M, which copies
    its earlier answers), else ``DEFAULT_HISTORY_TOKENS``."""
    session_idle_s: float = 300.0
    """Seconds without a turn after which the conversation starts afresh."""
    warm: bool = True
    """Evaluate the system prompt at start-up and keep its KV state on disk (llama engine)."""
    state_cache: str = ""
    """Folder for saved KV states; empty means ``state`` beside the model cache
    (``~/.cache/assistant/state``)."""

    def __post_init__(self) -> None:
        _check_range("llm.max_tokens", self.max_tokens, 1, 8192)
        _check_range("llm.temperature", self.temperature, 0.0, 2.0)
        _check_range("llm.top_p", self.top_p, 0.0, 1.0)
        _check_range("llm.n_ctx", self.n_ctx, 128, 131_072)
        _check_range("llm.n_threads", self.n_threads, 0, 256)
        _check_range("llm.n_threads_batch", self.n_threads_batch, 0, 256)
        _check_choice("llm.kv_cache", self.kv_cache, KV_CACHE_TYPES)
        if not self.system_prompt.strip():
            raise ConfigError("llm.system_prompt is empty: give the assistant a short instruction")
        _check_choice("llm.engine", self.engine, ("llama", "openai"))
        if self.engine == "openai" and not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"llm.url = {self.url!r} is not allowed: give an http:// or https:// URL")
        _check_range("llm.request_timeout_s", self.request_timeout_s, 0.1, 3600.0)
        _check_choice("llm.reasoning", self.reasoning, ("hidden", "skip", "budget"))
        _check_range("llm.think_budget_tokens", self.think_budget_tokens, 1, 32_768)
        _check_range("llm.think_budget_ms", self.think_budget_ms, 0, 600_000)
        if self.reasoning == "budget" and self.think_budget_tokens >= self.max_tokens:
            raise ConfigError(
                f"llm.think_budget_tokens = {self.think_budget_tokens} is out of range: in budget mode"
                f" it must be below llm.max_tokens = {self.max_tokens}, to leave room for the answer"
            )
        _check_range("llm.history_tokens", self.history_tokens, -1, 131_072)
        _check_range("llm.session_idle_s", self.session_idle_s, 0.0, 604_800.0)


@dataclass(frozen=True)
class ChunkerConfig:
    """How LLM text is cut into pieces for TTS."""

    first_min_chars: int = 12
    """The first chunk may end at a clause break once it is this long."""
    first_break_words: int = 2
    """The first chunk may end before a word that opens a clause or phrase (``that``, ``in``,
    ``because``...) once it has this many words; 0 = only at punctuation."""
    min_chars: int = 40
    """Later chunks end at a clause break (comma, colon) only once this long; sentences always end a chunk."""
    max_chars: int = 220
    """A chunk longer than this is cut at the last space."""

    def __post_init__(self) -> None:
        _check_range("chunker.first_min_chars", self.first_min_chars, 1, 500)
        _check_range("chunker.min_chars", self.min_chars, 1, 1000)
        _check_range("chunker.first_break_words", self.first_break_words, 0, 100)
        _check_range("chunker.max_chars", self.max_chars, max(self.min_chars, self.first_min_chars), 2000)


@dataclass(frozen=True)
class TtsConfig:
    """Speech synthesis (piper)."""

    voice: str = "piper-en_US-joe-medium"
    """A voice name from the manifest, or a path to a piper ``.onnx`` file (``.onnx.json`` beside it)."""
    speaker_id: int | None = None
    length_scale: float = 1.0
    """Above 1 speaks slower, below 1 faster."""
    threads: int = 0
    """ONNX threads for synthesis; 0 uses every core (the in-process LLM waits meanwhile, see
    ``llm.yield_to_tts``)."""
    memory_arena: bool = False
    """onnxruntime's CPU memory pool for the voice: synthesis about 20 % faster, but the pool grows
    with every new sentence shape and never shrinks (about 400 MB more after a few hundred
    sentences, 150 MB of it after warm-up in a 1,000-turn soak). Off keeps a long-running daemon's
    memory flat; on suits a short run on a machine with memory to spare."""
    piece_chars: int = 90
    """The voice synthesizes at most about this many characters at once: longer text is cut at a
    clause break (``, ; :``), else at a space. Synthesis holds memory in proportion to the audio
    it makes at once (about 2 MB per character here: a 160-character sentence took 310 MB for the
    moment it was spoken), and a shorter first piece is heard sooner. 0: whole sentences."""
    engine: str = "piper"
    """``piper``: the voice in this process; ``wyoming``: a Wyoming TTS server at ``tts.url``
    (wyoming-piper, or another assistant), which then needs no local voice."""
    url: str = "tcp://127.0.0.1:10200"
    """The Wyoming server of ``tts.engine = "wyoming"``: ``tcp://HOST:PORT``."""
    remote_voice: str = ""
    """Voice name asked of the Wyoming server; empty: the server's default voice."""

    def __post_init__(self) -> None:
        _check_range("tts.length_scale", self.length_scale, 0.3, 3.0)
        _check_range("tts.threads", self.threads, 0, 64)
        if self.piece_chars:
            _check_range("tts.piece_chars", self.piece_chars, 20, 2000)
        _check_choice("tts.engine", self.engine, ("piper", "wyoming"))
        if self.engine == "wyoming":
            tcp_address("tts.url", self.url)
