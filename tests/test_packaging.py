"""Package data and pipeline discovery: what a plain install (a wheel, no checkout) needs.

The shipped pipelines and the model manifest are package data (``assistant.data.pipelines``,
``assistant.data.models``, mapped from ``pipelines/`` and ``models/`` by pyproject.toml); user
pipelines come from ``$ASSISTANT_CONFIG_DIR/pipelines`` or the user's config folder.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import resources
from pathlib import Path

import pytest

from assistant import cli, models
from assistant.config import (
    PIPELINES_DIR,
    find_pipelines,
    load_config,
    pipeline_file,
    user_pipelines_dir,
)
from assistant.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.stem for p in (REPO / "pipelines").glob("*.toml"))


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty user config folder (``ASSISTANT_CONFIG_DIR``) with a ``pipelines`` folder."""
    root = tmp_path / "config"
    (root / "pipelines").mkdir(parents=True)
    monkeypatch.setenv("ASSISTANT_CONFIG_DIR", str(root))
    return root


def test_shipped_pipelines_are_package_data(config_dir: Path) -> None:
    assert resources.files("assistant.data.pipelines") == PIPELINES_DIR
    found = find_pipelines()
    assert [p.name for p in found] == SHIPPED and "default" in SHIPPED
    for p in found:
        assert p.origin == "shipped" and p.path.parent == PIPELINES_DIR
        assert p.path.read_bytes() == (REPO / "pipelines" / p.path.name).read_bytes()


def test_user_pipeline_wins_over_the_shipped_one_of_its_name(config_dir: Path) -> None:
    (config_dir / "pipelines" / "default.toml").write_text("[vad]\naggressiveness = 3\n")
    (config_dir / "pipelines" / "kitchen.toml").write_text("[vad]\naggressiveness = 1\n")
    assert load_config("default").vad.aggressiveness == 3
    assert load_config("kitchen").vad.aggressiveness == 1
    chosen = pipeline_file("default")
    assert chosen.origin == "user" and chosen.path == config_dir / "pipelines" / "default.toml"
    listed = [(p.name, p.origin) for p in find_pipelines()]
    assert listed[:2] == [("default", "user"), ("kitchen", "user")]
    assert ("default", "shipped") in listed and ("file", "shipped") in listed


def test_user_folder_follows_xdg_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASSISTANT_CONFIG_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    if sys.platform.startswith("linux"):
        assert user_pipelines_dir() == tmp_path / "assistant" / "pipelines"
    monkeypatch.setenv("ASSISTANT_CONFIG_DIR", str(tmp_path / "elsewhere"))
    assert user_pipelines_dir() == tmp_path / "elsewhere" / "pipelines"


def test_explicit_path(config_dir: Path, tmp_path: Path) -> None:
    mine = tmp_path / "default.toml"  # a path, even one named like a shipped pipeline
    mine.write_text("[vad]\naggressiveness = 0\n")
    chosen = pipeline_file(str(mine))
    assert (chosen.name, chosen.origin, chosen.path) == ("default", "path", mine)
    assert load_config(str(mine)).vad.aggressiveness == 0
    with pytest.raises(ConfigError, match="no such file"):
        load_config(str(tmp_path / "missing.toml"))


def test_unknown_name_lists_the_names_and_where_it_looked(config_dir: Path) -> None:
    (config_dir / "pipelines" / "kitchen.toml").write_text("")
    with pytest.raises(ConfigError) as info:
        load_config("bedroom")
    message = info.value.message
    assert info.value.code == "config_invalid"
    assert "--pipeline bedroom: unknown pipeline; choose one of" in message
    assert all(repr(name) in message for name in [*SHIPPED, "kitchen"]), message
    assert str(config_dir / "pipelines") in message and str(PIPELINES_DIR) in message


def test_unknown_name_says_the_user_folder_is_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSISTANT_CONFIG_DIR", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="which does not exist"):
        pipeline_file("bedroom")
    assert [p.name for p in find_pipelines()] == SHIPPED


def _rows(capsys: pytest.CaptureFixture[str]) -> tuple[list[str], list[list[str]]]:
    """The output's lines, and each pipeline's row as [mark, name, origin, path, note...]."""
    lines = capsys.readouterr().out.splitlines()
    return lines, [[line[0], *line[2:].split()] for line in lines[2:-1]]


def test_pipelines_command(config_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    user = config_dir / "pipelines"
    assert cli.main(["pipelines"]) == 0
    lines, rows = _rows(capsys)
    assert lines[0].split() == ["user", "pipelines:", str(user)]
    assert lines[1].split() == ["shipped", "pipelines:", str(PIPELINES_DIR)]
    assert [row[1] for row in rows] == SHIPPED
    assert [row for row in rows if row[0] == "*"] == [
        ["*", "default", "shipped", str(PIPELINES_DIR / "default.toml")]
    ]
    assert lines[-1].startswith("* the pipeline in use (--pipeline default)")

    (user / "default.toml").write_text("")
    (user / "kitchen.toml").write_text("")
    assert cli.main(["--pipeline", "kitchen", "pipelines"]) == 0
    lines, rows = _rows(capsys)
    assert rows[:2] == [
        [" ", "default", "user", str(user / "default.toml")],
        ["*", "kitchen", "user", str(user / "kitchen.toml")],
    ]
    shadowed = next(line for line in lines if str(PIPELINES_DIR / "default.toml") in line)
    assert shadowed.endswith("(hidden by the user's)")

    mine = tmp_path / "mine.toml"
    mine.write_text("")
    assert cli.main(["--pipeline", str(mine), "pipelines"]) == 0
    assert _rows(capsys)[1][0] == ["*", "mine", "path", str(mine)]


def test_pipelines_command_unknown_name(config_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--pipeline", "bedroom", "pipelines"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error [config_invalid]: --pipeline bedroom: unknown pipeline; choose one of")
    assert str(config_dir / "pipelines") in err


def test_manifest_is_package_data() -> None:
    shipped = resources.files("assistant.data.models") / "manifest.toml"
    assert shipped == models.MANIFEST_PATH
    assert shipped.read_bytes() == (REPO / "models" / "manifest.toml").read_bytes()
    manifest = models.load_manifest()
    assert {"whisper-tiny.en", "smollm2-135m-instruct", "piper-en_US-joe-medium"} <= set(manifest)


def _source_packages() -> set[str]:
    return {
        ".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "assistant").rglob("__init__.py")
    }


def test_pyproject_lists_every_package() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    mapped = {"assistant.data.pipelines": "pipelines", "assistant.data.models": "models"}
    missing = _source_packages() - listed
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    assert listed == _source_packages() | set(mapped)
    assert setuptools["package-dir"] == mapped


def test_wheel_carries_the_package_data(tmp_path: Path) -> None:
    """Build the wheel from a copy of the tree (setuptools builds in place) and list it."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("assistant", "pipelines", "models"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("assistant-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for toml in (REPO / "pipelines").glob("*.toml"):
        assert f"assistant/data/pipelines/{toml.name}" in names
    assert "assistant/data/models/manifest.toml" in names
    code = {str(p.relative_to(REPO)) for p in (REPO / "assistant").rglob("*.py")}
    assert not code - names, f"modules missing from the wheel: {sorted(code - names)}"
    assert not {n for n in names if n.startswith(("pipelines/", "models/"))}, "data outside the package"
