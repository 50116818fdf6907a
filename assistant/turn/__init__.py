"""What a turn is, shared by the stages and the controller: the registry of live and cancelled turns
(``registry``), marks and spans (``latency``), acknowledgements (``budget``), listen modes
(``activation``). See ``docs/architecture.md``."""
