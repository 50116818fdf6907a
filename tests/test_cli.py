"""The command line as a user meets it: real processes, real models, exit codes and messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import read_wav

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "what-is-the-capital-of-france.wav"


def assistant(
    *args: str, stdin: bytes | None = None, model_dir: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    prefix = ["--model-dir", str(model_dir)] if model_dir else []
    return subprocess.run(
        [sys.executable, "-m", "assistant", *prefix, *args],
        input=stdin,
        capture_output=True,
        timeout=180,
        cwd=REPO,
    )


def test_ask_streams_the_reply(model_dir: Path) -> None:
    proc = assistant("ask", "What is the capital of France?", model_dir=model_dir)
    assert proc.returncode == 0, proc.stderr
    assert "paris" in proc.stdout.decode().lower()


def test_ask_too_long_is_a_coded_error(model_dir: Path) -> None:
    proc = assistant("ask", "word " * 12_000, model_dir=model_dir)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "error [too_long]" in err, err


def test_say_then_transcribe_round_trip(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "say.wav"
    proc = assistant("say", "Turn on the kitchen lights.", "--output", str(out), model_dir=model_dir)
    assert proc.returncode == 0, proc.stderr
    samples, rate = read_wav(out)
    assert rate == 22_050 and len(samples) > rate
    heard = assistant("transcribe", str(out), model_dir=model_dir)
    assert heard.returncode == 0, heard.stderr
    assert "kitchen" in heard.stdout.decode().lower()


def test_raw_pcm_in_and_out(model_dir: Path) -> None:
    from assistant.audio.convert import read_audio_file

    pcm = read_audio_file(EXAMPLE)
    proc = assistant("run", "--fast", "--input", "-", "--output", "-", stdin=pcm, model_dir=model_dir)
    assert proc.returncode == 0, proc.stderr
    reply = np.frombuffer(proc.stdout, dtype="<i2")
    assert len(reply) > 22_050 // 2 and np.abs(reply).max() > 1000


def _pipeline_with(tmp_path: Path, section: str, key: str, value: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(f'[{section}]\n{key} = "{value}"\n')
    return path


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"<!DOCTYPE html><html><body>Not found</body></html>\n", "GGUF"),
        (None, "truncated"),
    ],
)
def test_corrupt_llm_is_reported_before_any_audio(
    model_dir: Path, tmp_path: Path, content: bytes | None, needle: str
) -> None:
    bad = tmp_path / "model.gguf"
    if content is None:  # the first half of the real model
        real = next((model_dir / "smollm2-135m-instruct").glob("*.gguf")).read_bytes()
        content = real[: len(real) // 2]
    bad.write_bytes(content)
    pipeline = _pipeline_with(tmp_path, "llm", "model", str(bad))
    # the input does not exist: the model error must come first
    proc = assistant(
        "--pipeline", str(pipeline), "run", "--input", str(tmp_path / "none.wav"), model_dir=model_dir
    )
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert "error [model_corrupt]" in err and str(bad) in err and needle in err, err


def test_missing_model_names_the_pull_command(tmp_path: Path) -> None:
    proc = assistant("run", "--input", str(EXAMPLE), model_dir=tmp_path / "empty")
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert "error [model_missing]" in err and "assistant models pull whisper-tiny.en" in err, err


def test_missing_voice_json_is_named(model_dir: Path, tmp_path: Path) -> None:
    onnx = tmp_path / "voice.onnx"
    onnx.write_bytes(b"\x08\x01")
    proc = assistant(
        "--pipeline",
        str(_pipeline_with(tmp_path, "tts", "voice", str(onnx))),
        "say",
        "hi",
        "--output",
        str(tmp_path / "o.wav"),
        model_dir=model_dir,
    )
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "error [model_missing]" in err and "voice.onnx.json" in err, err


def test_bad_config_and_bad_audio_are_coded_errors(model_dir: Path, tmp_path: Path) -> None:
    proc = assistant(
        "--pipeline",
        str(_pipeline_with(tmp_path, "asr", "compute_type", "fp4")),
        "transcribe",
        str(EXAMPLE),
        model_dir=model_dir,
    )
    assert proc.returncode == 2 and "error [config_invalid]" in proc.stderr.decode()
    assert "asr.compute_type" in proc.stderr.decode()
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    proc = assistant("run", "--input", str(text), model_dir=model_dir)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "error [audio_invalid]" in err and str(text) in err, err


def test_bench_plot_without_matplotlib_fails_before_the_run(tmp_path: Path) -> None:
    # no models in the model dir: a bench that ran first would fail on those instead
    code = (
        "import sys; sys.modules['matplotlib'] = None; from assistant.cli import main;"
        f" sys.exit(main(['--model-dir', {str(tmp_path)!r}, 'bench', '--plot', 'x.png']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, cwd=tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "error [config_invalid]: --plot needs matplotlib" in err, err
