"""The MQTT broker: can the daemon connect (``broker``), and is it exposed (``mqtt``)?

``check_broker`` connects as the daemon would (credentials, TLS) and names what went wrong:
nothing listening, a host name that does not resolve, no answer, credentials refused, an
untrusted certificate, TLS spoken to a plain port. ``check_mqtt`` warns when the broker accepts
anonymous clients on a non-loopback address (anyone on the network could then make the
assistant speak, or listen to its transcripts), and when a password would cross the network
without TLS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable

from assistant.config import Config, MqttConfig
from assistant.doctor.base import Finding, Setup


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

    from assistant.mqtt.bridge import is_auth_failure
    from assistant.mqtt.protocol import tls_context

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
                " network can command the assistant",
                "set allow_anonymous false with a password_file and an acl_file in mosquitto.conf",
            )
        )
    else:
        findings.append(Finding("mqtt", "ok", f"broker {where} refuses anonymous clients"))
    if cfg.username and not cfg.tls:
        findings.append(
            Finding(
                "mqtt",
                "warn",
                f"the MQTT password crosses the network to {where} unencrypted",
                "use mqtts:// (mqtt.tls = true) with a TLS listener on the broker",
            )
        )
    return findings


async def check_exposure(setup: Setup) -> list[Finding]:
    return await check_mqtt(setup.config)


def explain_connect_error(err: BaseException, cfg: MqttConfig) -> tuple[str, str]:
    """(what went wrong, the fix) for a failed connection to the broker."""
    import aiomqtt

    where = f"{cfg.host}:{cfg.port}"
    cause = err.__cause__ or err.__context__
    setting = "mqtt.host/mqtt.port in the pipeline, or --mqtt URL"
    if isinstance(err, aiomqtt.MqttCodeError) and getattr(err.rc, "value", err.rc) in (4, 5, 134, 135):
        who = f"user {cfg.username!r}" if cfg.username else "anonymous clients"
        return (
            f"broker {where} refused {who} ({err})",
            "give the right mqtt.username/mqtt.password (or --mqtt mqtt://USER:PASS@HOST); on the"
            " broker: mosquitto_passwd -b PASSWORD_FILE USER PASS, and an acl_file entry for the"
            f" topics {cfg.prefix}/#",
        )
    if isinstance(cause, ssl.SSLCertVerificationError) or "certificate" in str(err).lower():
        return (
            f"the TLS certificate of broker {where} is not trusted ({cause or err})",
            "set mqtt.tls_ca_file to the CA that signed the broker's certificate (mqtt.tls_insecure"
            " = true only skips the host name check)",
        )
    if isinstance(cause, ssl.SSLError) or "ssl" in str(err).lower():
        return (
            f"TLS with broker {where} failed ({cause or err})",
            "the port may not speak TLS: use mqtt:// for a plain listener, or the broker's TLS port"
            " (usually 8883)",
        )
    if isinstance(cause, ConnectionRefusedError):
        return (
            f"nothing listens on {where} (connection refused)",
            f"start the broker (systemctl start mosquitto) or fix {setting}",
        )
    if isinstance(cause, socket.gaierror):
        return f"broker host {cfg.host!r} does not resolve ({cause.strerror})", f"fix {setting}"
    if isinstance(err, TimeoutError) or isinstance(cause, TimeoutError) or "timed out" in str(err):
        return (
            f"no answer from {where} (timed out)",
            f"check the address and that a firewall lets port {cfg.port} through; or fix {setting}",
        )
    return f"cannot connect to {where}: {err}", f"check the broker's log; or fix {setting}"


async def check_broker(setup: Setup) -> list[Finding]:
    """A real connection, as the daemon makes it (credentials, TLS), when MQTT is on."""
    cfg = setup.config.mqtt
    if not cfg.enabled:
        return []
    try:
        import aiomqtt

        from assistant.mqtt.protocol import tls_context
    except ImportError as err:
        fix = "pip install 'assistant[mqtt]'"
        return [Finding("broker", "fail", f"MQTT is on but aiomqtt is missing ({err})", fix)]
    where = f"{cfg.host}:{cfg.port}"
    tls = tls_context(cfg) if cfg.tls else None
    client = aiomqtt.Client(
        cfg.host, cfg.port, identifier=f"assistant-doctor-{cfg.site}", username=cfg.username or None,
        password=cfg.password or None, tls_context=tls, timeout=min(cfg.connect_timeout_s, 5.0),
    )  # fmt: skip
    try:
        async with client:
            pass
    except (aiomqtt.MqttError, OSError, TimeoutError) as err:
        message, fix = explain_connect_error(err, cfg)
        return [Finding("broker", "fail", message, fix)]
    scheme = "mqtts" if cfg.tls else "mqtt"
    who = f" as {cfg.username}" if cfg.username else ""
    return [Finding("broker", "ok", f"connected to {scheme}://{where}{who}")]
