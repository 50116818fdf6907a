"""Where a turn starts and ends in the audio: the clock-free ``segmenter`` and the barge-in ``echo`` gate
(with ``envelope``, ``judge`` and ``frames``). The VAD stage (``stages.vad``) runs them. See
``docs/architecture.md``."""
