"""The checks every section's ``__post_init__`` uses: each error names the key and the allowed values."""

from __future__ import annotations

import typing
from urllib.parse import urlsplit

from assistant.errors import ConfigError


def _check_range(key: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"{key} = {value!r} is out of range: allowed {lo} to {hi}")


def _check_choice(key: str, value: object, choices: typing.Iterable[object]) -> None:
    allowed = list(choices)
    if value not in allowed:
        raise ConfigError(f"{key} = {value!r} is not allowed: choose one of {allowed}")


def tcp_address(key: str, url: str) -> tuple[str, int]:
    """A Wyoming address ``tcp://HOST:PORT`` as (host, port); ``ConfigError`` naming ``key`` otherwise."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tcp" or not parts.hostname or not port or parts.path not in ("", "/"):
        raise ConfigError(f"{key} = {url!r} is not allowed: give tcp://HOST:PORT (port 1 to 65535)")
    return parts.hostname, port


def _check_topic(key: str, topic: str) -> None:
    if topic and (topic != topic.strip() or any(c in topic for c in "+#\0")):
        raise ConfigError(
            f"{key} = {topic!r} is not allowed: an MQTT topic without + # or surrounding spaces"
        )
