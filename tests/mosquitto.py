"""A real Mosquitto broker per test, on a random loopback port, with its own config file.

``Broker`` can be started, killed (SIGKILL, as a crash) and restarted on the same port; it can
require a password (``users``) and an ACL (``acl``), or serve TLS with a throwaway CA
(``tls=True``). ``Recorder`` is a plain aiomqtt client that records what is published, so tests
assert on what a real subscriber sees. Nothing here ever binds a non-loopback address.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for ``localhost``/127.0.0.1: (ca, cert, key)."""
    ca_key, ca, key, csr, cert = (
        directory / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem")
    )
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", "/CN=test-ca", "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost",
        "-keyout", str(key), "-out", str(csr))  # fmt: skip
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "2", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return ca, cert, key


class Broker:
    """One mosquitto process; ``start()``, ``kill()``, ``restart()``."""

    def __init__(
        self,
        directory: Path,
        *,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        tls: bool = False,
    ) -> None:
        self.dir = directory
        self.port = free_port()
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ca: Path | None = None
        # ``user``: as root, mosquitto would drop to the "mosquitto" user, who cannot read tmp_path.
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stderr"]
        lines.append(f"user {getpass.getuser()}")
        if users:
            passwd = directory / "passwd"
            passwd.touch(mode=0o600)
            for user, password in users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(passwd), user, password], check=True, timeout=30
                )
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if acl is not None:
            (directory / "acl").write_text(acl)
            lines.append(f"acl_file {directory / 'acl'}")
        if tls:
            self.ca, cert, key = make_certs(directory)
            lines += [f"certfile {cert}", f"keyfile {key}"]
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = directory / "mosquitto.log"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.2):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not start listening")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def url(self, user: str = "", password: str = "") -> str:
        auth = f"{user}:{password}@" if user else ""
        return f"mqtt://{auth}{self.host}:{self.port}"


def running_broker(directory: Path) -> Iterator[Broker]:
    """For a fixture: a running anonymous broker, killed afterwards."""
    b = Broker(directory)
    b.start()
    try:
        yield b
    finally:
        b.kill()


class Recorder:
    """A test's own MQTT client: records every message on ``topics``; publishes commands."""

    def __init__(self, broker: Broker, topics: list[str], **client_args: Any) -> None:
        self.broker = broker
        self.topics = topics
        self.client_args = client_args
        self.messages: list[aiomqtt.Message] = []
        self.client: aiomqtt.Client | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Recorder]:
        async with aiomqtt.Client(self.broker.host, self.broker.port, **self.client_args) as client:
            self.client = client
            for topic in self.topics:
                await client.subscribe(topic, qos=1)

            async def record() -> None:
                async for message in client.messages:
                    self.messages.append(message)

            task = asyncio.create_task(record(), name="recorder")
            try:
                yield self
            finally:
                task.cancel()
                await asyncio.wait({task})
                self.client = None

    async def publish(self, topic: str, payload: str | bytes | dict[str, Any], **kwargs: Any) -> None:
        assert self.client is not None
        data = json.dumps(payload) if isinstance(payload, dict) else payload
        await self.client.publish(topic, data, qos=kwargs.pop("qos", 1), **kwargs)

    def on(self, topic: str) -> list[Any]:
        """Payloads seen on ``topic`` (JSON decoded where possible), in order."""
        out = []
        for message in self.messages:
            if message.topic.value == topic:
                raw = message.payload
                text = raw.decode() if isinstance(raw, bytes) else str(raw)
                try:
                    out.append(json.loads(text))
                except ValueError:
                    out.append(text)
        return out

    async def wait_for(self, predicate: Callable[[], Any], limit_s: float = 10.0) -> Any:
        """Poll until ``predicate()`` is truthy (bounded); return its value."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            await asyncio.sleep(0.02)
        raise AssertionError(
            f"timed out waiting; saw {[(m.topic.value, m.payload) for m in self.messages][-20:]}"
        )
