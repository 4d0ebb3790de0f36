"""Tests needing a program the machine may lack: skipped with how to get it, or failed if required.

``require_or_skip`` is checked directly, and the browser test is run as the README's test
command would run it on a machine without Chromium, with and without
``MASSIVA_REQUIRE_BROWSER``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_or_skip

ROOT = Path(__file__).resolve().parents[1]


def test_available_neither_skips_nor_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASSIVA_REQUIRE_GADGET", "1")
    require_or_skip("gadget", True, "apt-get install gadget")


@pytest.mark.parametrize("value", [None, "", "0"])
def test_missing_skips_with_how_to_install(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("MASSIVA_REQUIRE_GADGET", raising=False)
    else:
        monkeypatch.setenv("MASSIVA_REQUIRE_GADGET", value)
    with pytest.raises(pytest.skip.Exception) as info:
        require_or_skip("gadget", False, "apt-get install gadget")
    assert "apt-get install gadget" in str(info.value)
    assert "MASSIVA_REQUIRE_GADGET=1" in str(info.value)


@pytest.mark.parametrize("value", ["1", "yes"])
def test_missing_fails_when_required(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MASSIVA_REQUIRE_GADGET", value)
    with pytest.raises(pytest.fail.Exception) as info:
        require_or_skip("gadget", False, "apt-get install gadget")
    assert "apt-get install gadget" in str(info.value)
    assert "MASSIVA_REQUIRE_GADGET" in str(info.value)


def test_the_variable_is_per_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASSIVA_REQUIRE_OTHER", "1")
    monkeypatch.delenv("MASSIVA_REQUIRE_GADGET", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_or_skip("gadget", False, "apt-get install gadget")


def _browser_test_without_chromium(
    tmp_path: Path, require: str | None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MASSIVA_REQUIRE_BROWSER"}
    env["MASSIVA_CHROMIUM"] = str(tmp_path / "no-chromium-here")
    if require is not None:
        env["MASSIVA_REQUIRE_BROWSER"] = require
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "tests/test_browser.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_browser_test_skips_on_a_machine_without_chromium(tmp_path: Path) -> None:
    done = _browser_test_without_chromium(tmp_path, None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout
    assert "apt-get install chromium" in done.stdout


def test_browser_test_fails_without_chromium_when_required(tmp_path: Path) -> None:
    done = _browser_test_without_chromium(tmp_path, "1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 error" in done.stdout or "1 failed" in done.stdout
    assert "apt-get install chromium" in done.stdout
