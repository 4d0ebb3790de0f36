"""MassivaClient over real HTTP: the sandbox, plus a scripted server for odd answers."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

import pytest
import requests

from massiva_frames.errors import (
    AmbiguousSendError,
    APIError,
    AuthenticationError,
    ConnectError,
    HTTPStatusError,
    InputError,
    InsufficientCreditsError,
    MassivaError,
    MissingFieldsError,
    NoActivePlanError,
    ProtocolError,
    RateLimitedError,
    URLTooLongError,
)
from massiva_frames.faces.cli import EXIT_FAILURE, EXIT_OK, main
from massiva_frames.sandbox import Sandbox, sandbox
from massiva_frames.wire.client import MassivaClient
from massiva_frames.wire.protocol import MAX_RESPONSE_BYTES

if TYPE_CHECKING:
    from conftest import Scripted

SECRET = "s3cr3t-P@ss;|&="
USER = "ana@massiva.test"
LEAKS = (SECRET, quote_plus(SECRET, safe=""), quote(SECRET, safe=""), "s3cr3t-P%40")
METHODS = ["POST", "GET"]
PHONES = ["584141234567", "584241234567", "584161234567"]


def phones(n: int) -> list[str]:
    return [f"58414{1000000 + i:07d}" for i in range(n)]


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with sandbox(usuario=USER, clave=SECRET, callback_delay=60, hang_seconds=10) as server:
        yield server


@pytest.fixture
def client(sb: Sandbox) -> Iterator[MassivaClient]:
    with MassivaClient(USER, SECRET, sb.base_url, timeout=(2, 5), backoff_factor=0.01) as c:
        yield c


def n_requests(sb: Sandbox) -> int:
    return len(sb.requests())


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for leak in LEAKS:
            assert leak not in text, f"password leaked: {text[:300]!r}"


def assert_masked_error(err: BaseException) -> None:
    formatted = "".join(traceback.format_exception(err))
    assert_no_secret(str(err), repr(err), repr(err.args), formatted)
    # Not even a suppressed or chained exception object may quote the password.
    seen: list[BaseException] = [err]
    while seen and len(seen) < 50:
        exc = seen.pop()
        assert_no_secret(str(exc), repr(exc.args))
        seen += [e for e in (exc.__cause__, exc.__context__) if e is not None]


# --------------------------------------------------------------------------- happy paths


def test_credits(client: MassivaClient, sb: Sandbox) -> None:
    assert client.credits() == 1000
    sb.set_credits(7)
    assert client.credits() == 7
    last = sb.requests().iloc[-1]
    assert (last["method"], last["path"]) == ("GET", "/webservices/obtenerCreditoDisponible")


def test_credits_wrong_password(sb: Sandbox) -> None:
    with (
        MassivaClient(USER, "wrong", sb.base_url) as bad,
        pytest.raises(AuthenticationError) as info,
    ):
        bad.credits()
    assert info.value.code == -1


@pytest.mark.parametrize("method", METHODS)
def test_send_one_text_to_many(client: MassivaClient, sb: Sandbox, method: str) -> None:
    resp = client.send_batch([*PHONES, "786786786"], "Hola ñandú & co; 100%", method=method)
    assert resp.status == 3 and resp.ok
    assert [c.status for c in resp.celulares] == [0, 0, 0, 2]
    assert [c.num_celular for c in resp.celulares] == [*PHONES, "786786786"]
    assert resp.celulares[3].sid is None
    msgs = sb.messages()
    assert list(msgs["phone"]) == PHONES
    assert set(msgs["text"]) == {"Hola ñandú & co; 100%"}
    assert list(msgs["id"]) == [c.id for c in resp.celulares[:3]]
    assert sb.requests().iloc[-1]["method"] == method
    assert sb.credits() == 997


@pytest.mark.parametrize("method", METHODS)
def test_send_paired_texts(client: MassivaClient, sb: Sandbox, method: str) -> None:
    texts = ["uno; con punto y coma", "dos & tres", "cuatro = 4"]
    resp = client.send_batch(PHONES, texts, group="VIP", method=method)
    assert resp.status == 3
    assert [c.texto for c in resp.celulares] == texts
    msgs = sb.messages()
    assert dict(zip(msgs["phone"], msgs["text"], strict=True)) == dict(
        zip(PHONES, texts, strict=True)
    )
    assert set(msgs["grupo"]) == {"VIP"}


def test_default_method_is_post_and_get_is_configurable(sb: Sandbox) -> None:
    for method in METHODS:
        with MassivaClient(USER, SECRET, sb.base_url, method=method.lower()) as c:
            assert c.method == method
            c.send_batch(PHONES[:1], "Hola")
        assert sb.requests().iloc[-1]["method"] == method
    assert MassivaClient(USER, SECRET, sb.base_url).method == "POST"


def test_latin1_request_encoding(sb: Sandbox) -> None:
    with MassivaClient(USER, SECRET, sb.base_url, encoding="latin-1") as c:
        c.send_batch(PHONES[:1], "envío ñ")
        with pytest.raises(InputError, match="texto"):
            c.send_batch(PHONES[:1], "emoji \U0001f600")
    assert sb.messages()["text"].iloc[-1] == "envío ñ"
    assert sb.requests().iloc[-1]["charset"] == "latin-1"


def test_connections_are_reused(client: MassivaClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="urllib3.connectionpool")
    for method in (*METHODS, *METHODS):
        client.send_batch(PHONES, "Hola", method=method)
    client.credits()
    opened = [r for r in caplog.records if "Starting new HTTP" in r.getMessage()]
    assert len(opened) == 1


def test_threads_share_one_client(client: MassivaClient, sb: Sandbox) -> None:
    batches = [phones(30)[i : i + 3] for i in range(0, 30, 3)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda b: client.send_batch(b, "Hola"), batches))
    ids = [c.id for r in results for c in r.celulares]
    assert len(set(ids)) == 30
    assert sorted(sb.messages()["phone"]) == sorted(phones(30))


# --------------------------------------------------------------------------- status codes

STATUS_CASES: list[tuple[str, int, type[APIError]]] = [
    ("wrong password", -1, AuthenticationError),
    ("blank password", -2, MissingFieldsError),
    ("blank text", -3, MissingFieldsError),
    ("no plan", -4, NoActivePlanError),
    ("company out", -5, InsufficientCreditsError),
    ("user out", -6, InsufficientCreditsError),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("case", "code", "cls"), STATUS_CASES)
def test_error_statuses(
    sb: Sandbox, method: str, case: str, code: int, cls: type[APIError]
) -> None:
    clave, text = SECRET, "Hola"
    if case == "wrong password":
        clave = SECRET + "x"
    elif case == "blank password":
        clave = "   "
    elif case == "blank text":
        text = " "
    elif case == "no plan":
        sb.set_plan(False)
    elif case == "company out":
        sb.set_credits(100, company=1)
    elif case == "user out":
        sb.set_credits(1)
    with MassivaClient(USER, clave, sb.base_url, method=method) as c:
        with pytest.raises(cls) as info:
            c.send_batch(PHONES[:2], text)
    assert info.value.code == code
    assert info.value.mensaje  # the provider's own words are kept
    assert len(sb.messages()) == 0
    assert_masked_error(info.value)


@pytest.mark.parametrize("method", METHODS)
def test_status_zero_is_returned(client: MassivaClient, sb: Sandbox, method: str) -> None:
    resp = client.send_batch(["786786786", "877668"], "Hola", method=method)
    assert resp.status == 0 and not resp.ok
    assert [(c.sid, c.status) for c in resp.celulares] == [(None, 2), (None, 2)]
    assert len(sb.messages()) == 0


# --------------------------------------------------------------------------- GET bound


def test_get_url_length_is_exact_and_bound_is_enforced_before_io(
    client: MassivaClient, sb: Sandbox
) -> None:
    batch, text = None, None
    for n in range(100, 140):  # find a batch whose GET URL is exactly 2048 characters
        for k in range(1, 161):
            if client.get_url_length(phones(n), "x" * k) == 2048:
                batch, text = phones(n), "x" * k
                break
        if batch:
            break
    assert batch is not None and text is not None
    resp = client.send_batch(batch, text, method="GET")
    assert resp.status == len(batch)
    last = sb.requests().iloc[-1]
    assert (last["method"], last["url_length"], last["http_status"]) == ("GET", 2048, 200)

    before = n_requests(sb)
    with pytest.raises(URLTooLongError, match="2049"):
        client.send_batch(batch, text + "x", method="GET")
    assert n_requests(sb) == before
    # POST has no such bound.
    assert client.send_batch(batch, text + "x").status == len(batch)


# --------------------------------------------------------------------------- faults


def test_connect_refused_is_retried_then_connect_error(
    free_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{free_port}/webservices"
    start = time.monotonic()
    with MassivaClient(USER, SECRET, url, connect_retries=2, backoff_factor=0.01) as c:
        with pytest.raises(ConnectError) as info:
            c.send_batch(PHONES, "Hola")
    assert time.monotonic() - start < 5  # no long backoff
    err = info.value
    assert not err.may_have_been_received
    assert "3 attempts" in str(err)
    retries = [r for r in caplog.records if "Retrying" in r.getMessage()]
    assert len(retries) == 2


def test_latency_under_the_timeout_succeeds(client: MassivaClient, sb: Sandbox) -> None:
    sb.inject("latency", count=1, seconds=0.3)
    start = time.monotonic()
    assert client.send_batch(PHONES, "Hola").status == 3
    assert time.monotonic() - start >= 0.3


@pytest.mark.parametrize("fault", ["http500", "http502"])
def test_server_errors_are_not_retried(client: MassivaClient, sb: Sandbox, fault: str) -> None:
    sb.inject(fault, count=1)
    with pytest.raises(HTTPStatusError) as info:
        client.send_batch(PHONES, "Hola")
    assert info.value.http_status == int(fault[4:])
    assert info.value.may_have_been_received
    assert n_requests(sb) == 1
    assert len(sb.messages()) == 3  # processed before the error page: rows are in doubt


def test_503_with_retry_after_waits_and_succeeds(client: MassivaClient, sb: Sandbox) -> None:
    sb.inject("http503", count=1, retry_after=1)
    start = time.monotonic()
    assert client.send_batch(PHONES, "Hola").status == 3
    assert time.monotonic() - start >= 0.9
    assert list(sb.requests()["http_status"]) == [503, 200]
    assert len(sb.messages()) == 3


def test_503_without_retry_after_is_an_http_error(client: MassivaClient, sb: Sandbox) -> None:
    sb.inject("http503", count=1)
    with pytest.raises(HTTPStatusError) as info:
        client.send_batch(PHONES, "Hola")
    assert info.value.http_status == 503
    assert n_requests(sb) == 1


@pytest.mark.parametrize("retry_after", [0, None])
def test_429_is_waited_out(client: MassivaClient, sb: Sandbox, retry_after: int | None) -> None:
    sb.inject("http429", count=2, retry_after=retry_after)
    assert client.send_batch(PHONES, "Hola").status == 3
    assert list(sb.requests()["http_status"]) == [429, 429, 200]


def test_429_exhausted_is_rate_limited(sb: Sandbox) -> None:
    sb.inject("http429", retry_after=0)
    with MassivaClient(USER, SECRET, sb.base_url, max_refusals=2) as c:
        with pytest.raises(RateLimitedError) as info:
            c.send_batch(PHONES, "Hola")
        with pytest.raises(RateLimitedError):
            c.credits()
    assert info.value.http_status == 429 and not info.value.may_have_been_received
    assert n_requests(sb) == 6
    assert len(sb.messages()) == 0


@pytest.mark.parametrize("method", METHODS)
def test_hang_is_ambiguous_and_not_retried(sb: Sandbox, method: str) -> None:
    sb.inject("hang", count=1)
    start = time.monotonic()
    with MassivaClient(USER, SECRET, sb.base_url, timeout=(2, 0.5)) as c:
        with pytest.raises(AmbiguousSendError) as info:
            c.send_batch(PHONES, "Hola", method=method)
    assert 0.4 < time.monotonic() - start < 5  # the server would hang 10 s
    assert type(info.value) is AmbiguousSendError and info.value.may_have_been_received
    assert "read timeout" in str(info.value)
    assert n_requests(sb) == 1
    assert len(sb.messages()) == 3  # the provider did send them


@pytest.mark.parametrize("before", [False, True])
def test_reset_is_ambiguous(client: MassivaClient, sb: Sandbox, before: bool) -> None:
    sb.inject("reset", count=1, before=before)
    with pytest.raises(AmbiguousSendError) as info:
        client.send_batch(PHONES, "Hola")
    assert type(info.value) is AmbiguousSendError
    assert n_requests(sb) == 1
    assert len(sb.messages()) == (0 if before else 3)
    assert client.send_batch(PHONES, "Hola").status == 3  # the pool recovers


@pytest.mark.parametrize(("fault", "match"), [("truncated", "well-formed"), ("html", "HTML")])
def test_bad_bodies_are_protocol_errors(
    client: MassivaClient, sb: Sandbox, fault: str, match: str
) -> None:
    sb.inject(fault, count=2)
    with pytest.raises(ProtocolError, match=match) as info:
        client.send_batch(PHONES, "Hola")
    assert info.value.http_status == 200 and info.value.may_have_been_received
    with pytest.raises(ProtocolError):
        client.credits()


# --------------------------------------------------------------------------- odd servers


def _answer(status: int, body: bytes, headers: dict[str, str] | None = None) -> Callable[..., None]:
    def respond(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(body)

    return respond


def test_redirects_are_not_followed(scripted: Callable[..., Scripted]) -> None:
    server = scripted(_answer(307, b"", {"Location": "http://127.0.0.1:9/steal"}))
    with MassivaClient(USER, SECRET, server.base_url) as c:
        with pytest.raises(HTTPStatusError) as info:
            c.send_batch(PHONES, "Hola")
    assert info.value.http_status == 307 and server.hits == 1


def test_oversized_declared_body_is_refused(scripted: Callable[..., Scripted]) -> None:
    def respond(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(MAX_RESPONSE_BYTES + 1))
        h.end_headers()
        h.wfile.write(b"<respuesta>")  # the client must stop before reading the rest

    server = scripted(respond)
    with MassivaClient(USER, SECRET, server.base_url, timeout=(2, 2)) as c:
        with pytest.raises(ProtocolError, match="too large"):
            c.credits()


def test_oversized_chunked_body_is_refused(scripted: Callable[..., Scripted]) -> None:
    def respond(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        chunk = b"x" * 1024 * 1024
        try:
            for _ in range(MAX_RESPONSE_BYTES // len(chunk) + 2):
                h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            h.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client hung up, as it should

    server = scripted(respond)
    with MassivaClient(USER, SECRET, server.base_url, timeout=(2, 5)) as c:
        with pytest.raises(ProtocolError, match="too large"):
            c.credits()


def test_body_cut_off_mid_read_is_ambiguous(scripted: Callable[..., Scripted]) -> None:
    def respond(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "5000")
        h.end_headers()
        h.wfile.write(b"<respuesta><status>1</status>")
        h.close_connection = True

    server = scripted(respond)
    with MassivaClient(USER, SECRET, server.base_url) as c:
        with pytest.raises(AmbiguousSendError, match="connection lost"):
            c.send_batch(PHONES, "Hola")
    assert server.hits == 1


def test_trickling_body_is_bounded_by_the_read_timeout(scripted: Callable[..., Scripted]) -> None:
    def respond(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "100")
        h.end_headers()
        try:
            for _ in range(100):  # one byte every 0.1 s: each read is quick, the whole is not
                h.wfile.write(b" ")
                h.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    server = scripted(respond)
    start = time.monotonic()
    with MassivaClient(USER, SECRET, server.base_url, timeout=(2, 0.5)) as c:
        with pytest.raises(AmbiguousSendError, match="longer than"):
            c.send_batch(PHONES, "Hola")
    assert time.monotonic() - start < 5  # the trickle lasts 10 s


def test_retry_after_http_date_and_cap(scripted: Callable[..., Scripted]) -> None:
    server = scripted(_answer(429, b"slow down", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    with MassivaClient(USER, SECRET, server.base_url, max_refusals=1) as c:
        start = time.monotonic()
        with pytest.raises(RateLimitedError):
            c.credits()
        assert time.monotonic() - start < 3  # a date in the past means "now"
        assert c._refusal_delay("86400", 0) == 30.0
        assert 0.05 <= c._refusal_delay("soon", 0) <= 0.31
    assert server.hits == 2


def test_echoed_password_in_error_page_is_masked(scripted: Callable[..., Scripted]) -> None:
    page = f"<html><body>bad request: clave={quote_plus(SECRET)}</body></html>".encode()
    server = scripted(_answer(400, page))
    for method in METHODS:
        with MassivaClient(USER, SECRET, server.base_url, method=method) as c:
            with pytest.raises(HTTPStatusError) as info:
                c.send_batch(PHONES, "Hola")
        assert "clave=***" in str(info.value)
        assert_masked_error(info.value)


# --------------------------------------------------------------------------- masking


def _provoke(
    sb: Sandbox, case: str, method: str, free_port: int
) -> tuple[MassivaClient, Callable[[], object]]:
    url = sb.base_url
    timeout: tuple[float, float] = (2, 5)
    if case == "connect":
        url = f"http://127.0.0.1:{free_port}/webservices"
    elif case == "hang":
        sb.inject("hang", count=1)
        timeout = (2, 0.3)
    elif case == "rate":
        sb.inject("http429", retry_after=0)
    elif case != "ok":
        sb.inject(case, count=1)
    c = MassivaClient(USER, SECRET, url, method=method, timeout=timeout, backoff_factor=0.01)
    return c, lambda: c.send_batch(PHONES, "Hola")


MASK_CASES = ["ok", "connect", "hang", "reset", "truncated", "html", "http500", "rate"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", MASK_CASES)
def test_password_never_leaks(
    sb: Sandbox, caplog: pytest.LogCaptureFixture, free_port: int, method: str, case: str
) -> None:
    caplog.set_level(logging.DEBUG)
    client, call = _provoke(sb, case, method, free_port)
    with client:
        assert_no_secret(repr(client), str(vars(client)), str(client.__dict__))
        if case == "ok":
            call()
            client.credits()
        else:
            with pytest.raises(MassivaError) as info:
                call()
            assert_masked_error(info.value)
            cause = info.value.__cause__
            if case in ("connect", "hang", "reset"):
                if method == "GET":
                    # urllib3's errors quote a GET's URL: they are not chained.
                    assert cause is None and info.value.__context__ is None
                else:
                    assert isinstance(cause, requests.RequestException)
    assert_no_secret(caplog.text, *(str(r.args) for r in caplog.records))
    ours = [r for r in caplog.records if r.name == "massiva_frames.wire.client"]
    assert ours and all(r.levelno <= logging.INFO for r in ours)
    if case in ("ok", "connect") and method == "GET":
        # urllib3 did log the URL (so the check above could fail), masked.
        assert any(
            r.name.startswith("urllib3") and "clave=***" in r.getMessage() for r in caplog.records
        )


def test_debug_log_line(client: MassivaClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="massiva_frames.wire.client")
    client.send_batch(PHONES, "Hola")
    lines = [r.getMessage() for r in caplog.records if r.name == "massiva_frames.wire.client"]
    assert len(lines) == 1
    assert lines[0].startswith("POST /webservices/SendSms phones=3 -> HTTP 200 in ")


# --------------------------------------------------------------------------- settings


def test_credentials_from_environment(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASSIVA_USUARIO", USER)
    monkeypatch.setenv("MASSIVA_CLAVE", SECRET)
    monkeypatch.setenv("MASSIVA_BASE_URL", sb.base_url + "/")
    with MassivaClient() as c:
        assert (c.usuario, c.base_url) == (USER, sb.base_url)
        assert c.send_url == sb.base_url + "/SendSms"
        assert c.credit_url == sb.base_url + "/obtenerCreditoDisponible"
        assert c.credits() == 1000


@pytest.mark.parametrize("missing", ["MASSIVA_USUARIO", "MASSIVA_CLAVE"])
def test_missing_credentials_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.setenv("MASSIVA_USUARIO", USER)
    monkeypatch.setenv("MASSIVA_CLAVE", SECRET)
    monkeypatch.delenv(missing)
    with pytest.raises(InputError, match=missing):
        MassivaClient()


def test_environment_proxies_are_ignored_unless_trusted(
    sb: Sandbox, free_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port}")
    with MassivaClient(USER, SECRET, sb.base_url) as c:
        assert c.credits() == 1000
    with MassivaClient(USER, SECRET, sb.base_url, trust_env=True, backoff_factor=0.01) as c:
        with pytest.raises(ConnectError) as info:
            c.credits()
    assert_masked_error(info.value)


def test_default_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MASSIVA_BASE_URL", raising=False)
    c = MassivaClient(USER, SECRET)
    assert c.send_url == "http://www.sistema.massivamovil.com/webservices/SendSms"
    c.close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "PUT"}, "method"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": (1, -1)}, "timeout"),
        ({"connect_retries": -1}, "connect_retries"),
        ({"max_refusals": 1.5}, "max_refusals"),
        ({"backoff_factor": -1}, "backoff_factor"),
        ({"encoding": "klingon"}, "encoding"),
        ({"base_url": "ftp://example.com"}, "http"),
        ({"base_url": "http://u:pw@example.com/ws"}, "credentials"),
    ],
)
def test_bad_options(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InputError, match=match):
        MassivaClient(USER, SECRET, **kwargs)


def test_bad_batch_arguments(client: MassivaClient, sb: Sandbox) -> None:
    with pytest.raises(InputError):
        client.send_batch([], "Hola")
    with pytest.raises(InputError):
        client.send_batch(PHONES, ["uno", "dos"])
    with pytest.raises(InputError):
        client.send_batch(PHONES[:1], "Hola", method="DELETE")
    assert n_requests(sb) == 0


def test_passed_session_is_used_and_left_open(sb: Sandbox) -> None:
    session = requests.Session()
    with MassivaClient(USER, SECRET, sb.base_url, session=session) as c:
        assert c.credits() == 1000
    adapter = session.get_adapter("http://")
    assert adapter.poolmanager.pools  # type: ignore[attr-defined]
    session.close()


def test_close_releases_the_pool(sb: Sandbox) -> None:
    c = MassivaClient(USER, SECRET, sb.base_url)
    c.credits()
    adapter = c._session.get_adapter("http://")
    assert adapter.poolmanager.pools  # type: ignore[attr-defined]
    c.close()
    assert not adapter.poolmanager.pools  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- CLI


def test_cli_credits(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MASSIVA_USUARIO", USER)
    monkeypatch.setenv("MASSIVA_CLAVE", SECRET)
    assert main(["credits", "--base-url", sb.base_url]) == EXIT_OK
    assert capsys.readouterr().out == "1000\n"


@pytest.mark.parametrize("problem", ["wrong password", "no server", "no credentials"])
def test_cli_credits_failures(
    sb: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    free_port: int,
    problem: str,
) -> None:
    monkeypatch.setenv("MASSIVA_USUARIO", USER)
    monkeypatch.setenv("MASSIVA_CLAVE", SECRET + "x" if problem == "wrong password" else SECRET)
    url = sb.base_url if problem != "no server" else f"http://127.0.0.1:{free_port}/webservices"
    if problem == "no credentials":
        monkeypatch.delenv("MASSIVA_CLAVE")
    assert main(["credits", "--base-url", url]) == EXIT_FAILURE
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("massiva-frames credits: ")
    assert "Traceback" not in err
    assert_no_secret(err)
    expected = {
        "wrong password": "AuthenticationError",
        "no server": "ConnectError",
        "no credentials": "MASSIVA_CLAVE",
    }
    assert expected[problem] in err
