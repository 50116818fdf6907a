"""The MQTT bridge (``bridge``: the connection), its wire ``protocol`` (topics, command checks, payloads),
Home Assistant discovery (``hass``) and Hermes (``hermes``). See ``docs/architecture.md``."""
