"""Answers that contradict themselves are never taken as acceptances (docs/protocol.md §1).

Entries sharing an id, a negative or non-numeric id, an overall ``status`` that disagrees
with the entries: the parser and :func:`contradiction` say so, the client raises
:class:`ResponseMismatchError`, and a send makes the batch's rows ``unknown``
(``in_doubt_inconsistent``), which a re-run on the same journal does not send again.
"""

from __future__ import annotations

from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest

from massiva_frames.errors import (
    InsufficientCreditsError,
    ProtocolError,
    ResponseMismatchError,
)
from massiva_frames.sending.campaign import send
from massiva_frames.sending.loop import Batch, outcomes
from massiva_frames.wire.client import MassivaClient
from massiva_frames.wire.protocol import SendResponse, contradiction, parse_send_response

if TYPE_CHECKING:
    from conftest import Scripted

PHONES = ("584141234567", "584241234567", "584161234567")
CREDITS = b"<respuesta><creditos>999</creditos><mensaje>ok</mensaje></respuesta>"


def _xml(status: int | str, entries: list[tuple[str, int]]) -> bytes:
    """A SendSms answer for PHONES: ``entries`` are (id attribute, entry status) in order."""
    cels = "".join(
        f'<celular id="{mid}" sid="s{k}" status="{st}" num_celular="{PHONES[k]}" texto="Hola"/>'
        for k, (mid, st) in enumerate(entries)
    )
    return (
        f"<respuesta><mensaje>Envio Exitoso</mensaje><status>{status}</status>"
        f"<telefonos>{cels}</telefonos></respuesta>"
    ).encode()


# name -> (answer, what the explanation says)
INCONSISTENT: dict[str, tuple[bytes, str]] = {
    "two entries share an id": (
        _xml(3, [("101", 0), ("101", 0), ("102", 0)]),
        "entries 0 and 1 share the id 101",
    ),
    "an accepted and a rejected entry share an id": (
        _xml(2, [("101", 0), ("102", 0), ("101", 2)]),
        "entries 0 and 2 share the id 101",
    ),
    "a negative id": (_xml(3, [("101", 0), ("-102", 0), ("103", 0)]), "negative id (-102)"),
    "a non-numeric id": (_xml(3, [("101", 0), ("1O2", 0), ("103", 0)]), "not a number: '1O2'"),
    "a non-ASCII digit id": (_xml(3, [("101", 0), ("١٠٢", 0), ("103", 0)]), "not a number"),
    "a status above the accepted entries": (
        _xml(3, [("101", 0), ("102", 2), ("103", 0)]),
        "the status says 3 accepted, the entries say 2",
    ),
    "a status below the accepted entries": (
        _xml(1, [("101", 0), ("102", 0), ("103", 0)]),
        "the status says 1 accepted, the entries say 3",
    ),
    "status 0 beside accepted entries": (
        _xml(0, [("101", 0), ("102", 2), ("103", 2)]),
        "status 0 beside 1 accepted entries",
    ),
    "an error status beside accepted entries": (
        _xml(-5, [("101", 0), ("102", 0), ("103", 0)]),
        "status -5 beside 3 accepted entries",
    ),
    "a status and no entries": (_xml(3, []), "the status says 3 accepted, the entries say 0"),
}

CONSISTENT: dict[str, bytes] = {
    "all accepted": _xml(3, [("101", 0), ("102", 0), ("103", 0)]),
    "partly rejected": _xml(2, [("101", 0), ("102", 2), ("103", 0)]),
    "all rejected": _xml(0, [("101", 2), ("102", 2), ("103", 2)]),
    "rejected without ids": _xml(1, [("101", 0), ("N/A", 2), ("", 2)]),
    "an error without entries": _xml(-5, []),
}


def _respond(answer: bytes) -> Callable[[BaseHTTPRequestHandler], None]:
    def respond(h: BaseHTTPRequestHandler) -> None:
        body = CREDITS if "obtenerCredito" in h.path else answer
        h.send_response(200)
        h.send_header("Content-Type", "text/xml; charset=utf-8")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return respond


def _contradiction_of(body: bytes) -> str | None:
    try:
        return contradiction(parse_send_response(body))
    except ResponseMismatchError as exc:  # a non-numeric id is refused by the parser
        return str(exc)


@pytest.mark.parametrize("name", sorted(INCONSISTENT))
def test_contradiction_names_the_problem(name: str) -> None:
    body, explanation = INCONSISTENT[name]
    found = _contradiction_of(body)
    assert found is not None and explanation in found


