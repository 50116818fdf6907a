"""The home's sections: the MQTT bridge (``[mqtt]``), the Wyoming server (``[wyoming]``), the
devices commands may switch (``[[devices]]``) and the commands themselves (``[intents]``)."""

from __future__ import annotations

from dataclasses import dataclass

from assistant.config.checks import _check_choice, _check_range, _check_topic
from assistant.errors import ConfigError


@dataclass(frozen=True)
class MqttConfig:
    """The MQTT bridge: broker, topics, limits (see README "MQTT")."""

    enabled: bool = False
    """Run the bridge (``assistant run --mqtt URL`` turns it on)."""
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    """Empty: connect anonymously."""
    password: str = ""
    tls: bool = False
    """Connect over TLS (``mqtts://``)."""
    tls_ca_file: str = ""
    """CA bundle that signed the broker's certificate; empty: the system's trust store."""
    tls_insecure: bool = False
    """Skip the check that the certificate names the host (the chain is still verified)."""
    prefix: str = "assistant"
    """Topics are ``<prefix>/<site>/...``."""
    site: str = "default"
    client_id: str = ""
    """Empty: ``assistant-<site>``."""
    keepalive_s: int = 30
    connect_timeout_s: float = 10.0
    reconnect_min_s: float = 0.5
    """First wait after a lost or failed connection; doubled on each failure up to the max."""
    reconnect_max_s: float = 30.0
    auth_retry_s: float = 300.0
    """Wait after the broker refused our credentials or TLS failed (``auth_failed``)."""
    inbound_queue: int = 32
    """Accepted commands waiting to run; more are refused as ``busy``."""
    rate_limit: float = 10.0
    """Commands per second (sustained); more are refused as ``busy``."""
    rate_burst: int = 20
    max_payload_bytes: int = 65_536
    max_text_chars: int = 2000
    """Longest ``ask``/``say`` text; longer is refused as ``too_long``."""
    hass_discovery: bool = True
    discovery_prefix: str = "homeassistant"
    hermes: bool = False
    """Also speak the Hermes protocol (Rhasspy/Snips clients) on ``hermes/...``."""
    publish_reasoning: bool = False
    """Publish a reasoning model's thinking on ``<prefix>/<site>/reasoning``."""

    def __post_init__(self) -> None:
        _check_range("mqtt.port", self.port, 1, 65_535)
        if not self.host.strip():
            raise ConfigError("mqtt.host is empty: give the broker's host name or address")
        for key in ("prefix", "site", "discovery_prefix"):
            value = getattr(self, key)
            if not value or any(c in value for c in "+#/ \0") or value != value.strip():
                raise ConfigError(
                    f"mqtt.{key} = {value!r} is not allowed: a non-empty topic level without + # / or spaces"
                )
        if self.password and not self.username:
            raise ConfigError("mqtt.password is set but mqtt.username is empty: give both or neither")
        _check_range("mqtt.keepalive_s", self.keepalive_s, 5, 3600)
        _check_range("mqtt.connect_timeout_s", self.connect_timeout_s, 0.5, 120.0)
        _check_range("mqtt.reconnect_min_s", self.reconnect_min_s, 0.01, 60.0)
        _check_range("mqtt.reconnect_max_s", self.reconnect_max_s, self.reconnect_min_s, 3600.0)
        _check_range("mqtt.auth_retry_s", self.auth_retry_s, 0.1, 86_400.0)
        _check_range("mqtt.inbound_queue", self.inbound_queue, 1, 10_000)
        _check_range("mqtt.rate_limit", self.rate_limit, 0.1, 10_000.0)
        _check_range("mqtt.rate_burst", self.rate_burst, 1, 10_000)
        _check_range("mqtt.max_payload_bytes", self.max_payload_bytes, 256, 1 << 20)
        _check_range("mqtt.max_text_chars", self.max_text_chars, 1, 100_000)


@dataclass(frozen=True)
class WyomingConfig:
    """The Wyoming server: our ASR, TTS and microphone for Home Assistant (README "Home Assistant
    (Wyoming)")."""

    enabled: bool = False
    """Run the server (``assistant run --wyoming tcp://HOST:PORT`` turns it on)."""
    host: str = "0.0.0.0"
    """Address to listen on; 0.0.0.0: every interface (Home Assistant usually runs elsewhere)."""
    port: int = 10700
    name: str = "assistant"
    """What Home Assistant calls the services and the satellite (also the zeroconf name)."""
    area: str = ""
    """The satellite's area (room) in Home Assistant; empty: none."""
    asr: bool = True
    """Offer speech recognition (the pipeline's ASR engine)."""
    tts: bool = True
    """Offer speech synthesis (the pipeline's voice), streamed sentence by sentence."""
    satellite: bool = True
    """Offer the microphone and the speaker as an Assist satellite (needs ``--input`` and ``--output``)."""
    zeroconf: bool = True
    """Announce the server as ``_wyoming._tcp`` on the network (when ``zeroconf`` is installed)."""
    max_clients: int = 16
    """Connections served at once; more are refused with ``busy``."""
    max_payload_bytes: int = 262_144
    """The largest payload of one event (an audio chunk is a few KB); larger is refused."""
    max_audio_s: float = 30.0
    """The longest audio one transcription takes: the rest is dropped (an ``error`` ``too_long``
    says so) and what was kept is transcribed."""
    max_text_chars: int = 5000
    """The longest text one synthesis takes; longer is refused as ``too_long``."""
    idle_timeout_s: float = 120.0
    """A connection that sends nothing for this long is closed (Home Assistant pings every 2 s)."""

    def __post_init__(self) -> None:
        if not self.host.strip() or self.host != self.host.strip():
            raise ConfigError(f"wyoming.host = {self.host!r} is not allowed: an address or host name")
        _check_range("wyoming.port", self.port, 1, 65_535)
        if not self.name.strip():
            raise ConfigError("wyoming.name is empty: give the name Home Assistant should show")
        _check_range("wyoming.max_clients", self.max_clients, 1, 1000)
        _check_range("wyoming.max_payload_bytes", self.max_payload_bytes, 4096, 16 << 20)
        _check_range("wyoming.max_audio_s", self.max_audio_s, 1.0, 600.0)
        _check_range("wyoming.max_text_chars", self.max_text_chars, 1, 100_000)
        _check_range("wyoming.idle_timeout_s", self.idle_timeout_s, 5.0, 86_400.0)


