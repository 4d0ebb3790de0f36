"""The client's total deadline: from connect to the last body byte, headers included.

A scripted server answers one byte at a time, in the status line, the headers or the
body: each read is quick, so the read timeout never trips; the deadline does, and the
outcome is ambiguous (never resent), with no thread left behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest
import requests

from massiva_frames.errors import AmbiguousSendError, ConnectError, InputError
from massiva_frames.sending.campaign import send
from massiva_frames.wire.client import MassivaClient
from massiva_frames.wire.deadline import Exchange

if TYPE_CHECKING:
    from conftest import Scripted

PHONES = ["584141234567", "584241234567"]
ANSWER = (
    b"<respuesta><mensaje>ok</mensaje><status>2</status><telefonos>"
    b'<celular id="1" sid="a" status="0" num_celular="584141234567" texto="Hola"/>'
    b'<celular id="2" sid="b" status="0" num_celular="584241234567" texto="Hola"/>'
    b"</telefonos></respuesta>"
)
CREDITS = b"<respuesta><creditos>999</creditos><mensaje>ok</mensaje></respuesta>"


def _answer(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/xml\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def trickle(phase: str, every: float = 0.05, limit: float = 20.0) -> Callable[..., None]:
    """Answer SendSms one byte every ``every`` seconds from ``phase`` on (credits at once).

    The trickle stops after ``limit`` seconds or when the client has gone.
    """

    def respond(h: BaseHTTPRequestHandler) -> None:
        raw = _answer(CREDITS if "obtenerCredito" in h.path else ANSWER)
        start = {"status line": 0, "headers": raw.index(b"\r\n") + 2}.get(
            phase, raw.index(b"\r\n\r\n") + 4
        )
        if "obtenerCredito" in h.path:
            start = len(raw)
        h.close_connection = True
        try:
            h.wfile.write(raw[:start])
            h.wfile.flush()
            until = time.monotonic() + limit
            for i in range(start, len(raw)):
                if time.monotonic() > until:
                    return
                h.wfile.write(raw[i : i + 1])
                h.wfile.flush()
                time.sleep(every)
        except OSError:
            return  # the client shut the connection down

    return respond


def _deadline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "massiva-deadline"]


@pytest.mark.parametrize("phase", ["status line", "headers", "body"])
@pytest.mark.parametrize("method", ["POST", "GET"])
def test_a_trickling_answer_ends_at_the_deadline(
    scripted: Callable[..., Scripted], phase: str, method: str
) -> None:
    server = scripted(trickle(phase))
    # The trickle takes ~20 s; each byte arrives well within the 5 s read timeout.
    with MassivaClient("u@x.test", "pw", server.base_url, timeout=(2, 5), deadline=1.0) as c:
        start = time.monotonic()
        with pytest.raises(AmbiguousSendError, match="within the deadline of 1 s") as info:
            c.send_batch(PHONES, "Hola", method=method)
        elapsed = time.monotonic() - start
    assert 0.9 < elapsed < 4.0
    assert info.value.may_have_been_received
    assert server.hits == 1  # never retried
    assert _deadline_threads() == []


def test_an_answer_within_the_deadline_is_taken(scripted: Callable[..., Scripted]) -> None:
    # ~330 bytes at 2 ms: slow headers and body, complete well within the deadline.
    server = scripted(trickle("status line", every=0.002))
    with MassivaClient("u@x.test", "pw", server.base_url, timeout=(2, 5), deadline=10) as c:
        resp = c.send_batch(PHONES, "Hola")
        assert [cel.id for cel in resp.celulares] == [1, 2]
        for _ in range(20):  # kept-alive and fresh connections alike
            assert c.credits() == 999
    assert _deadline_threads() == []


def test_no_deadline_waits_for_the_whole_answer(scripted: Callable[..., Scripted]) -> None:
    server = scripted(trickle("headers", every=0.01))
    with MassivaClient("u@x.test", "pw", server.base_url, timeout=(2, 5), deadline=None) as c:
        start = time.monotonic()
        assert c.send_batch(PHONES, "Hola").status == 2
        assert time.monotonic() - start > 1.0  # ~280 bytes at 10 ms: over the 1 s below
    with MassivaClient("u@x.test", "pw", server.base_url, timeout=(2, 5), deadline=1) as c:
        with pytest.raises(AmbiguousSendError, match="deadline"):
            c.send_batch(PHONES, "Hola")


def test_a_session_passed_in_gets_the_deadline_on_the_body(
    scripted: Callable[..., Scripted],
) -> None:
    server = scripted(trickle("body"))
    with requests.Session() as session:
        session.trust_env = False
        with MassivaClient(
            "u@x.test", "pw", server.base_url, timeout=(2, 30), deadline=1, session=session
        ) as c:
            start = time.monotonic()
            with pytest.raises(AmbiguousSendError, match="deadline"):
                c.send_batch(PHONES, "Hola")
    assert time.monotonic() - start < 4.0


def test_a_refused_connection_is_still_a_connect_error(free_port: int) -> None:
    url = f"http://127.0.0.1:{free_port}/webservices"
    with MassivaClient("u@x.test", "pw", url, deadline=0.5, connect_retries=1) as c:
        with pytest.raises(ConnectError):
            c.send_batch(PHONES, "Hola")


def test_a_send_through_a_trickling_provider_ends_and_its_rows_are_unknown(
    scripted: Callable[..., Scripted], tmp_path: Any
) -> None:
    server = scripted(trickle("headers"))
    df = pd.DataFrame({"phone": ["04141234567", "04241234567", "04161234567"]})
    journal = tmp_path / "sends.db"
    with MassivaClient("u@x.test", "pw", server.base_url, timeout=(2, 5), deadline=1) as c:
        start = time.monotonic()
        results = send(df, client=c, template="Hola", journal=journal, max_phones=2,
                       concurrency=2, progress=False)  # fmt: skip
        elapsed = time.monotonic() - start
        assert elapsed < 5.0  # two batches in parallel, each cut at 1 s
        assert list(results["state"]) == ["unknown"] * 3
        assert (results["reason"] == "in_doubt_no_response").all()
        assert results["api_message"].str.contains("deadline").all()
        hits = server.hits
        again = send(df, client=c, template="Hola", journal=journal, progress=False)
    assert list(again["state"]) == ["unknown"] * 3
    assert server.hits == hits  # nothing sent again
    assert _deadline_threads() == []


@pytest.mark.parametrize("deadline", [0, -1, "60", True, float("nan")])
def test_bad_deadlines_are_refused(deadline: Any) -> None:
    with pytest.raises(InputError, match="deadline"):
        MassivaClient("u@x.test", "pw", "http://example.invalid", deadline=deadline)


def test_an_exchange_without_a_deadline_starts_no_thread() -> None:
    with Exchange(None) as exchange:
        assert _deadline_threads() == []
    assert not exchange.expired
    with Exchange(0.01) as exchange:
        assert len(_deadline_threads()) == 1
        time.sleep(0.1)
    assert exchange.expired and _deadline_threads() == []


def test_a_kept_alive_connection_is_watched_too() -> None:
    from massiva_frames.sandbox import sandbox

    with sandbox(usuario="u@x.test", clave="pw", hang_seconds=10) as sb:
        with MassivaClient("u@x.test", "pw", sb.base_url, timeout=(2, 5), deadline=1) as c:
            assert c.credits() > 0  # opens the connection the next request reuses
            sb.inject("hang", count=1)
            start = time.monotonic()
            with pytest.raises(AmbiguousSendError, match="deadline of 1 s"):
                c.send_batch(PHONES, "Hola")
            assert time.monotonic() - start < 3.0  # the read timeout is 5 s
            assert c.credits() > 0  # the next exchange gets a fresh connection
    assert _deadline_threads() == []