@pytest.mark.parametrize("name", sorted(CONSISTENT))
def test_consistent_answers_have_no_contradiction(name: str) -> None:
    assert contradiction(parse_send_response(CONSISTENT[name])) is None


def test_a_non_numeric_id_is_a_mismatch_not_a_plain_protocol_error() -> None:
    with pytest.raises(ResponseMismatchError, match="contradicts itself") as info:
        parse_send_response(_xml(1, [("uno", 0)]), http_status=200)
    assert isinstance(info.value, ProtocolError) and info.value.may_have_been_received
    assert info.value.http_status == 200


@pytest.mark.parametrize("name", sorted(INCONSISTENT))
def test_the_client_raises_on_a_contradicting_answer(
    name: str, scripted: Callable[..., Scripted]
) -> None:
    body, explanation = INCONSISTENT[name]
    server = scripted(_respond(body))
    with MassivaClient("u@x.test", "pw", server.base_url) as c:
        with pytest.raises(ResponseMismatchError, match="contradicts itself") as info:
            c.send_batch(list(PHONES), "Hola")
    assert info.value.may_have_been_received
    assert explanation.split(":")[0] in str(info.value)
    assert server.hits == 1  # never retried


def test_an_error_status_without_accepted_entries_is_still_the_api_error(
    scripted: Callable[..., Scripted],
) -> None:
    server = scripted(_respond(CONSISTENT["an error without entries"]))
    with MassivaClient("u@x.test", "pw", server.base_url) as c:
        with pytest.raises(InsufficientCreditsError):
            c.send_batch(list(PHONES), "Hola")


@pytest.mark.parametrize("name", sorted(INCONSISTENT))
def test_a_send_makes_the_batch_unknown_and_a_rerun_sends_nothing(
    name: str, scripted: Callable[..., Scripted], tmp_path: Path
) -> None:
    body, _ = INCONSISTENT[name]
    server = scripted(_respond(body))
    df = pd.DataFrame({"phone": ["0" + p[2:] for p in PHONES]})
    journal = tmp_path / "sends.db"
    with MassivaClient("u@x.test", "pw", server.base_url) as c:
        results = send(df, client=c, template="Hola", journal=journal, progress=False)
        assert list(results["state"]) == ["unknown"] * 3
        assert (results["reason"] == "in_doubt_inconsistent").all()
        assert results["message_id"].isna().all()
        sends = len(server.bodies)
        again = send(df, client=c, template="Hola", journal=journal, progress=False)
    assert list(again["state"]) == ["unknown"] * 3
    assert len(server.bodies) == sends  # the re-run sent nothing


@pytest.mark.parametrize(
    "resp",
    [
        SendResponse(3, "ok", (1, 1, 2), ("a", "b", "c"), (0, 0, 0), PHONES, ("t",) * 3),
        SendResponse(3, "ok", (1, -2, 3), ("a", "b", "c"), (0, 0, 0), PHONES, ("t",) * 3),
        SendResponse(2, "ok", (1, 2, 3), ("a", "b", "c"), (0, 0, 0), PHONES, ("t",) * 3),
        SendResponse(0, "ok", (1, 2, 3), ("a", "b", "c"), (0, 2, 2), PHONES, ("t",) * 3),
    ],
)
def test_outcomes_checks_the_answer_itself(resp: SendResponse) -> None:
    # A client of another make may hand the loop an answer the parser would have flagged.
    batch = Batch(7, [11, 12, 13], PHONES, ("t",))
    fates, batch_state, _, detail = outcomes(batch, resp, at=2, requested_at=1)
    rows = [row for fate in fates for row in fate.rows()]
    assert [r[1] for r in rows] == ["unknown"] * 3
    assert [r[2] for r in rows] == ["in_doubt_inconsistent"] * 3
    assert (batch_state, detail) == ("unknown", "in_doubt_inconsistent")


def test_outcomes_of_a_mismatch_error_from_the_client() -> None:
    batch = Batch(7, [11, 12], PHONES[:2], ("t",))
    error = ResponseMismatchError("the answer contradicts itself: x", http_status=200)
    fates, batch_state, _, detail = outcomes(batch, error, at=2, requested_at=1)
    rows = [row for fate in fates for row in fate.rows()]
    assert [(r[1], r[2]) for r in rows] == [("unknown", "in_doubt_inconsistent")] * 2
    assert (batch_state, detail) == ("unknown", "in_doubt_inconsistent")
