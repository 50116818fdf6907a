"""Where a turn starts and ends in the audio: the clock-free ``segmenter`` and the barge-in ``echo`` gate.
The VAD stage (``stages.vad``) runs them. See ``docs/architecture.md``."""
