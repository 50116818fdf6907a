"""Package data: the shipped pipelines and the model manifest.

The files stay at the top of the source tree, ``pipelines/*.toml`` and ``models/manifest.toml``;
pyproject.toml maps those folders into this package as ``assistant.data.pipelines`` and
``assistant.data.models`` (``[tool.setuptools.package-dir]``). A wheel carries them, and an
editable install finds them where they are. Code reaches them through ``folder`` (importlib.resources),
never by walking up from ``__file__``: a wheel has no source tree around it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PIPELINES = "assistant.data.pipelines"
"""The shipped pipelines (``pipelines/*.toml`` in the source tree)."""
MODELS = "assistant.data.models"
"""The model manifest (``models/manifest.toml`` in the source tree)."""


def folder(package: str) -> Path:
    """The folder holding ``package``'s files. pip installs packages as files, never zipped."""
    try:
        root = resources.files(package)
    except ModuleNotFoundError as err:
        raise ImportError(
            f"package data {package} is missing from this install (made before it existed, or broken):"
            " install the assistant again (scripts/setup, or pip install .)"
        ) from err
    if not isinstance(root, Path):
        raise ImportError(f"package data {package} is inside an archive ({root}); install it with pip")
    return root
