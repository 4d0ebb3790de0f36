"""CI's pins (``.ci/constraints.txt``) cover what ``.ci/run`` installs.

``benchmarks/latest_deps.py`` reads the extras from ``.ci/run`` and walks the installed
distributions they pull in; every one must be pinned, or a new upstream release could
turn CI red by itself.
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import latest_deps  # noqa: E402


def test_the_extras_are_read_from_ci_run() -> None:
    extras = latest_deps.ci_extras()
    assert "test" in extras
    assert f'-e ".[{",".join(extras)}]"' in (ROOT / ".ci" / "run").read_text()
    # what the pins are written from: the dependencies and every one of those extras
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = {
        Requirement(line).name for name in extras for line in project["optional-dependencies"][name]
    } | {Requirement(line).name for line in project["dependencies"]}
    assert {r.name for r in latest_deps._project_requirements()} == wanted


def test_everything_ci_installs_is_pinned() -> None:
    requirements = latest_deps._project_requirements()
    missing = [r.name for r in requirements if not _installed(r.name)]
    if missing:
        pytest.skip(
            f"not installed here: {', '.join(missing)} (pip install -e '.[...]' as .ci/run)"
        )
    pins = latest_deps.read_pins()
    closure = latest_deps.closure(requirements)
    assert [name for name in closure if name not in pins] == []


def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True
