"""How one answer or one error becomes the states of a batch's messages (docs/protocol.md §1, §5).

This mapping decides what a re-run sends again: ``pending`` (``scheduled``) only when the
request provably never reached the provider, ``unknown`` whenever it may have, and the
provider's own verdict per phone otherwise. Checked here directly, case by case, with the
exact fates, batch state, status and detail: one wrong branch would send a customer the
same text twice, or drop a row that was never sent.
"""

from __future__ import annotations

import pytest

from massiva_frames.errors import (
    AccountError,
    AmbiguousSendError,
    APIError,
    AuthenticationError,
    ConnectError,
    HTTPStatusError,
    InputError,
    InsufficientCreditsError,
    JournalBusyError,
    MissingFieldsError,
    NoActivePlanError,
    NothingSentError,
    ProtocolError,
    RateLimitedError,
    ResponseMismatchError,
    TransportError,
    URLTooLongError,
)
from massiva_frames.sending.journal.writes import Fate
from massiva_frames.sending.loop import Batch, _same_phone, outcomes, short_error
from massiva_frames.wire.protocol import SendResponse

AT = 1_700_000_000_000_000  # when the answer or error came back (µs)
REQUESTED = AT - 5_000_000  # when the request was committed in flight
IDS = [11, 12, 13]
PHONES = ("584141234567", "584247654321", "584125550001")
BATCH = Batch(number=7, ids=IDS, phones=PHONES, texts=("hola",))


def _map(result: SendResponse | BaseException) -> tuple[list[Fate], str, int | None, str | None]:
    return outcomes(BATCH, result, AT, REQUESTED)


# --- errors: never reached the provider -> pending, sent again by a re-run ----------------

NEVER_SENT = [
    (ConnectError("connection refused"), "not_sent_connect_failed"),
    (RateLimitedError("429 after retries", http_status=429), "not_sent_rate_limited"),
    (URLTooLongError("GET request of 3000 characters"), "not_sent_url_too_long"),
    (InputError("invalid header value"), "not_sent_input_error"),
    (JournalBusyError("another process sends"), "not_sent_input_error"),
]


@pytest.mark.parametrize(("exc", "reason"), NEVER_SENT, ids=lambda v: type(v).__name__)
def test_an_error_before_the_provider_leaves_the_rows_pending(
    exc: BaseException, reason: str
) -> None:
    assert _map(exc) == (
        [Fate("pending", reason, short_error(exc), None, IDS)],
        "not_sent",
        None,
        reason,
    )


# --- errors: the account refused -> pending, and the run stops ----------------------------

REFUSED = [
    (AuthenticationError(-1, "usuario o clave incorrecta"), "not_sent_authentication_failed"),
    (NoActivePlanError(-4, "sin plan"), "not_sent_no_active_plan"),
    (InsufficientCreditsError(-5, "sin saldo"), "not_sent_insufficient_credits"),
    (InsufficientCreditsError(-6), "not_sent_insufficient_credits"),
    (AccountError(-9, "cuenta suspendida"), "not_sent_account_error"),
]


@pytest.mark.parametrize(("exc", "reason"), REFUSED, ids=lambda v: type(v).__name__)
def test_an_account_refusal_leaves_the_rows_pending(exc: AccountError, reason: str) -> None:
    assert _map(exc) == (
        [Fate("pending", reason, exc.mensaje or None, None, IDS)],
        "refused",
        exc.code,
        reason,
    )


# --- errors: the request may have been received -> unknown, never sent again -------------

IN_DOUBT = [
    (HTTPStatusError("HTTP 500", http_status=500), "in_doubt_http_status"),
    (HTTPStatusError("HTTP 404", http_status=404), "in_doubt_http_status"),
    (AmbiguousSendError("read timed out"), "in_doubt_no_response"),
    (ProtocolError("not XML", http_status=200, excerpt="<html>"), "in_doubt_bad_response"),
    (ResponseMismatchError("3 entries for 2 phones"), "in_doubt_inconsistent"),
    (TransportError("something else in the transport"), "in_doubt_error"),
    (RuntimeError("a bug anywhere"), "in_doubt_error"),
    (KeyboardInterrupt(), "in_doubt_error"),
]


@pytest.mark.parametrize(("exc", "reason"), IN_DOUBT, ids=lambda v: type(v).__name__)
def test_an_error_after_the_request_may_have_arrived_makes_the_rows_unknown(
    exc: BaseException, reason: str
) -> None:
    # sent_at is when the request went out: the provider may have sent from then on
    assert _map(exc) == (
        [Fate("unknown", reason, short_error(exc), REQUESTED, IDS)],
        "unknown",
        None,
        reason,
    )