DEVICE_DOMAINS = ("light", "switch", "fan")
"""What a declared device may be (``[[devices]]`` ``domain``): things that are switched on and off."""


@dataclass(frozen=True)
class DeviceConfig:
    """A device the assistant may switch (``[[devices]]``): its names become words hassil matches.

    With a ``command_topic``, "turn on the <name>" publishes ``payload_on`` there (a Tasmota or
    Zigbee2MQTT device needs no Home Assistant); without one, the matched intent is only published
    (``<prefix>/<site>/intent``) for an automation to act on."""

    name: str = ""
    """What the device is called ("desk lamp"); unique among the devices' names and aliases."""
    aliases: tuple[str, ...] = ()
    """Other names for it ("reading light")."""
    area: str = ""
    """The room it is in ("kitchen"): "turn on the kitchen lights" switches every light there."""
    domain: str = "light"
    """One of ``DEVICE_DOMAINS``: which words name it ("the lights", "the fan")."""
    command_topic: str = ""
    """MQTT topic that switches it (``cmnd/desk_lamp/POWER``); empty: none."""
    payload_on: str = "ON"
    payload_off: str = "OFF"
    state_topic: str = ""
    """MQTT topic on which it reports its state (``stat/desk_lamp/POWER``); empty: none."""

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ConfigError("devices: a [[devices]] table has no name: give each device a name")
        where = f"devices[name = {self.name!r}]"
        if any(not alias.strip() for alias in self.aliases):
            raise ConfigError(f"{where}.aliases has an empty alias: remove it")
        _check_choice(f"{where}.domain", self.domain, DEVICE_DOMAINS)
        _check_topic(f"{where}.command_topic", self.command_topic)
        _check_topic(f"{where}.state_topic", self.state_topic)
        if self.command_topic and not (self.payload_on and self.payload_off):
            raise ConfigError(f"{where}.payload_on and payload_off must not be empty with a command_topic")

    @property
    def names(self) -> tuple[str, ...]:
        """The name, then the aliases."""
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class IntentsConfig:
    """Commands answered without the LLM (hassil and Home Assistant's sentences; see README
    "Commands and home control")."""

    enabled: bool = True
    """Match each transcript against the command sentences before the LLM sees it."""
    language: str = ""
    """The sentences' language (``en``, ``de``...); empty: ``asr.language``."""
    sentences: tuple[str, ...] = ()
    """The user's own sentence files (hassil YAML); a relative path is read from the config
    folder (``$ASSISTANT_CONFIG_DIR``, else ``~/.config/assistant``)."""
    area: str = ""
    """The room the assistant is in: "turn on the lights" without a room switches the lights of
    this area (every declared one, when empty)."""
    alarm_limit_s: float = 60.0
    """A finished timer's spoken alarm repeats until "stop" or for this long, seconds."""
    timers_file: str = ""
    """Where running timers are kept across restarts; empty: ``timers.json`` in the state
    folder (``$STATE_DIRECTORY`` under systemd, else ``~/.local/state/assistant``)."""

    def __post_init__(self) -> None:
        _check_range("intents.alarm_limit_s", self.alarm_limit_s, 1.0, 3600.0)
        if self.language != self.language.strip() or " " in self.language:
            raise ConfigError(f"intents.language = {self.language!r} is not allowed: a code such as en or de")
        if any(not path.strip() for path in self.sentences):
            raise ConfigError("intents.sentences has an empty path: remove it")


def _check_devices(devices: tuple[DeviceConfig, ...]) -> None:
    """Names and aliases are unique over all devices (case aside): one name, one device."""
    seen: dict[str, str] = {}
    for device in devices:
        for name in device.names:
            key = " ".join(name.lower().split())
            if key in seen:
                raise ConfigError(
                    f"devices[name = {device.name!r}]: {name!r} already names {seen[key]!r}:"
                    " give each device names of its own"
                )
            seen[key] = device.name


def _check_state_topics(devices: tuple[DeviceConfig, ...], mqtt: MqttConfig) -> None:
    """What a state topic carries is heard as the device's report, so it must be a plain topic
    of its own: not the assistant's (``<prefix>/<site>/...``, ``hermes/...``, Home Assistant's
    status), not ``$``-reserved. Checked here, not only by the bridge, so that a reload with such a
    device is refused whole."""
    own = (f"{mqtt.prefix}/{mqtt.site}/", "hermes/", "$")
    for device in devices:
        topic = device.state_topic
        if topic and (
            topic.startswith(own)
            or topic == f"{mqtt.discovery_prefix}/status"
            or len(topic.encode("utf-8")) > 65_535
        ):
            raise ConfigError(
                f"devices[name = {device.name!r}].state_topic = {topic!r} is not allowed: a plain"
                " topic (no + or #) that is not one of the assistant's own"
            )
