"""One version, read from ``massiva_frames/_version.py`` by the build, the CLI, the client
and the changelog."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import massiva_frames as mf
from massiva_frames._version import __version__
from massiva_frames.errors import MassivaError
from massiva_frames.faces.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_a_release_number() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    assert mf.__version__ == __version__


def test_the_build_reads_the_version_file() -> None:
    # The installed distribution's metadata was written by the build (setuptools >= 77 in
    # its own build environment), which read the version from _version.py.
    from importlib.metadata import version

    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in text
    assert 'version = { attr = "massiva_frames._version.__version__" }' in text
    assert version("massiva-frames") == __version__


def test_the_changelog_opens_with_this_version() -> None:
    first = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert first is not None and first[1] == __version__


def test_the_cli_reports_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"massiva-frames {__version__}"


def test_the_client_sends_it_as_its_user_agent() -> None:
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("User-Agent", ""))
            body = b"not xml"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/webservices"
        with mf.MassivaClient("a@b.test", "secret", base_url=url, method="GET") as client:
            with pytest.raises(MassivaError):
                client.credits()  # the answer is not XML: what matters is the request
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert seen and seen[0].startswith(f"massiva-frames/{__version__} ")