# --- errors: the provider answered "no" -> rejected --------------------------------------


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (MissingFieldsError(-2, "faltan campos"), "missing_fields"),
        (MissingFieldsError(-3), "missing_fields"),
        (NothingSentError(0, "nada enviado"), "api_error"),
        (APIError(-8, "otro"), "api_error"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_a_provider_error_status_rejects_the_rows(exc: APIError, reason: str) -> None:
    assert _map(exc) == ([Fate("rejected", reason, exc.mensaje, AT, IDS)], "done", exc.code, None)


# --- answers ------------------------------------------------------------------------------


def _answer(
    statuses: tuple[int, ...],
    numbers: tuple[str, ...] = PHONES,
    status: int = 3,
    mensaje: str = "ok",
) -> SendResponse:
    n = len(numbers)
    return SendResponse(
        status=status,
        mensaje=mensaje,
        ids=tuple(900 + k for k in range(n)),
        sids=tuple(f"s{k}" for k in range(n)),
        statuses=statuses,
        numbers=numbers,
        texts=("hola",) * n,
    )


def test_every_phone_accepted() -> None:
    assert _map(_answer((0, 0, 0))) == (
        [Fate("accepted", None, "ok", AT, IDS, [900, 901, 902], ["s0", "s1", "s2"])],
        "done",
        3,
        None,
    )


def test_each_phone_gets_its_own_verdict_and_ids() -> None:
    fates, state, status, detail = _map(_answer((0, 7, 0), status=2))
    assert fates == [
        Fate("accepted", None, "ok", AT, [11, 13], [900, 902], ["s0", "s2"]),
        Fate("rejected", "provider_rejected", "ok", AT, [12], [901], ["s1"]),
    ]
    assert (state, status, detail) == ("done", 2, None)


def test_every_phone_rejected_makes_no_empty_accepted_group() -> None:
    fates, state, _, _ = _map(_answer((4, 4, 4), status=0))
    assert fates == [
        Fate("rejected", "provider_rejected", "ok", AT, IDS, [900, 901, 902], ["s0", "s1", "s2"])
    ]
    assert state == "done"


def test_status_zero_without_entries_rejects_every_row() -> None:
    empty = SendResponse(status=0, mensaje="")
    assert _map(empty) == (
        [Fate("rejected", "provider_rejected", None, AT, IDS)],
        "done",
        0,
        None,
    )


def test_status_zero_keeps_the_providers_message() -> None:
    fates, _, _, _ = _map(SendResponse(status=0, mensaje="texto muy largo"))
    assert fates[0].api_message == "texto muy largo"


def test_phones_written_differently_but_the_same_digits_match() -> None:
    written = ("+58 414-123-4567", "58 424 7654321", "(58)4125550001")
    fates, state, _, detail = _map(_answer((0, 0, 0), numbers=written))
    assert [f.state for f in fates] == ["accepted"]
    assert (state, detail) == ("done", None)


@pytest.mark.parametrize(
    ("numbers", "problem"),
    [
        (PHONES[:2], "2 <celular> entries for 3 phones"),
        (PHONES + ("584120000000",), "4 <celular> entries for 3 phones"),
        ((PHONES[1], PHONES[0], PHONES[2]), "entry 0 is for"),
        ((PHONES[0], PHONES[1], "584125550002"), "entry 2 is for"),
    ],
    ids=["fewer", "more", "swapped", "other-phone"],
)
def test_an_answer_that_does_not_match_the_request_makes_every_row_unknown(
    numbers: tuple[str, ...], problem: str
) -> None:
    statuses = (0,) * len(numbers)
    fates, state, status, detail = _map(_answer(statuses, numbers=numbers))
    assert len(fates) == 1
    fate = fates[0]
    assert (fate.state, fate.reason, fate.sent_at, fate.ids) == (
        "unknown",
        "in_doubt_mismatch",
        REQUESTED,
        IDS,
    )
    assert fate.message_ids is None and fate.sids is None  # never misassigned
    assert fate.api_message is not None and problem in fate.api_message
    assert (state, status, detail) == ("unknown", 3, "in_doubt_mismatch")


@pytest.mark.parametrize(
    ("echoed", "sent", "same"),
    [
        ("584141234567", "584141234567", True),
        ("+58 414 1234567", "584141234567", True),
        ("584141234567", "+58-414-1234567", True),
        ("584141234568", "584141234567", False),
        ("58414123456", "584141234567", False),
        ("", "584141234567", False),
    ],
)
def test_same_phone(echoed: str, sent: str, same: bool) -> None:
    assert _same_phone(echoed, sent) is same


def test_short_error_names_the_type_and_is_bounded() -> None:
    assert short_error(ConnectError("refused")) == "ConnectError: refused"
    assert len(short_error(RuntimeError("x" * 1000))) == 300


def test_a_mismatch_is_logged_with_the_batch_and_the_problem(
    caplog: pytest.LogCaptureFixture,
) -> None:
    swapped = (PHONES[1], PHONES[0], PHONES[2])
    with caplog.at_level("WARNING", logger="massiva_frames.sending.campaign"):
        _map(_answer((0, 0, 0), numbers=swapped))
    assert [r.getMessage() for r in caplog.records] == [
        f"batch 7: response did not match the request: entry 0 is for {PHONES[1]!r}, "
        f"the request's phone is {PHONES[0]!r}; its 3 rows are unknown"
    ]
