"""The benchmark: a spoken corpus (``corpus``), word error rate (``wer``) and the runner that times the
pipeline against a sequential baseline (``runner``). See ``docs/architecture.md``."""
