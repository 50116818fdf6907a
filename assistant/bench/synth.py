"""Speaking the corpus: espeak-ng and the piper voice, at a rate, with an optional pause inside.

A take is 16 kHz float. espeak-ng speaks a paused utterance in one go, the pause as an SSML
``<break>`` (its prosody runs on across it, as a person's does); piper has no SSML, so its two
parts are spoken apart and joined by exactly that much silence. Either way the corpus measures
the pause from the samples afterwards. Heavy imports are lazy.
"""

from __future__ import annotations

import html
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from assistant.bench.design import Voice
from assistant.errors import AudioError
from assistant.messages import SAMPLE_RATE

Take = npt.NDArray[np.float32]
TakeKey = tuple[tuple[str, ...], str, float, float | None]
"""(the utterance's parts, voice name, rate factor, pause ms or None)."""


def espeak(
    parts: Sequence[str], voice: Voice, tmp: Path, rate: float = 1.0, pause_ms: float | None = None
) -> Take:
    """``parts`` spoken by espeak-ng in ``voice`` at ``rate`` times its speed; between two parts, a
    ``pause_ms`` break."""
    from assistant.audio.convert import pcm16_to_float, read_audio_file

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise AudioError("corpus: espeak-ng is not installed (apt-get install espeak-ng)")
    out = tmp / "take.wav"
    speed = round(voice.speed * rate)
    cmd = [exe, "-v", voice.espeak_voice, "-s", str(speed), "-p", str(voice.pitch), "-w", str(out)]
    if len(parts) > 1:
        brk = f' <break time="{round(pause_ms or 0)}ms"/> '
        cmd += ["-m", "<speak>" + brk.join(html.escape(p) for p in parts) + "</speak>"]
    else:
        cmd.append(parts[0])
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    except (subprocess.SubprocessError, OSError) as err:
        raise AudioError(f"corpus: espeak-ng failed for voice {voice.espeak_voice}: {err}") from err
    return pcm16_to_float(read_audio_file(out))


def _trimmed(take: Take, threshold: float = 0.02) -> Take:
    """The take from its first to its last sample above ``threshold`` of its peak."""
    peak = float(np.max(np.abs(take))) if take.size else 0.0
    loud = np.flatnonzero(np.abs(take) > threshold * peak)
    return take[int(loud[0]) : int(loud[-1]) + 1] if loud.size else take


def piper_take(engine: Any, parts: Sequence[str], pause_ms: float | None) -> Take:
    """``parts`` spoken by a loaded ``PiperEngine``, each trimmed, joined by ``pause_ms`` of silence."""
    from assistant.audio.convert import pcm16_to_float, resample

    takes = [resample(pcm16_to_float(engine.synthesize_all(p)), engine.sample_rate) for p in parts]
    if len(takes) == 1:
        return takes[0]
    gap = np.zeros(round((pause_ms or 0) * SAMPLE_RATE / 1000), np.float32)
    joined: list[Take] = []
    for i, take in enumerate(takes):
        joined += [gap] if i else []
        joined.append(_trimmed(take))
    return np.concatenate(joined).astype(np.float32)


def synthesize(
    model_dir: Path, keys: Iterable[TakeKey], voices: Sequence[Voice], tts_voice: str
) -> dict[TakeKey, Take]:
    """Every take asked for, once; the piper voice ``tts_voice`` is loaded only if a key needs it."""
    by_name = {v.name: v for v in voices}
    wanted = sorted(set(keys), key=repr)
    unknown = [k[1] for k in wanted if k[1] not in by_name]
    if unknown:
        raise AudioError(f"corpus: unknown voice {unknown[0]!r}")
    takes: dict[TakeKey, Take] = {}
    piper_keys = [k for k in wanted if by_name[k[1]].engine == "piper"]
    if piper_keys:
        from assistant import models
        from assistant.config import TtsConfig
        from assistant.engines.piper import PiperEngine

        config = TtsConfig(voice=tts_voice)
        engine = PiperEngine(models.resolve(tts_voice, "tts", model_dir), config)
        for rate in sorted({k[2] for k in piper_keys}):
            engine.reconfigure(replace(config, length_scale=round(1.0 / rate, 3)))
            for key in (k for k in piper_keys if k[2] == rate):
                takes[key] = piper_take(engine, key[0], key[3])
    with tempfile.TemporaryDirectory(prefix="corpus-") as tmp:
        for key in wanted:
            voice = by_name[key[1]]
            if voice.engine == "espeak":
                takes[key] = espeak(key[0], voice, Path(tmp), key[2], key[3])
            elif voice.engine != "piper":
                raise AudioError(f"corpus: voice {voice.name}: unknown engine {voice.engine!r}")
    return takes
