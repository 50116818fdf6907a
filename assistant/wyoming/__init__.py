"""Wyoming, Home Assistant's voice protocol: the daemon as a Wyoming server (our ASR, our voice and
our microphone and speaker as an Assist satellite), and the framing the remote engines
(``engines/wyoming_remote.py``) speak to other Wyoming servers.

    protocol.py   the wire format with limits (pure; no ``wyoming`` package needed)
    client.py     a blocking connection for worker threads (the remote engines, the bench)
    server.py     the ``wyoming`` service: connections, limits, ``describe``, zeroconf
    services.py   transcription and (streamed) synthesis for a client
    satellite.py  the microphone shared with Home Assistant, its replies played on the sink
    info.py       what ``describe`` answers

See ``docs/architecture.md`` and README "Home Assistant (Wyoming)".
"""
