"""``assistant doctor``: checks of a deployment, each giving findings a user can act on.

A check is an ``async (Config) -> list[Finding]``, registered by name in ``CHECKS``; add new ones
there (models, audio devices, service files...). A finding's ``level`` is ``ok``, ``warn`` or
``fail``; ``doctor`` exits 0 when every finding is ``ok``, 1 otherwise.

The MQTT check warns when the broker accepts anonymous clients on a non-loopback address
(anyone on the network could then make the assistant speak, or listen to its transcripts), and
when a password would cross the network without TLS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .config import Config

LEVELS = ("ok", "warn", "fail")


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    level: str
    """``ok``, ``warn`` or ``fail``."""
    message: str

    def __str__(self) -> str:
        return f"{self.level.upper():4} {self.check}: {self.message}"


Check = Callable[[Config], Awaitable[list[Finding]]]


async def is_loopback(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback address."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    addresses = {str(info[4][0]) for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


async def accepts_anonymous(config: Config) -> bool | None:
    """Connect without credentials: True accepted, False refused, None unreachable."""
    import aiomqtt

    from .mqtt import is_auth_failure, tls_context

    cfg = config.mqtt
    tls = tls_context(cfg) if cfg.tls else None
    try:
        async with aiomqtt.Client(cfg.host, cfg.port, identifier="assistant-doctor", timeout=5.0,
                                  tls_context=tls):  # fmt: skip
            return True
    except aiomqtt.MqttError as err:
        return False if is_auth_failure(err) else None


async def check_mqtt(
    config: Config,
    *,
    loopback: Callable[[str], Awaitable[bool]] = is_loopback,
    probe: Callable[[Config], Awaitable[bool | None]] = accepts_anonymous,
) -> list[Finding]:
    """The broker's exposure: anonymous access and clear-text passwords off the loopback."""
    cfg = config.mqtt
    where = f"{cfg.host}:{cfg.port}"
    if not cfg.enabled:
        return [Finding("mqtt", "ok", "MQTT is off (mqtt.enabled = false, no --mqtt)")]
    if await loopback(cfg.host):
        return [Finding("mqtt", "ok", f"broker {where} is on a loopback address only")]
    findings = []
    anonymous = await probe(config)
    if anonymous is None:
        findings.append(Finding("mqtt", "warn", f"broker {where} cannot be reached to check it"))
    elif anonymous:
        findings.append(
            Finding(
                "mqtt",
                "warn",
                f"broker {where} accepts anonymous clients on a non-loopback address: anyone on the"
                " network can command the assistant; set allow_anonymous false with a password_file"
                " and an acl_file",
            )
        )
    else:
        findings.append(Finding("mqtt", "ok", f"broker {where} refuses anonymous clients"))
    if cfg.username and not cfg.tls:
        findings.append(
            Finding(
                "mqtt", "warn", f"the MQTT password crosses the network to {where} unencrypted: use mqtts://"
            )
        )
    return findings


CHECKS: dict[str, Check] = {"mqtt": check_mqtt}
"""Every check ``doctor`` runs, by name, in order."""


async def run_checks(config: Config, checks: dict[str, Check] | None = None) -> list[Finding]:
    """Run every check; one that raises becomes a ``fail`` finding."""
    findings: list[Finding] = []
    for name, check in (checks or CHECKS).items():
        try:
            findings.extend(await check(config))
        except (asyncio.CancelledError, TimeoutError):
            raise
        except Exception as err:
            findings.append(Finding(name, "fail", f"the check itself failed: {err!r}"))
    return findings
