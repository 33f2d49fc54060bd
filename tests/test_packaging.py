"""Packaging facts that are easy to break silently: CI runs the README's test command, the Python
version agrees everywhere, the linters are pinned, the sdist carries what the README shows, and
every setting has help text."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from stylequery.config import Config

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _bash_blocks(markdown: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", markdown, flags=re.DOTALL)


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (command,) = [b.strip() for b in _bash_blocks(readme) if b.strip().endswith("-m pytest")]
    assert command in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_python_version_agrees_across_tools() -> None:
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py311"
    assert PYPROJECT["tool"]["mypy"]["python_version"] == "3.11"


def test_dev_extra_pins_the_linters() -> None:
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    for tool in ("ruff", "mypy"):
        (spec,) = [d for d in dev if re.match(rf"{tool}\b", d)]
        assert re.fullmatch(rf"{tool}==[\d.]+", spec), spec


def test_package_is_typed_and_ships_its_configs() -> None:
    assert (REPO / "src" / "stylequery" / "py.typed").is_file()
    wheel = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["force-include"]["configs"] == "stylequery/configs"
    assert (REPO / "configs" / "tiny.yaml").is_file()


def test_sdist_includes_every_file_the_readme_shows() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    shown = re.findall(r"\]\(([^)#:]+)\)", readme)  # relative links and images
    include = PYPROJECT["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]
    assert shown
    for path in shown:
        assert (REPO / path).exists(), path
        assert any(path == i or path.startswith(f"{i}/") for i in include), path


def test_every_setting_has_help() -> None:
    cfg = Config()
    for section in dataclasses.fields(cfg):
        for key in dataclasses.fields(getattr(cfg, section.name)):
            assert key.metadata.get("help"), f"{section.name}.{key.name} has no help"
