"""The shipped reverse-proxy configuration (deploy/nginx/massiva-receiver.conf), for real.

Debian's nginx runs in the foreground on a free 127.0.0.1 port with the shipped file,
rewritten only where a machine differs (listen address, certificate paths, the
receiver's port, the access log's path), a self-signed certificate made here with
``openssl req``, and a live receiver behind it. Where nginx is missing the test skips
(``apt-get install nginx-light``); ``MASSIVA_REQUIRE_NGINX=1`` makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from conftest import require_or_skip

from massiva_frames.receiving import Receiver, read_callbacks, receiver

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "deploy" / "nginx" / "massiva-receiver.conf"
TOKEN = "t0ken-in-the-query"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _rewrite(text: str, replacements: dict[str, str]) -> str:
    """``text`` with each key replaced; each must occur exactly once (the file's shape)."""
    for old, new in replacements.items():
        assert text.count(old) == 1, f"the shipped file no longer has {old!r} once"
        text = text.replace(old, new)
    return text


@dataclass
class Proxy:
    url: str
    cert: Path
    access_log: Path
    receiver: Receiver


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    require_or_skip("nginx", nginx is not None, "apt-get install nginx-light")
    openssl = shutil.which("openssl")
    require_or_skip("openssl", openssl is not None, "apt-get install openssl")
    assert nginx is not None and openssl is not None
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    for sub in ("logs", "temp"):
        (tmp_path / sub).mkdir()
    with receiver(tmp_path / "callbacks", token=TOKEN, compact_interval=3600) as rc:
        port = _free_port()
        access_log = tmp_path / "logs" / "access.log"
        site = _rewrite(
            SHIPPED.read_text(encoding="utf-8"),
            {
                "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
                "/etc/ssl/certs/massiva-receiver.pem": str(cert),
                "/etc/ssl/private/massiva-receiver.key": str(key),
                "server 127.0.0.1:8080;": f"server 127.0.0.1:{rc.port};",
                "/var/log/nginx/massiva-receiver.access.log": str(access_log),
            },
        )
        (tmp_path / "site.conf").write_text(site, encoding="utf-8")
        temp = tmp_path / "temp"
        main = f"""
{"user root;" if os.geteuid() == 0 else ""}
daemon off;
worker_processes 1;
pid {tmp_path / "nginx.pid"};
error_log {tmp_path / "logs" / "error.log"} warn;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {temp / "body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};
    access_log off;
    include {tmp_path / "site.conf"};
}}
"""
        conf = tmp_path / "nginx.conf"
        conf.write_text(main, encoding="utf-8")
        base = [nginx, "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "logs/error.log")]
        check = subprocess.run([*base, "-t"], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stderr
        proc = subprocess.Popen(base, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            until = time.monotonic() + 30
            while True:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < until, "nginx did not start listening"
                    time.sleep(0.05)
            yield Proxy(f"https://127.0.0.1:{port}", cert, access_log, rc)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
            if proc.stderr is not None:
                proc.stderr.close()


def test_a_callback_through_the_proxy_is_stored_once(proxy: Proxy) -> None:
    with requests.Session() as http:
        http.trust_env = False
        url = f"{proxy.url}/recepcionsms"
        query = {"token": TOKEN, "id": "4711", "estatus": "1", "detalle": "584142122268"}
        for _ in range(2):  # the provider's retry of the same callback
            r = http.get(url, params=query, verify=str(proxy.cert), timeout=10)
            assert (r.status_code, r.text.strip()) == (200, "OK")
        r = http.post(url, data={"msg": "Hola", "phone": "584121234567"},
                      headers={"X-Massiva-Token": TOKEN}, verify=str(proxy.cert),
                      timeout=10)  # fmt: skip
        assert r.status_code == 200
        # The receiver's own refusals come through as they are.
        r = http.get(url, params={**query, "token": "wrong"}, verify=str(proxy.cert), timeout=10)
        assert r.status_code == 403
        assert http.get(f"{proxy.url}/health", verify=str(proxy.cert), timeout=10).ok
        assert http.get(f"{proxy.url}/other", verify=str(proxy.cert), timeout=10).status_code == 404
        big = {"msg": "x" * (70 * 1024), "phone": "1"}
        r = http.post(url, data=big, verify=str(proxy.cert), timeout=10)
        assert r.status_code == 413  # nginx's own bound, the receiver's size
    status = read_callbacks(proxy.receiver.logdir, kind="status")
    assert status["message_id"].tolist() == [4711]
    assert read_callbacks(proxy.receiver.logdir, kind="inbound")["text"].tolist() == ["Hola"]
    time.sleep(0.2)  # the access log is written after the answer
    log = proxy.access_log.read_text(encoding="utf-8")
    assert log.count('"GET /recepcionsms"') == 3 and '"POST /recepcionsms"' in log
    assert TOKEN not in log and "token" not in log


def test_a_missing_tool_skips_saying_how_to_install_it_unless_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MASSIVA_REQUIRE_NGINX_PLUS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install nginx-plus"):
        require_or_skip("nginx-plus", False, "apt-get install nginx-plus")
    monkeypatch.setenv("MASSIVA_REQUIRE_NGINX_PLUS", "1")
    with pytest.raises(pytest.fail.Exception, match="MASSIVA_REQUIRE_NGINX_PLUS=1"):
        require_or_skip("nginx-plus", False, "apt-get install nginx-plus")
    require_or_skip("nginx-plus", True, "apt-get install nginx-plus")  # present: nothing
