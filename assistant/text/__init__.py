"""Text the voice can speak: cleaning (``speakable``) and cutting a reply into clauses (``chunking``).
See ``docs/architecture.md``."""
