"""The built documentation site in headless Chromium: four pages load without console errors.

The site is built once per session by ``tests/test_docs.py`` (``mkdocs build --strict``)
and served from a local ``http.server`` thread on 127.0.0.1. Chromium is Debian's
(``/usr/bin/chromium``), driven by Playwright; every request that does not go to the
local server is aborted, so a page that needs the internet shows it as a console error.
Screenshots go to ``test-artifacts/docs-*.png``.

Skipped when Chromium, Playwright or MkDocs is missing, unless
``MASSIVA_REQUIRE_BROWSER=1`` (then it fails).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_docs import build_site

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
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

#: page -> (path in the site, a selector that shows it rendered, text it must hold)
PAGES = {
    "home": ("", "article h1", "massiva-frames"),
    "guide-sending": ("guide/sending/", "article h1", "Sending"),
    "reference-send": (
        "reference/sending/#massiva_frames.sending.campaign.send",
        "[id='massiva_frames.sending.campaign.send']",
        "resend_unknown",
    ),
    "notebook-quickstart": (
        "notebooks/01-quickstart/",
        ".jupyter-wrapper .jp-OutputArea-output",
        "phone_landline",
    ),
}


def _require_browser() -> None:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("playwright (pip install -e '.[test]')")
    if missing:
        reason = "missing: " + ", ".join(missing)
        if os.environ.get("MASSIVA_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason} (MASSIVA_REQUIRE_BROWSER=1)")
        pytest.skip(reason)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def served_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The built site, served on a free port of 127.0.0.1."""
    _require_browser()
    site = build_site(tmp_path_factory.mktemp("docs"))
    handler = functools.partial(_Quiet, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_docs_pages_in_chromium(served_site: str, tmp_path: Path) -> None:
    from playwright.sync_api import ConsoleMessage, Route, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    home = tmp_path / "home"
    home.mkdir()
    problems: dict[str, list[str]] = {}
    texts: dict[str, str] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, env={**os.environ, "HOME": str(home)}
        )
        try:
            for name, (path, selector, _expected) in PAGES.items():
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                seen: list[str] = []
                problems[name] = seen

                def on_console(message: ConsoleMessage, seen: list[str] = seen) -> None:
                    if message.type in ("error", "assert"):
                        seen.append(f"console {message.type}: {message.text}")

                def local_only(route: Route) -> None:
                    # nothing may leave 127.0.0.1: such a request shows up as an error
                    if route.request.url.startswith(served_site):
                        route.continue_()
                    else:
                        route.abort()

                page.on("console", on_console)
                page.on("pageerror", lambda exc, seen=seen: seen.append(f"page error: {exc}"))
                page.route("**/*", local_only)
                response = page.goto(served_site + path, timeout=TIMEOUT_MS, wait_until="load")
                assert response is not None and response.status == 200, (name, response)
                page.locator(selector).first.wait_for(timeout=TIMEOUT_MS)
                page.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)
                texts[name] = page.locator("article").inner_text()
                page.screenshot(path=str(ARTIFACTS / f"docs-{name}.png"))
                page.close()
        finally:
            browser.close()
    assert not any(problems.values()), problems
    for name, (_path, _selector, expected) in PAGES.items():
        assert expected in texts[name], f"{name}: {expected!r} is not on the page"
