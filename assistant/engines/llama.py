"""llama-cpp-python adapter: chat completion streamed token by token, stoppable mid-stream.

The chat template comes from the GGUF's ``tokenizer.chat_template`` (llama-cpp-python picks it
up). The completion generator is consumed in the calling worker thread; a llama.cpp context is
not thread-safe, so one lock guards it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import LlmConfig
from ..errors import ModelCorruptError, ModelMissingError, StageError

ChatMessage = dict[str, str]


class LlamaEngine:
    """A loaded GGUF model."""

    def __init__(self, gguf_path: Path, config: LlmConfig) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as err:
            raise ModelMissingError(
                "llama-cpp-python is not installed: pip install llama-cpp-python"
            ) from err
        self.config = config
        self._lock = threading.Lock()
        try:
            self._llm: Any = Llama(
                model_path=str(gguf_path),
                n_ctx=config.n_ctx,
                n_threads=config.n_threads or None,
                seed=config.seed,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as err:
            raise ModelCorruptError(f"{gguf_path}: llama.cpp cannot load this model: {err}") from err

    def chat(
        self,
        messages: list[ChatMessage],
        on_token: Callable[[str], None],
        stop: threading.Event | None = None,
    ) -> str:
        """Generate a reply, calling ``on_token`` per piece; returns the finish reason; blocks."""
        finish = "stop"
        try:
            with self._lock:
                stream = self._llm.create_chat_completion(
                    messages=messages,
                    stream=True,
                    max_tokens=self.config.max_tokens,
                    temperature=self.config.temperature,
                    top_p=self.config.top_p,
                    seed=self.config.seed,
                )
                try:
                    for chunk in stream:
                        if stop is not None and stop.is_set():
                            finish = "cancelled"
                            break
                        choice = chunk["choices"][0]
                        piece = choice["delta"].get("content")
                        if piece:
                            on_token(piece)
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                finally:
                    stream.close()
        except (ValueError, RuntimeError) as err:
            raise StageError("llm", f"generation failed: {err}") from err
        return finish
