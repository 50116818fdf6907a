"""An offline voice assistant daemon: VAD, faster-whisper, llama.cpp and piper as streaming stages."""

__version__ = "0.1.0"
