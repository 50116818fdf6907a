"""The command line's arguments (argparse): every command and its options."""

from __future__ import annotations

import argparse

from assistant import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistant", description="An offline voice assistant.")
    parser.add_argument("--version", action="version", version=f"assistant {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log lines (-vv for debug)")
    parser.add_argument("--pipeline", default="default", help="name (assistant pipelines) or .toml path")
    parser.add_argument(
        "--model-dir", help="model cache (default: $ASSISTANT_MODEL_DIR or ~/.cache/assistant/models)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="listen and answer: audio in, spoken answers out")
    run.add_argument(
        "--input",
        help="mic (PulseAudio default source), pulse:NAME, portaudio[:NAME|INDEX], a WAV (any rate and"
        " channels), or - for raw s16le PCM on stdin",
    )
    run.add_argument("--input-rate", type=int, default=16_000, help="sample rate of raw stdin PCM (Hz)")
    run.add_argument("--input-channels", type=int, default=1, help="channels of raw stdin PCM")
    run.add_argument(
        "--output",
        help="speaker (PulseAudio default sink), pulse:NAME, portaudio[:NAME|INDEX], a WAV file, or -"
        " for raw s16le PCM on stdout",
    )
    run.add_argument("--report", help="JSON lines, one per turn (- for stderr)")
    run.add_argument("--fast", action="store_true", help="feed input as fast as the pipeline takes it")
    run.add_argument(
        "--push-to-talk",
        action="store_true",
        help="listen only when asked (listen.mode = push): MQTT listen, or Space/Enter in a terminal",
    )
    run.add_argument(
        "--wake",
        metavar="MODEL",
        help="answer only after this wake word (listen.mode = wake, wake_engine = micro): okay_nabu,"
        " hey_jarvis, hey_mycroft, alexa, or a microWakeWord model's .json",
    )
    run.add_argument(
        "--mqtt", metavar="URL", help="MQTT broker: mqtt://[user:pass@]host[:port] or mqtts://..."
    )
    run.add_argument(
        "--wyoming",
        metavar="URL",
        help="serve Wyoming (Home Assistant: ASR, TTS, satellite) on tcp://HOST:PORT, e.g. tcp://0.0.0.0:10700",
    )

    ask = sub.add_parser("ask", help="answer a typed question; the reply streams to stdout")
    ask.add_argument("text")
    ask.add_argument("--output", help="also speak the reply into this WAV (- for raw PCM on stdout)")

    say = sub.add_parser("say", help="speak text into a WAV file")
    say.add_argument("text")
    say.add_argument("--output", required=True, help="WAV file, or - for raw s16le PCM on stdout")

    tr = sub.add_parser("transcribe", help="print what is said in an audio file")
    tr.add_argument("file")

    sub.add_parser("devices", help="list the audio devices (PortAudio and PulseAudio)")
    sub.add_parser("pipelines", help="list the pipelines: the user's and the shipped ones")

    bench = sub.add_parser("bench", help="latency of the pipeline against a sequential baseline, same run")
    bench.add_argument("--all", action="store_true", help="every voice and noise variant (slow)")
    bench.add_argument("--limit", type=int, help="only the first N items")
    bench.add_argument("--gap-ms", type=float, default=4000.0, help="silence between questions")
    bench.add_argument("--json", help="write the full results here")
    bench.add_argument("--plot", help="draw the latency distributions into this PNG")
    bench.add_argument(
        "--soak", type=int, metavar="N", help="instead: N turns in one process (spoken, asked, cancelled,"
        " barge-ins): RSS, fds, threads, tasks after warm-up and at the end; exit 1 if one grew or failed",
    )  # fmt: skip
    bench.add_argument("--mqtt", metavar="URL", help="--soak: ask and cancel over this broker (mqtt://...)")
    bench.add_argument(
        "--write-stream", metavar="WAV", help="instead: write the bench's input (its items, order and gaps)"
        " as a WAV, e.g. for assistant run --input WAV",
    )  # fmt: skip
    bench.add_argument(
        "--wake", action="store_true", dest="wake_bench", help="instead: the wake word model's misses,"
        " false wakes per hour and CPU against always-on listening (--limit N: N questions per voice)",
    )  # fmt: skip
    bench.add_argument(
        "--echo", action="store_true", dest="echo_bench", help="instead: WebRTC audio processing: echo"
        " return loss enhancement, a question over the reply, WER with and without noise suppression"
        " at two SNRs, CPU per hour (--limit N: N questions per voice)",
    )  # fmt: skip

    doctor = sub.add_parser(
        "doctor",
        help="check models, microphone, speaker, folders and the MQTT broker; say what to fix (exit 1"
        " on a failure; with --strict, on a warning too)",
    )
    doctor.add_argument(
        "--input",
        help="as for run (default: mic and --output speaker, as the service files; none with MQTT on)",
    )
    doctor.add_argument("--output", help="as for run")
    doctor.add_argument("--report", help="as for run: its folder must be writable")
    doctor.add_argument("--mqtt", metavar="URL", help="as for run: check this broker instead of the config's")
    doctor.add_argument(
        "--config", action="store_true", help="also list every setting and where it came from"
    )
    doctor.add_argument("--json", action="store_true", help="findings and settings as JSON")
    doctor.add_argument("--strict", action="store_true", help="exit 1 on a warning too")

    mod = sub.add_parser("models", help="list, pull, verify or remove models")
    mod.add_argument("models_command", choices=["list", "pull", "verify", "rm"])
    mod.add_argument("names", nargs="*", help="model names (pull: default models when none given)")
    return parser
