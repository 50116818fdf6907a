"""The service helpers against a real notify socket and real signals.

A datagram socket bound by the test (a path in tmp_path, or an abstract ``@`` name) plays
systemd's ``NOTIFY_SOCKET``; a small script built on ``ServiceSignals`` gets a real SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from assistant.clock import StreamClock
from assistant.config import Config, DeviceConfig
from assistant.errors import ConfigError
from assistant.service.lifecycle import (
    ConfigReloader,
    ServiceNotifier,
    ServiceSignals,
    reload_config,
    sd_notify,
)

ROOT = Path(__file__).resolve().parent.parent
HALF_S = 0.1
"""Half the watchdog interval used below (WATCHDOG_USEC = 200 ms)."""


def _drain(sock: socket.socket) -> list[str]:
    got = []
    while True:
        try:
            got.append(sock.recv(4096).decode())
        except BlockingIOError:
            return got


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """(NOTIFY_SOCKET value, the bound receiving socket)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        name = str(tmp_path / "notify")
        sock.bind(name)
    else:
        name = "@assistant-test-" + uuid.uuid4().hex
        sock.bind("\0" + name[1:])
    sock.setblocking(False)
    try:
        yield name, sock
    finally:
        sock.close()


def _env(name: str, **extra: str) -> dict[str, str]:
    return {"NOTIFY_SOCKET": name, **extra}


async def test_ready_only_after_models_load(notify_socket: tuple[str, socket.socket]) -> None:
    name, sock = notify_socket
    notifier = ServiceNotifier(_env(name))
    loaded = asyncio.Event()

    async def load_models() -> None:
        await asyncio.sleep(0.05)
        loaded.set()

    loading = asyncio.create_task(load_models())
    await asyncio.sleep(0.01)
    assert _drain(sock) == []
    await loading
    assert notifier.ready()
    await asyncio.sleep(0)
    assert _drain(sock) == ["READY=1"]


