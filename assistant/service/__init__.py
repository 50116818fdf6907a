"""Running as a service: sd_notify, the watchdog, signals and reload (``lifecycle``), and the
push-to-talk key reader (``keys``). See ``docs/architecture.md``."""
