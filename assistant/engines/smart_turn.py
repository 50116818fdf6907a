"""Smart Turn v3.2 adapter: is the speaker's turn complete, judged from the audio (onnxruntime).

The model (BSD-2-Clause, from the ``pipecat-ai`` wheel: manifest entry ``smart-turn-v3.2``) is a
Whisper-tiny-sized encoder with a classifier head. It is run as Pipecat runs it
(``pipecat/audio/turn/smart_turn/local_smart_turn_v3.py``):

- the utterance so far, 16 kHz mono, as float in [-1, 1); its last 8 s, or all of it zero-padded
  *at the front* to 8 s (the end of speech always sits at the end of the window);
- the waveform normalised to zero mean and unit variance (``do_normalize``, as transformers'
  ``WhisperFeatureExtractor`` does), then Whisper's log-mel features: 80 mel bands, 25 ms windows
  every 10 ms, 800 frames. faster-whisper's ``FeatureExtractor`` computes exactly these (the same
  Slaney mel filters, periodic Hann window, reflect padding, last frame dropped, 8 dB floor and
  scaling); it is given no trailing padding, so its frames are transformers' frames;
- the output, ``input_features`` -> one sigmoid probability that the turn is complete; Pipecat
  calls it complete above 0.5.

The session is made for a small footprint: one intra-op thread, sequential execution, no CPU
memory arena (the arena keeps the largest activation ever allocated for the life of the process).
It is created on the first call (or by ``load``), in the caller's thread; calls are serialised by
a lock. onnxruntime and faster-whisper are imported lazily: without them ``TurnModelUnavailable``
says what is missing, and the endpointer goes on without the model.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from assistant.contracts import TurnDetector
from assistant.errors import ModelCorruptError, StageError
from assistant.messages import SAMPLE_RATE

WINDOW_S = 8
"""Seconds of audio the model sees: the last 8 s of the utterance, or all of it padded."""
NORM_EPS = 1e-7
"""Added to the variance when normalising the waveform (transformers' value)."""


class TurnModelUnavailable(Exception):
    """onnxruntime or faster-whisper's feature extractor cannot be imported here."""


def features_window(pcm: bytes) -> np.ndarray:
    """The model's waveform: the last ``WINDOW_S`` of 16 kHz int16 ``pcm`` as float32, zero-padded
    at the front to exactly ``WINDOW_S`` seconds, normalised to zero mean and unit variance."""
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float32) / 32768.0
    size = WINDOW_S * SAMPLE_RATE
    if samples.size >= size:
        samples = samples[-size:]
    else:
        samples = np.concatenate([np.zeros(size - samples.size, np.float32), samples])
    normed: np.ndarray = (samples - samples.mean()) / np.sqrt(samples.var() + NORM_EPS)
    return normed.astype(np.float32)


class SmartTurnEngine(TurnDetector):
    """One Smart Turn ONNX model: ``complete_probability(pcm)``, synchronous."""

    def __init__(self, path: Path, *, threads: int = 1) -> None:
        """``path``: the ``.onnx`` file; ``threads``: onnxruntime's intra-op threads (1 or 2).
        Raises ``TurnModelUnavailable`` when onnxruntime or faster-whisper is not installed."""
        try:
            import onnxruntime
            from faster_whisper.feature_extractor import FeatureExtractor
        except ImportError as err:
            raise TurnModelUnavailable(f"{err.name or err} is not installed") from err
        self.path = Path(path)
        self.threads = threads
        self._ort: Any = onnxruntime
        self._features: Any = FeatureExtractor(feature_size=80, chunk_length=WINDOW_S)
        self._session: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Create the session now (otherwise the first call does). ``ModelCorruptError`` when
        onnxruntime cannot read the file."""
        with self._lock:
            self._load()

    def _load(self) -> Any:
        if self._session is not None:
            return self._session
        ort = self._ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own Fail/InvalidProtobuf/NoSuchFile
            raise ModelCorruptError(f"{self.path}: onnxruntime cannot load it: {err}") from err
        return self._session

    def complete_probability(self, pcm: bytes) -> float:
        """The probability (0 to 1) that the turn in ``pcm`` (16 kHz mono int16, the utterance so
        far, its end at the end) is complete."""
        waveform = features_window(pcm)
        features = self._features(waveform, padding=0)[np.newaxis].astype(np.float32)
        with self._lock:
            session = self._load()
            try:
                outputs = session.run(None, {"input_features": features})
            except Exception as err:  # an onnxruntime error at run time
                raise StageError("vad", f"the turn model failed: {err}") from err
        return float(np.asarray(outputs[0]).reshape(-1)[0])
