"""HTTPS: the sandbox's application behind TLS, with a CA and certificates made for the test.

A certificate the client cannot verify stops the handshake before any request is sent:
a :class:`ConnectError`, the rows stay ``scheduled``. A CA the client is told to trust
(a session's ``verify``, or ``REQUESTS_CA_BUNDLE`` with ``trust_env=True``) lets it through.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pandas as pd
import pytest
import requests

from massiva_frames.errors import ConnectError
from massiva_frames.sandbox import Sandbox, sandbox
from massiva_frames.sending.campaign import send
from massiva_frames.sending.journal.sqlite import results_from_journal
from massiva_frames.wire.client import MassivaClient

PHONES = ["584141234567", "584241234567"]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ca.pem`` (a test CA), ``server.pem``/``server.key`` (127.0.0.1 and localhost,
    signed by it), ``self.pem``/``self.key`` (self-signed, trusted by no one)."""
    if shutil.which("openssl") is None:
        reason = "the openssl command is not installed (apt-get install openssl)"
        if os.environ.get("MASSIVA_REQUIRE_OPENSSL") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    d = tmp_path_factory.mktemp("certs")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=massiva-frames test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)  # fmt: skip
    (d / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=localhost", cwd=d)  # fmt: skip
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2",
             "-extfile", "server.ext", cwd=d)  # fmt: skip
    _openssl("req", "-x509", *ec, "-keyout", "self.key", "-out", "self.pem", "-days", "2",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", cwd=d)  # fmt: skip
    return d


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class TLSSandbox:
    """The sandbox's WSGI application served over HTTPS with ``cert``/``key``."""

    def __init__(self, sb: Sandbox, cert: Path, key: Path) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server = make_server(
            "127.0.0.1", 0, sb._app, server_class=_Server, handler_class=_Quiet
        )
        # A handshake the client aborts raises in accept(); socketserver drops it.
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.base_url = f"https://127.0.0.1:{self.server.server_address[1]}/webservices"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with sandbox(credits=100, callback_delay=60) as server:
        yield server


@pytest.fixture
def tls(sb: Sandbox, certs: Path) -> Iterator[TLSSandbox]:
    server = TLSSandbox(sb, certs / "server.pem", certs / "server.key")
    yield server
    server.close()


def n_requests(sb: Sandbox) -> int:
    return len(sb.requests())


def test_an_unknown_ca_is_a_connect_error_and_nothing_reaches_the_server(
    sb: Sandbox, tls: TLSSandbox
) -> None:
    with MassivaClient(sb.usuario, sb.clave, tls.base_url, backoff_factor=0.01) as client:
        with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED") as info:
            client.send_batch(PHONES, "Hola")
        assert not info.value.may_have_been_received
        with pytest.raises(ConnectError):
            client.credits()
    assert n_requests(sb) == 0


def test_a_self_signed_certificate_is_refused_even_with_the_ca_trusted(
    sb: Sandbox, certs: Path
) -> None:
    server = TLSSandbox(sb, certs / "self.pem", certs / "self.key")
    try:
        with requests.Session() as session:
            session.trust_env = False  # else REQUESTS_CA_BUNDLE, when set, overrides verify
            session.verify = str(certs / "ca.pem")
            client = MassivaClient(sb.usuario, sb.clave, server.base_url, session=session)
            with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                client.send_batch(PHONES, "Hola")
    finally:
        server.close()
    assert n_requests(sb) == 0


def test_a_trusted_ca_passes(sb: Sandbox, tls: TLSSandbox, certs: Path) -> None:
    with requests.Session() as session:
        session.trust_env = False  # else REQUESTS_CA_BUNDLE, when set, overrides verify
        session.verify = str(certs / "ca.pem")
        client = MassivaClient(sb.usuario, sb.clave, tls.base_url, session=session)
        assert client.credits() == 100
        resp = client.send_batch(PHONES, "Hola")
    assert resp.status == 2 and list(resp.numbers) == PHONES
    assert sorted(sb.messages()["phone"]) == PHONES


def test_a_ca_bundle_from_the_environment_is_honoured_only_when_trusted(
    sb: Sandbox, tls: TLSSandbox, certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certs / "ca.pem"))
    with MassivaClient(sb.usuario, sb.clave, tls.base_url, backoff_factor=0.01) as client:
        with pytest.raises(ConnectError):
            client.credits()  # trust_env is off by default
    with MassivaClient(sb.usuario, sb.clave, tls.base_url, trust_env=True) as client:
        assert client.credits() == 100


def test_a_send_to_an_unverified_server_leaves_every_row_for_a_rerun(
    sb: Sandbox, tls: TLSSandbox, certs: Path, tmp_path: Path
) -> None:
    df = pd.DataFrame({"phone": ["04141234567", "04241234567", "04161234567"], "msg": "Hola"})
    journal = tmp_path / "j.db"
    with MassivaClient(sb.usuario, sb.clave, tls.base_url, backoff_factor=0.01) as client:
        with pytest.raises(ConnectError):  # the credit check before the send
            send(df, client=client, text="msg", journal=journal, progress=False)
    assert n_requests(sb) == 0
    assert (results_from_journal(journal)["state"] == "scheduled").all()
    with requests.Session() as session:
        session.trust_env = False  # else REQUESTS_CA_BUNDLE, when set, overrides verify
        session.verify = str(certs / "ca.pem")
        client = MassivaClient(sb.usuario, sb.clave, tls.base_url, session=session)
        results = send(df, client=client, text="msg", journal=journal, progress=False)
    assert (results["state"] == "accepted").all()
    assert sorted(sb.messages()["phone"]) == sorted(results["phone"])
