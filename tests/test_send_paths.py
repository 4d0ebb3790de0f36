"""Paths of a send that a plain run never takes, each against the sandbox with a real journal.

- the client's translation of a request that cannot be made (invalid URL or header:
  ``InputError``, never sent) and of a body that cannot be decoded (``ProtocolError``,
  may have been received), and what a send makes of each;
- the sending window closing in the middle of a run;
- a GET part too long for any URL, at send and at dispatch;
- a dispatch stopped by an account error.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest
import requests

from massiva_frames.errors import InputError, NoActivePlanError, ProtocolError
from massiva_frames.sandbox import Sandbox, sandbox
from massiva_frames.sending import campaign
from massiva_frames.sending.campaign import dispatch, send
from massiva_frames.sending.journal.sqlite import results_from_journal
from massiva_frames.wire.client import MassivaClient

if TYPE_CHECKING:
    from conftest import Scripted

PHONES = ["584141234567", "584241234567"]
CARACAS = "America/Caracas"


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with sandbox(credits=1_000, callback_delay=60) as server:
        yield server


def send_requests(sb: Sandbox) -> pd.DataFrame:
    reqs = sb.requests()
    return reqs[reqs["path"] == "/webservices/SendSms"].reset_index(drop=True)


def frame(n: int, text: str = "Hola") -> pd.DataFrame:
    phones = [f"0414{1000000 + i:07d}" for i in range(n)]
    return pd.DataFrame({"phone": phones, "msg": text}, index=[f"r{i}" for i in range(n)])


# --- requests that cannot be made, bodies that cannot be read -----------------------------


@pytest.mark.parametrize(
    "base_url",
    [
        "http://exa mple.test/webservices",  # a space in the host
        "http://a..b/webservices",  # an empty label
        "http://" + "a" * 64 + ".test/webservices",  # a label over 63 characters
    ],
)
def test_an_invalid_url_is_an_input_error_never_sent(base_url: str) -> None:
    with MassivaClient("ana@massiva.test", "Clave-Larga-123", base_url) as client:
        with pytest.raises(InputError, match="invalid request") as info:
            client.send_batch(PHONES, "Hola")
        assert type(info.value) is InputError  # not a transport error: never sent
        with pytest.raises(InputError):
            client.credits()


def test_an_invalid_header_is_an_input_error_and_nothing_reaches_the_server(
    sb: Sandbox,
) -> None:
    with requests.Session() as session:
        session.trust_env = False
        session.headers["X-Trace"] = "a\r\nInjected: 1"
        client = MassivaClient(sb.usuario, sb.clave, sb.base_url, session=session)
        for method in ("POST", "GET"):
            with pytest.raises(InputError, match="InvalidHeader"):
                client.send_batch(PHONES, "Hola", method=method)
    assert sb.requests().empty


def test_a_request_that_cannot_be_encoded_stays_scheduled_for_a_rerun(
    sb: Sandbox, tmp_path: Path
) -> None:
    # GSM-7 has "€", Latin-1 does not: valid rows that this client cannot send.
    df = frame(4, "Precio: 5 €")
    journal = tmp_path / "j.db"
    with MassivaClient(sb.usuario, sb.clave, sb.base_url, encoding="latin-1") as latin1:
        first = send(df, client=latin1, text="msg", journal=journal, max_phones=2, progress=False)
    assert (first["state"] == "scheduled").all()
    assert set(first["reason"]) == {"not_sent_input_error"}
    assert send_requests(sb).empty
    with MassivaClient(sb.usuario, sb.clave, sb.base_url) as utf8:
        again = send(df, client=utf8, text="msg", journal=journal, max_phones=2, progress=False)
    assert (again["state"] == "accepted").all()
    assert sorted(sb.messages()["phone"]) == sorted(again["phone"])
    assert set(sb.messages()["text"]) == {"Precio: 5 €"}


def _garbled(h: BaseHTTPRequestHandler) -> None:
    """Credits answer plainly; SendSms says gzip and sends something else."""
    if "obtenerCreditoDisponible" in h.path:
        body = b"<respuesta><creditos>1000</creditos><mensaje>ok</mensaje></respuesta>"
        headers = {}
    else:
        body = b"this is not gzip" + gzip.compress(b"<respuesta/>")[3:]
        headers = {"Content-Encoding": "gzip"}
    h.send_response(200)
    h.send_header("Content-Type", "text/xml")
    h.send_header("Content-Length", str(len(body)))
    for key, value in headers.items():
        h.send_header(key, value)
    h.end_headers()
    h.wfile.write(body)


def test_a_body_that_cannot_be_decoded_is_a_protocol_error_and_rows_unknown(
    scripted: Callable[[Callable[[BaseHTTPRequestHandler], None]], Scripted], tmp_path: Path
) -> None:
    server = scripted(_garbled)
    with MassivaClient(
        "ana@massiva.test", "Clave-Larga-123", server.base_url, timeout=(2, 5)
    ) as client:
        with pytest.raises(ProtocolError, match="could not be decoded") as info:
            client.send_batch(PHONES, "Hola")
        assert info.value.may_have_been_received
        before = server.hits
        results = send(frame(2), client=client, text="msg", journal=tmp_path / "j.db",
                       progress=False)  # fmt: skip
    assert server.hits == before + 2  # the credit check, then one request: not retried
    assert (results["state"] == "unknown").all()
    assert set(results["reason"]) == {"in_doubt_bad_response"}


# --- the window closes in the middle of a run -------------------------------------------


def test_the_window_closing_mid_run_leaves_the_rest_scheduled_for_its_next_opening(
    sb: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before_close = pd.Timestamp("2025-01-06 19:59:50", tz=CARACAS)
    after_close = pd.Timestamp("2025-01-06 20:00:01", tz=CARACAS)

    def clock(now: object) -> Callable[[], pd.Timestamp]:
        # The time moves past 20:00 once the sandbox has received two requests.
        return lambda: before_close if len(send_requests(sb)) < 2 else after_close

    monkeypatch.setattr(campaign, "make_clock", clock)
    journal = tmp_path / "j.db"
    with MassivaClient(sb.usuario, sb.clave, sb.base_url) as client:
        results = send(frame(8), client=client, text="msg", journal=journal,
                       window=("08:00", "20:00"), max_phones=2, concurrency=1,
                       progress=False)  # fmt: skip
        monkeypatch.undo()
        assert len(send_requests(sb)) == 2
        sent = results["state"] == "accepted"
        assert sent.sum() == 4 and (results.loc[~sent, "state"] == "scheduled").all()
        assert set(results.loc[~sent, "reason"]) == {"not_due"}
        assert not results.loc[~sent, "phone"].isin(sb.messages()["phone"]).any()
        # Not before the next opening, then exactly the rest, once.
        dispatch(journal, client=client, now=pd.Timestamp("2025-01-07 07:59", tz=CARACAS))
        assert len(send_requests(sb)) == 2
        done = dispatch(journal, client=client, now=pd.Timestamp("2025-01-07 08:00", tz=CARACAS))
    assert (done["state"] == "accepted").all() and len(send_requests(sb)) == 4
    assert sb.messages()["phone"].is_unique and len(sb.messages()) == 8


# --- a GET part too long for any URL ----------------------------------------------------

EMOJI = "😀" * 150  # 12 URL characters each: 1,800 of the 2,048


def test_a_get_part_too_long_for_any_url_is_invalid_and_never_sent(
    sb: Sandbox, tmp_path: Path
) -> None:
    df = frame(3)
    df.loc["r1", "msg"] = "😀" * 160  # 1,920 characters of URL for the text alone
    user = "notificaciones.clientes@massiva.test"
    sb.add_account(user, "clave-de-prueba", credits=100)
    with MassivaClient(user, "clave-de-prueba", sb.base_url, method="GET") as client:
        assert client.get_url_length(PHONES[:1], "😀" * 160) > 2048
        results = send(df, client=client, text="msg", journal=tmp_path / "j.db", progress=False)
    assert results["state"].tolist() == ["accepted", "invalid", "accepted"]
    assert results.loc["r1", "reason"] == "url_too_long"
    assert sorted(sb.messages()["phone"]) == sorted(results.loc[["r0", "r2"], "phone"])


def test_a_get_part_that_no_longer_fits_at_dispatch_stays_scheduled(
    sb: Sandbox, tmp_path: Path
) -> None:
    # Journalled with a short password; dispatched after it became a long one.
    long_password = "x" * 200
    sb.add_account("rotated@massiva.test", long_password, credits=100)
    df = frame(2, EMOJI)
    journal = tmp_path / "j.db"
    with MassivaClient(sb.usuario, sb.clave, sb.base_url, method="GET") as short:
        assert short.get_url_length(PHONES[:1], EMOJI) <= 2048
        first = send(df, client=short, text="msg", journal=journal, send_at="2025-01-06 13:00",
                     now=pd.Timestamp("2025-01-06 12:00", tz=CARACAS), max_phones=1,
                     progress=False)  # fmt: skip
    assert (first["state"] == "scheduled").all()
    with MassivaClient("rotated@massiva.test", long_password, sb.base_url) as rotated:
        assert rotated.get_url_length(PHONES[:1], EMOJI) > 2048
        late = dispatch(journal, client=rotated, now=pd.Timestamp("2025-01-06 13:00", tz=CARACAS))
    assert (late["state"] == "scheduled").all()
    assert set(late["reason"]) == {"not_sent_url_too_long"}
    assert send_requests(sb).empty
    assert late.attrs["send"]["requests"] == 0


# --- dispatch stopped by an account error -----------------------------------------------


def test_a_dispatch_stopped_by_an_account_error_records_what_went_and_keeps_the_rest(
    sb: Sandbox, tmp_path: Path
) -> None:
    journal = tmp_path / "j.db"
    noon = pd.Timestamp("2025-01-06 12:00", tz=CARACAS)
    with MassivaClient(sb.usuario, sb.clave, sb.base_url) as client:
        send(frame(6), client=client, text="msg", journal=journal, send_at="2025-01-06 13:00",
             now=noon, max_phones=2, concurrency=1, progress=False)  # fmt: skip
        assert send_requests(sb).empty
        calls: list[int] = []

        def lapse(done: int, total: int) -> None:
            calls.append(done)
            if len(calls) == 1:
                sb.set_plan(False)  # after the first request: the plan lapses

        at_one = pd.Timestamp("2025-01-06 13:00", tz=CARACAS)
        with pytest.raises(NoActivePlanError) as info:
            dispatch(journal, client=client, now=at_one, concurrency=1, progress=lapse)
        partial = info.value.results  # type: ignore[attr-defined]
        assert (partial["state"] == "accepted").sum() == 2
        stopped = partial[partial["state"] != "accepted"]
        assert (stopped["state"] == "scheduled").all()
        assert set(stopped["reason"]) <= {"not_sent_no_active_plan", "run_stopped"}
        assert "not_sent_no_active_plan" in set(stopped["reason"])
        assert len(send_requests(sb)) == 2  # nothing after the refusal
        assert not stopped["phone"].isin(sb.messages()["phone"]).any()
        pd.testing.assert_frame_equal(results_from_journal(journal), partial)
        sb.set_plan(True)
        done = dispatch(journal, client=client, now=at_one)
    assert (done["state"] == "accepted").all()
    assert sorted(sb.messages()["phone"]) == sorted(done["phone"])  # each phone once
