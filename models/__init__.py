"""The model manifest, package data: installed as ``assistant.data.models`` (see pyproject.toml)."""
