"""The shipped pipelines, package data: installed as ``assistant.data.pipelines`` (see pyproject.toml)."""