def test_sd_notify_reads_env_and_sends_one_datagram(
    notify_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, sock = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    assert sd_notify("STATUS=listening\nREADY=1")
    assert _drain(sock) == ["STATUS=listening\nREADY=1"]


async def test_no_op_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sd_notify("READY=1")
    notifier = ServiceNotifier({"WATCHDOG_USEC": "200000"})
    assert not notifier.enabled and not notifier.ready() and not notifier.status("x")
    assert notifier.watchdog_interval_s is None
    await asyncio.wait_for(notifier.watchdog(StreamClock(realtime=True)), 1)  # returns at once


def test_unreachable_socket_is_logged_not_raised(tmp_path: Path) -> None:
    assert not sd_notify("READY=1", socket_path=str(tmp_path / "nobody-listens"))
    assert not sd_notify("READY=1", socket_path="relative/path")


def test_watchdog_pid_of_another_process_disables_pings(notify_socket: tuple[str, socket.socket]) -> None:
    name, _ = notify_socket
    other = ServiceNotifier(_env(name, WATCHDOG_USEC="200000", WATCHDOG_PID=str(os.getpid() + 1)))
    assert other.watchdog_interval_s is None
    mine = ServiceNotifier(_env(name, WATCHDOG_USEC="200000", WATCHDOG_PID=str(os.getpid())))
    assert mine.watchdog_interval_s == pytest.approx(HALF_S)


async def test_watchdog_pings_only_while_the_pipeline_moves(notify_socket: tuple[str, socket.socket]) -> None:
    name, sock = notify_socket
    notifier = ServiceNotifier(_env(name, WATCHDOG_USEC="200000"))
    clock = StreamClock(realtime=True)

    async def source() -> None:
        while True:
            await asyncio.sleep(0.02)
            clock.fed(0.0)

    feeding = asyncio.create_task(source())
    dog = asyncio.create_task(notifier.watchdog(clock))
    try:
        await asyncio.sleep(8 * HALF_S)
        moving = _drain(sock)
        assert moving and set(moving) == {"WATCHDOG=1"}
        assert 3 <= len(moving) <= 9

        # The source stalls: at most the ping already due, then silence from the first stalled
        # half-interval on.
        feeding.cancel()
        stalls = notifier.stalls
        while notifier.stalls == stalls:
            await asyncio.sleep(0.01)
        assert len(_drain(sock)) <= 1
        await asyncio.sleep(3 * HALF_S)
        assert _drain(sock) == []
        assert notifier.stalls >= 3

        # It moves again: pings resume.
        feeding = asyncio.create_task(source())
        await asyncio.sleep(4 * HALF_S)
        assert "WATCHDOG=1" in _drain(sock)

        # The event loop is blocked: nothing is pinged while it is.
        await asyncio.sleep(1.5 * HALF_S)
        _drain(sock)
        time.sleep(5 * HALF_S)  # noqa: ASYNC251 - blocking the loop is the point
        assert _drain(sock) == []
    finally:
        feeding.cancel()
        dog.cancel()
        await asyncio.gather(feeding, dog, return_exceptions=True)


async def test_sighup_runs_the_reload_callback(notify_socket: tuple[str, socket.socket]) -> None:
    name, sock = notify_socket
    called = asyncio.Event()

    async def reload() -> None:
        called.set()

    async with ServiceSignals(notifier=ServiceNotifier(_env(name))) as signals:
        os.kill(os.getpid(), signal.SIGHUP)  # before a callback is set: ignored, not fatal
        await asyncio.sleep(0.05)
        signals.on_reload = reload
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.wait_for(called.wait(), 5)
        await asyncio.sleep(0.05)
    assert signals.reloads == 1 and signals.stop_signal is None
    got = _drain(sock)
    assert got[0].startswith("RELOADING=1\nMONOTONIC_USEC=") and got[1:] == ["READY=1"]


async def test_a_failing_reload_keeps_the_daemon_up() -> None:
    async def reload() -> None:
        raise RuntimeError("boom")

    async with ServiceSignals(on_reload=reload) as signals:
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if signals.reloads:
                break
            await asyncio.sleep(0.01)
    assert signals.reloads == 1


SCRIPT = """
import asyncio, sys
from pathlib import Path
from assistant.service.lifecycle import ServiceNotifier, ServiceSignals

async def main() -> int:
    notifier = ServiceNotifier()
    async with ServiceSignals(notifier=notifier) as signals:
        try:
            await asyncio.sleep(0.05)  # "loading the models"
            notifier.ready()
            print("ready", flush=True)
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.05)  # async cleanup still runs
            Path(sys.argv[1]).write_text("finally ran")
    print(f"stopped by {signals.stop_signal.name}", flush=True)
    return 0

sys.exit(asyncio.run(main()))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_runs_finally_and_exits_0(
    sig: signal.Signals, tmp_path: Path, notify_socket: tuple[str, socket.socket]
) -> None:
    name, sock = notify_socket
    script = tmp_path / "daemon.py"
    script.write_text(textwrap.dedent(SCRIPT))
    marker = tmp_path / "finally.txt"
    env = {**os.environ, "NOTIFY_SOCKET": name, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, str(script), str(marker)], stdout=subprocess.PIPE, text=True, env=env
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert marker.read_text() == "finally ran"
    assert out.strip() == f"stopped by {sig.name}"
    assert _drain(sock) == ["READY=1", "STOPPING=1"]


async def test_cancellation_from_elsewhere_is_not_swallowed() -> None:
    async def main() -> None:
        async with ServiceSignals():
            await asyncio.Event().wait()

    task = asyncio.create_task(main())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_reload_config_sorts_live_and_restart_keys() -> None:
    old = Config()
    new = replace(
        old,
        llm=replace(old.llm, model="other.gguf", temperature=0.7),
        listen=replace(old.listen, mode="wake"),
        queues=replace(old.queues, audio=50),
    )
    change = reload_config(old, new)
    assert sorted(change.live) == ["listen.mode", "llm.temperature"]
    assert sorted(change.restart) == ["llm.model", "queues.audio"]
    assert change.config.llm.temperature == 0.7 and change.config.listen.mode == "wake"
    assert change.config.llm.model == old.llm.model and change.config.queues.audio == 200
    assert reload_config(old, Config()) == (reload_config(old, old))
    assert reload_config(old, old).live == () and reload_config(old, old).restart == ()


def test_a_live_value_valid_only_after_a_restart_applies_nothing() -> None:
    old = Config()
    # vad.start_ms (live) = 20 is valid only with vad.frame_ms (restart) = 10, not the running 30.
    new = replace(old, vad=replace(old.vad, frame_ms=10, start_ms=20))
    change = reload_config(old, new)
    assert change.live == () and sorted(change.restart) == ["vad.frame_ms", "vad.start_ms"]
    assert change.config == old


async def test_config_reloader_applies_live_changes_and_survives_a_bad_file() -> None:
    old = Config()
    files: list[Config | ConfigError] = [
        replace(old, llm=replace(old.llm, temperature=0.5, model="big.gguf")),
        ConfigError("pipelines/mine.toml: vad.aggressiveness = 5 is not allowed"),
    ]
    applied: list[Config] = []

    def load() -> Config:
        item = files.pop(0)
        if isinstance(item, ConfigError):
            raise item
        return item

    reloader = ConfigReloader(old, load, applied.append)
    change = await reloader()
    assert change is not None and change.live == ("llm.temperature",) and change.restart == ("llm.model",)
    assert [c.llm.temperature for c in applied] == [0.5] and applied[0].llm.model == old.llm.model
    assert await reloader() is None
    assert len(applied) == 1 and reloader.current.llm.temperature == 0.5


def test_commands_and_devices_apply_live_but_intents_enabled_and_timers_file_need_a_restart() -> None:
    old = Config()
    lamp = DeviceConfig("desk lamp", area="office", command_topic="cmnd/lamp/POWER", state_topic="stat/lamp")
    intents = replace(old.intents, language="de", sentences=("mine.yaml",), area="office", alarm_limit_s=9.0)
    change = reload_config(old, replace(old, intents=intents, devices=(lamp,)))
    assert change.live == ("intents.language", "intents.sentences", "intents.area", "intents.alarm_limit_s",
                           "devices")  # fmt: skip
    assert change.restart == () and change.config.devices == (lamp,)
    restart = replace(old.intents, enabled=False, timers_file="/tmp/t.json", area="office")
    change = reload_config(old, replace(old, intents=restart))
    assert change.live == ("intents.area",) and change.restart == ("intents.enabled", "intents.timers_file")
    assert change.config.intents == replace(old.intents, area="office")


async def test_a_config_that_apply_refuses_changes_nothing() -> None:
    old = Config()
    new = replace(old, llm=replace(old.llm, temperature=0.5))

    def apply(config: Config) -> None:
        raise ConfigError("the commands cannot be reloaded: intents.sentences: mine.yaml is not a file")

    reloader = ConfigReloader(old, lambda: new, apply)
    assert await reloader() is None and reloader.current is old


def test_a_state_topic_of_the_assistants_own_is_refused_with_the_config() -> None:
    for topic in ("assistant/default/ask", "hermes/tts/say", "homeassistant/status", "$SYS/broker"):
        with pytest.raises(ConfigError, match="state_topic"):
            Config(devices=(DeviceConfig("lamp", state_topic=topic),))
    mqtt = replace(Config().mqtt, prefix="home", site="hall")
    Config(mqtt=mqtt, devices=(DeviceConfig("lamp", state_topic="assistant/default/lamp"),))
    with pytest.raises(ConfigError, match="state_topic"):
        Config(mqtt=mqtt, devices=(DeviceConfig("lamp", state_topic="home/hall/lamp"),))
