"""The send widget in a real browser: Voilà serves a notebook, headless Chromium drives it.

The sandbox runs in this process; the served notebook's kernel reaches it through the
``MASSIVA_*`` environment variables of the Voilà process, so the test can check what
the sandbox recorded. Chromium is Debian's (``/usr/bin/chromium``, installed by
``.ci/run``): where it is missing the test is skipped with the command that installs it,
unless ``MASSIVA_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes its absence a failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require_or_skip

from massiva_frames.sandbox import sandbox

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = Path(__file__).resolve().parent / "browser" / "send_widget.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("MASSIVA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
TIMEOUT_MS = 30_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _wait_until(check: Any, *, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return bool(check())


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium; skipped (or failed, when required) where it is not installed."""
    require_or_skip(
        "browser",
        Path(CHROMIUM).exists(),
        "apt-get install chromium (or point MASSIVA_CHROMIUM at a Chromium binary)",
    )
    return CHROMIUM


@pytest.fixture
def voila_server(chromium: str, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """Serve the send-widget notebook with Voilà, wired to a fresh sandbox.

    Asks for ``chromium`` first: without a browser there is nothing to serve for.
    """
    with sandbox(credits=100, callback_delay=0.1, fail_ratio=0.0) as sb:
        port = _free_port()
        home = tmp_path / "home"
        home.mkdir()
        env = {
            **os.environ,
            "HOME": str(home),
            "MASSIVA_BASE_URL": sb.base_url,
            "MASSIVA_USUARIO": sb.usuario,
            "MASSIVA_CLAVE": sb.clave,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "MPLBACKEND": "Agg",
        }
        log = (tmp_path / "voila.log").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "voila",
                str(NOTEBOOK),
                "--no-browser",
                f"--port={port}",
                "--Voila.ip=127.0.0.1",
                "--show_tracebacks=True",
            ],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            # BROWSER-NOTES: poll a static file; each GET / would start a kernel.
            try:
                with urllib.request.urlopen(f"{url}/voila/static/voila.js", timeout=2):
                    return True
            except (urllib.error.URLError, OSError):
                return proc.poll() is not None

        try:
            assert _wait_until(ready, timeout=60), "Voilà did not start"
            assert proc.poll() is None, (tmp_path / "voila.log").read_text(errors="replace")
            yield url, sb
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
            log.close()


def test_send_widget_in_chromium(
    chromium: str, voila_server: tuple[str, Any], tmp_path: Path
) -> None:
    from playwright.sync_api import Route, sync_playwright

    url, sb = voila_server
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "browser-send-widget.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium,
            args=CHROMIUM_ARGS,
            env={**os.environ, "HOME": str(tmp_path / "home")},
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1400})

            def local_only(route: Route) -> None:
                # BROWSER-NOTES: Voilà asks a CDN for fonts; nothing may leave 127.0.0.1.
                if route.request.url.startswith(url):
                    route.continue_()
                else:
                    route.abort()

            page.route("**/*", local_only)
            page.goto(f"{url}/", timeout=TIMEOUT_MS)
            template = page.locator(".massiva-send-widget .widget-textarea textarea")
            template.wait_for(timeout=TIMEOUT_MS)
            template.fill("Hola {nombre}, tu pedido va en camino")
            # the preview re-renders from the kernel: wait for the rendered text
            page.locator(".preview-table", has_text="Hola Ana").wait_for(timeout=TIMEOUT_MS)
            page.locator("button.jupyter-button", has_text="Send").click()
            confirm = page.locator("button.jupyter-button", has_text="Confirm")
            confirm.wait_for(state="visible", timeout=TIMEOUT_MS)
            assert "3 of 4 rows" in page.locator(".massiva-confirm").inner_text()
            confirm.click()
            table = page.locator(".results-table")
            table.wait_for(timeout=TIMEOUT_MS)
            text = table.inner_text()
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    print(f"screenshot: {screenshot}")
    assert text.count("accepted") == 3
    assert "invalid" in text

    def recorded() -> bool:
        return len(sb.messages()) == 3

    # BROWSER-NOTES: a kernel's side effects may lag the DOM a little.
    assert _wait_until(recorded, timeout=10)
    messages = sb.messages()
    assert set(messages["text"]) == {
        f"Hola {name}, tu pedido va en camino" for name in ("Ana", "Luis", "Marta")
    }
    assert set(messages["phone"]) == {"584141234567", "584247654321", "584125550001"}
