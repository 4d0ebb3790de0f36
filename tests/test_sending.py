"""send() and dispatch() over real HTTP against the sandbox, with a real journal: most tests
run twice, on a SQLite file and on PostgreSQL (``journal_at``)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pg_server import JournalAt

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
    ProtocolError,
    RateLimitedError,
    URLTooLongError,
)
from massiva_frames.sandbox import Sandbox, sandbox
from massiva_frames.sending.campaign import dispatch, results_from_journal, send
from massiva_frames.sending.loop import Batch, outcomes
from massiva_frames.sending.results import RESULT_COLUMNS, RESULT_DTYPES
from massiva_frames.wire.client import MassivaClient

FINAL = {"accepted", "rejected", "invalid", "suppressed", "unknown"}
NAMES = ["Ana", "Luis", "María", "José", "Eva", "Bob", "Zoë", "Iñaki"]


def campaign_frame(
    n_valid: int, *, n_invalid: int = 0, n_dup: int = 0, seed: int = 0
) -> pd.DataFrame:
    """Customers with messy phones: valid ones, invalid ones, duplicates; shuffled labels."""
    rng = random.Random(seed)
    formats = ["0{op}-{num}", "+58 {op} {num}", "58{op}{num}", "({op}) {num}", "0{op}{num}"]
    ops = ["412", "414", "416", "424", "426"]
    rows: list[dict[str, Any]] = []
    for i in range(n_valid):
        op, num = ops[i % 5], f"{1000000 + i:07d}"
        rows.append(
            {"tel": rng.choice(formats).format(op=op, num=num), "nombre": NAMES[i % len(NAMES)]}
        )
    bad = ["0212-5551234", "123", "", None, "04141234", "hola", "0414-123456789", "0999-1234567"]
    rows += [{"tel": bad[i % len(bad)], "nombre": "X"} for i in range(n_invalid)]
    rows += [dict(rows[rng.randrange(n_valid)]) for _ in range(n_dup)]
    rng.shuffle(rows)
    frame = pd.DataFrame(rows)
    frame.index = pd.Index(
        [f"c{rng.randrange(10**9):09d}-{i}" for i in range(len(frame))], name="cid"
    )
    return frame


def send_requests(sb: Sandbox) -> int:
    reqs = sb.requests()
    return int((reqs["path"] == "/webservices/SendSms").sum())


def assert_matches_sandbox(results: pd.DataFrame, sb: Sandbox) -> None:
    """The sandbox's accepted messages are exactly the accepted rows: ids, phones, texts."""
    messages = sb.messages()
    accepted = results[results["state"] == "accepted"]
    assert messages["id"].is_unique
    assert sorted(messages["id"]) == sorted(accepted["message_id"].astype(int))
    by_id = messages.set_index("id")
    got = by_id.loc[accepted["message_id"].astype(int).to_numpy()]
    assert list(got["phone"]) == list(accepted["phone"])
    assert list(got["text"]) == list(accepted["text"])


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with sandbox(credits=100_000, callback_delay=60, hang_seconds=10) as server:
        yield server


@pytest.fixture
def client(sb: Sandbox) -> Iterator[MassivaClient]:
    with MassivaClient(
        sb.usuario, sb.clave, sb.base_url, timeout=(2, 2), backoff_factor=0.01, max_refusals=1
    ) as c:
        yield c


TEMPLATE = "Hola {nombre}, su pedido está listo"


# --- the acceptance run ------------------------------------------------------------------


def test_ten_thousand_rows_match_the_sandbox_and_rerun_sends_nothing(
    sb: Sandbox, client: MassivaClient, journal_at: JournalAt
) -> None:
    df = campaign_frame(8_000, n_invalid=1_000, n_dup=1_000, seed=1)
    journal = journal_at()
    results = send(
        df, client=client, phone="tel", template=TEMPLATE, journal=journal, progress=False
    )
    assert len(results) == len(df)
    pd.testing.assert_index_equal(results.index, df.index)
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert results.dtypes.to_dict() == RESULT_DTYPES
    counts = results["state"].value_counts()
    assert counts["accepted"] == 8_000
    assert counts["invalid"] == 1_000
    assert counts["suppressed"] == 1_000
    assert set(results["state"].unique()) <= FINAL
    assert results.loc[results["state"] != "accepted", "reason"].notna().all()
    assert_matches_sandbox(results, sb)
    summary = results.attrs["send"]
    assert summary["requests"] == send_requests(sb)
    assert summary["requests"] <= 8_000 // 500 + len(NAMES)

    before = len(sb.requests())
    again = send(df, client=client, phone="tel", template=TEMPLATE, journal=journal, progress=False)
    assert len(sb.requests()) == before  # not even the credit query
    pd.testing.assert_frame_equal(again, results)
    pd.testing.assert_frame_equal(results_from_journal(journal), results)
    assert len(sb.messages()) == 8_000
    # the same rows joined back onto the input
    joined = df.join(results[["state", "message_id"]])
    assert len(joined) == len(df)


def test_new_rows_are_added_to_an_existing_journal(
    sb: Sandbox, client: MassivaClient, journal_at: JournalAt
) -> None:
    df = campaign_frame(30, seed=2)
    journal = journal_at()
    first = send(
        df.iloc[:20], client=client, phone="tel", template=TEMPLATE, journal=journal, progress=False
    )
    assert (first["state"] == "accepted").all()
    both = send(df, client=client, phone="tel", template=TEMPLATE, journal=journal, progress=False)
    assert (both["state"] == "accepted").all()
    pd.testing.assert_frame_equal(both.iloc[:20], first)
    assert len(sb.messages()) == 30
    assert_matches_sandbox(both, sb)


def test_no_journal_still_gives_results(sb: Sandbox, client: MassivaClient) -> None:
    df = pd.DataFrame({"phone": ["04141234567", "04241234567"], "msg": ["Hola", "Chao"]})
    results = send(df, client=client, text="msg", progress=False)
    assert list(results["state"]) == ["accepted", "accepted"]
    assert list(results["text"]) == ["Hola", "Chao"]
    assert_matches_sandbox(results, sb)


def test_get_method(sb: Sandbox, client: MassivaClient, tmp_path: Path) -> None:
    df = campaign_frame(300, seed=3)
    results = send(df, client=client, phone="tel", template=TEMPLATE, method="GET", progress=False)
    assert (results["state"] == "accepted").all()
    reqs = sb.requests()
    sends = reqs[reqs["path"] == "/webservices/SendSms"]
    assert set(sends["method"]) == {"GET"} and (sends["url_length"] <= 2048).all()
    assert_matches_sandbox(results, sb)


def test_split_rows_send_every_part(
    sb: Sandbox, client: MassivaClient, journal_at: JournalAt
) -> None:
    long_text = "palabra " * 40  # 320 characters: two or three parts
    df = pd.DataFrame({"phone": ["04141234567", "04241234567"], "msg": [long_text, "corto"]})
    journal = journal_at()
    results = send(
        df, client=client, text="msg", long_text="split", journal=journal, progress=False
    )
    assert list(results["state"]) == ["accepted", "accepted"]
    messages = sb.messages()
    parts = messages[messages["phone"] == "584141234567"]
    assert len(parts) >= 2 and all(len(t) <= 160 for t in parts["text"])
    assert results.loc[0, "message_id"] == parts["id"].min()  # the first part's id
    assert results.loc[0, "text"] == long_text.strip()
    before = len(sb.requests())
    send(df, client=client, text="msg", long_text="split", journal=journal, progress=False)
    assert len(sb.requests()) == before


def test_identical_rows_kept_on_purpose_are_sent_each_once(
    sb: Sandbox, client: MassivaClient, journal_at: JournalAt
) -> None:
    df = pd.DataFrame({"phone": ["04141234567"] * 3, "msg": ["Hola"] * 3})
    journal = journal_at()
    results = send(df, client=client, text="msg", dedupe=None, journal=journal, progress=False)
    assert list(results["state"]) == ["accepted"] * 3
    assert results["message_id"].is_unique
    send(df, client=client, text="msg", dedupe=None, journal=journal, progress=False)
    assert len(sb.messages()) == 3


def test_ctrl_c_keeps_the_answers_in_hand_and_a_rerun_sends_the_rest(
    sb: Sandbox, client: MassivaClient, journal_at: JournalAt
) -> None:
    # Ctrl-C (here from the progress callback) right after the second answer came back:
    # that answer is committed, not left in flight (which would make its rows unknown),
    # the third batch never leaves, and a re-run sends exactly it.
    df = pd.DataFrame({"phone": [f"0414{1000000 + i:07d}" for i in range(6)], "msg": "Hola"})
    journal = journal_at()
    calls = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        send(df, client=client, text="msg", journal=journal, max_phones=2, concurrency=1,
             progress=progress)  # fmt: skip
    seen = results_from_journal(journal)
    assert list(seen["state"]) == ["accepted"] * 4 + ["scheduled"] * 2
    assert len(sb.messages()) == 4
    again = send(df, client=client, text="msg", journal=journal, max_phones=2, progress=False)
    assert list(again["state"]) == ["accepted"] * 6
    assert sorted(sb.messages()["phone"]) == sorted(again["phone"])  # each phone once


def test_key_column(sb: Sandbox, client: MassivaClient, journal_at: JournalAt) -> None:
    df = pd.DataFrame(
        {
            "id": ["a", "b", "b", None],
            "phone": ["04141234567", "04241234567", "04161234567", "04261234567"],
            "msg": ["Hola", "Hola", "Hola", "Hola"],
        }
    )
    journal = journal_at()
    results = send(df, client=client, text="msg", key="id", journal=journal, progress=False)
    assert list(results["state"]) == ["accepted", "accepted", "suppressed", "invalid"]
    assert list(results["reason"].fillna("-")) == ["-", "-", "duplicate_key", "key_missing"]
    # same keys, new texts: nothing is sent again
    df["msg"] = "Otro texto"
    before = len(sb.requests())
    send(df, client=client, text="msg", key="id", journal=journal, progress=False)
    assert len(sb.requests()) == before
    with pytest.raises(InputError, match="nope"):
        send(df, client=client, text="msg", key="nope", progress=False)


# --- faults ------------------------------------------------------------------------------

FAULTS = [
    # fault, options, state, reason, messages recorded by the sandbox
    ("latency", {"seconds": 0.2}, "accepted", None, True),
    ("http500", {}, "unknown", "in_doubt_http_status", True),
    ("http502", {"before": True}, "unknown", "in_doubt_http_status", False),
    ("http503", {}, "unknown", "in_doubt_http_status", False),
    ("http503", {"retry_after": 0, "count": 1}, "accepted", None, True),
    ("http429", {"retry_after": 0, "count": 2}, "scheduled", "not_sent_rate_limited", False),
    ("reset", {}, "unknown", "in_doubt_no_response", True),
    ("reset", {"before": True}, "unknown", "in_doubt_no_response", False),
    ("hang", {}, "unknown", "in_doubt_no_response", True),
    ("truncated", {}, "unknown", "in_doubt_bad_response", True),
    ("html", {}, "unknown", "in_doubt_bad_response", True),
]


@pytest.mark.parametrize(
    ("fault", "options", "state", "reason", "recorded"),
    FAULTS,
    ids=[f"{f[0]}-{'-'.join(map(str, f[1].values())) or 'plain'}" for f in FAULTS],
)
def test_fault_gives_documented_states(
    sb: Sandbox,
    client: MassivaClient,
    journal_at: JournalAt,
    fault: str,
    options: dict[str, Any],
    state: str,
    reason: str | None,
    recorded: bool,
) -> None:
    df = campaign_frame(6, seed=4)
    journal = journal_at()
    options = dict(options)
    count = options.pop("count", 1)
    sb.inject("latency", count=1, seconds=0)  # taken by the credit query
    sb.inject(fault, count=count, **options)
    results = send(
        df, client=client, phone="tel", template=TEMPLATE, journal=journal, progress=False
    )
    assert list(results["state"].unique()) == [state]
    assert results["reason"].isna().all() if reason is None else set(results["reason"]) == {reason}
    assert (len(sb.messages()) == 6) is recorded
    if state == "unknown":
        assert results["api_message"].notna().all() and results["sent_at"].notna().all()
    # a re-run sends again only what provably never left
    sb.clear_faults()
    before = send_requests(sb)
    again = send(df, client=client, phone="tel", template=TEMPLATE, journal=journal, progress=False)
    if state == "scheduled":
        assert (again["state"] == "accepted").all()
        assert_matches_sandbox(again, sb)
    else:
        assert send_requests(sb) == before
        pd.testing.assert_frame_equal(again, results)
    assert sb.messages()["phone"].is_unique


def test_resend_unknown_opts_in(sb: Sandbox, client: MassivaClient, journal_at: JournalAt) -> None:
    df = campaign_frame(4, seed=5)
    journal = journal_at()
    sb.inject("latency", count=1, seconds=0)
    sb.inject("reset", count=1, before=True)
    first = send(df, client=client, phone="tel", template=TEMPLATE, journal=journal, progress=False)
    assert (first["state"] == "unknown").all()
    again = send(
        df,
        client=client,
        phone="tel",
        template=TEMPLATE,
        journal=journal,
        progress=False,
        resend_unknown=True,
    )
    assert (again["state"] == "accepted").all()
    assert_matches_sandbox(again, sb)


def test_connect_failure_leaves_rows_for_a_rerun(
    sb: Sandbox, journal_at: JournalAt, free_port: int
) -> None:
    df = campaign_frame(5, seed=6)
    journal = journal_at()
    with MassivaClient(
        sb.usuario, sb.clave, f"http://127.0.0.1:{free_port}/webservices", backoff_factor=0.01
    ) as dead:
        dead.credit_url = sb.credit_url  # credits answer; the send endpoint is unreachable
        results = send(
            df, client=dead, phone="tel", template=TEMPLATE, journal=journal, progress=False
        )
    assert (results["state"] == "scheduled").all()
    assert set(results["reason"]) == {"not_sent_connect_failed"}
    assert results["batch"].isna().all()
    with MassivaClient(sb.usuario, sb.clave, sb.base_url) as good:
        later = dispatch(journal, client=good)
    assert (later["state"] == "accepted").all()
    assert_matches_sandbox(later, sb)


class ScriptedAPI:
    """A server answering credits and SendSms with a scripted (odd) XML document."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.sends = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                api.sends += 1
                self._reply(api.answer)

            def do_GET(self) -> None:  # noqa: N802
                self._reply("<respuesta><creditos>999</creditos><mensaje>ok</mensaje></respuesta>")

            def _reply(self, text: str) -> None:
                body = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/xml; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/webservices"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _celular(i: int, phone: str, status: int = 0) -> str:
    return f'<celular id="{i}" sid="s{i}" status="{status}" num_celular="{phone}" texto="t"/>'


@pytest.mark.parametrize(
    ("entries", "status", "state", "reason"),
    [
        # the provider's entries in the wrong order: never misassigned
        ([(1, "584241234567"), (2, "584141234567")], 2, "unknown", "in_doubt_mismatch"),
        ([(1, "584141234567")], 1, "unknown", "in_doubt_mismatch"),  # one entry missing
        ([(1, "584141234567"), (2, "+58 424 1234567")], 2, "accepted", None),  # digits match
        ([], 0, "rejected", "provider_rejected"),  # status 0 without entries
    ],
)
def test_entries_are_matched_to_phones_by_position(
    entries: list[tuple[int, str]], status: int, state: str, reason: str | None
) -> None:
    xml = (
        f"<respuesta><mensaje>m</mensaje><status>{status}</status><telefonos>"
        + "".join(_celular(i, p) for i, p in entries)
        + "</telefonos></respuesta>"
    )
    api = ScriptedAPI(xml)
    try:
        df = pd.DataFrame({"phone": ["04141234567", "04241234567"]})
        with MassivaClient("u@x.test", "pw", api.base_url) as c:
            results = send(df, client=c, template="Hola", progress=False)
    finally:
        api.close()
    assert api.sends == 1
    assert list(results["state"]) == [state, state]
    if reason is None:
        assert list(results["message_id"]) == [1, 2]
    else:
        assert set(results["reason"]) == {reason} and results["message_id"].isna().all()


def test_a_batch_partly_rejected_keeps_each_entry(journal_at: JournalAt) -> None:
    # Accepted and refused entries in one answer: each row gets its own state and ids.
    # Around them: invalid, duplicate and later rows, a labelled index. The frame send()
    # returns (built from the rows it journalled and its messages read back) is the one
    # the journal gives alone.
    statuses = [0, 2, 0, 2]
    phones = ["584141234567", "584241234567", "584161234567", "584261234567"]
    xml = (
        "<respuesta><mensaje>m</mensaje><status>2</status><telefonos>"
        + "".join(
            _celular(10 + i, p, s) for i, (p, s) in enumerate(zip(phones, statuses, strict=True))
        )
        + "</telefonos></respuesta>"
    )
    api = ScriptedAPI(xml)
    later = "2099-01-01 09:00"
    df = pd.DataFrame(
        {
            "phone": ["0" + p[2:] for p in phones] + ["0212-5551234", "04141234567", "04121234567"],
            "when": [None, None, None, None, None, None, later],
        },
        index=pd.Index(["a", "b", "c", "d", "e", "f", "g"], name="k"),
    )
    journal = journal_at()
    try:
        with MassivaClient("u@x.test", "pw", api.base_url) as c:
            results = send(
                df, client=c, template="Hola", send_at="when", journal=journal, progress=False
            )
    finally:
        api.close()
    assert list(results["state"]) == [
        "accepted", "rejected", "accepted", "rejected", "invalid", "suppressed", "scheduled"
    ]  # fmt: skip
    assert list(results["reason"].fillna("-")) == [
        "-", "provider_rejected", "-", "provider_rejected", "phone_landline", "duplicate",
        "not_due",
    ]  # fmt: skip
    assert list(results["message_id"].fillna(-1)) == [10, 11, 12, 13, -1, -1, -1]
    assert list(results["sid"].fillna("-")) == ["s10", "s11", "s12", "s13", "-", "-", "-"]
    assert set(results["request_status"].iloc[:4]) == {2}
    assert set(results["api_message"].iloc[:4]) == {"m"}
    assert results.attrs["send"]["accepted"] == 2 and results.attrs["send"]["rejected"] == 2
    pd.testing.assert_frame_equal(results_from_journal(journal), results)


# --- account errors and credits ---------------------------------------------------------


def test_preflight_shortfall_raises_and_sends_nothing(
    sb: Sandbox, client: MassivaClient, journal_at: JournalAt
) -> None:
    sb.set_credits(5)
    df = campaign_frame(8, seed=7)
    with pytest.raises(InsufficientCreditsError) as info:
        send(
            df,
            client=client,
            phone="tel",
            template=TEMPLATE,
            journal=journal_at(),
            progress=False,
        )
    assert info.value.needed == 8 and info.value.available == 5
    assert "8 credits" in str(info.value) and "has 5" in str(info.value)
    assert send_requests(sb) == 0 and len(sb.messages()) == 0
    shown = results_from_journal(journal_at())
    assert set(shown["reason"]) == {"insufficient_credits"}


def test_allow_partial_sends_what_fits_then_the_rest(
    sb: Sandbox, client: MassivaClient, journal_at: JournalAt
) -> None:
    sb.set_credits(5)
    df = campaign_frame(8, seed=8)
    journal = journal_at()
    kwargs: dict[str, Any] = {
        "client": client,
        "phone": "tel",
        "template": TEMPLATE,
        "journal": journal,
    }
    first = send(df, allow_partial=True, progress=False, **kwargs)
    assert (first["state"] == "accepted").sum() == 5
    rest = first[first["state"] != "accepted"]
    assert (rest["state"] == "scheduled").all() and set(rest["reason"]) == {"insufficient_credits"}
    sb.set_credits(100)
    second = send(df, progress=False, **kwargs)
    assert (second["state"] == "accepted").all()
    assert_matches_sandbox(second, sb)


def test_account_error_mid_run_stops_and_records(
    sb: Sandbox, client: MassivaClient, journal_at: JournalAt
) -> None:
    df = campaign_frame(12, seed=9)
    journal = journal_at()
    calls: list[int] = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 1:
            sb.set_plan(False)  # after the first request: the plan lapses

    with pytest.raises(NoActivePlanError) as info:
        send(
            df,
            client=client,
            phone="tel",
            template=TEMPLATE,
            journal=journal,
            max_phones=3,
            concurrency=1,
            progress=progress,
        )
    partial = info.value.results  # type: ignore[attr-defined]
    assert (partial["state"] == "accepted").sum() == 3
    stopped = partial[partial["state"] != "accepted"]
    assert (stopped["state"] == "scheduled").all()
    assert set(stopped["reason"]) <= {"not_sent_no_active_plan", "run_stopped"}
    assert "not_sent_no_active_plan" in set(stopped["reason"])
    assert send_requests(sb) == 2  # nothing submitted after the refusal
    pd.testing.assert_frame_equal(results_from_journal(journal), partial)
    sb.set_plan(True)
    done = send(df, client=client, phone="tel", template=TEMPLATE, journal=journal, progress=False)
    assert (done["state"] == "accepted").all()
    assert_matches_sandbox(done, sb)


def test_wrong_password_raises_before_anything_is_sent(sb: Sandbox, tmp_path: Path) -> None:
    with MassivaClient(sb.usuario, "wrong-pass-123", sb.base_url) as bad:
        with pytest.raises(AuthenticationError) as info:
            send(campaign_frame(3), client=bad, phone="tel", template=TEMPLATE, progress=False)
    assert "wrong-pass-123" not in str(info.value)
    assert send_requests(sb) == 0


# --- dry run, progress, pacing, locking --------------------------------------------------


def test_dry_run_sends_and_writes_nothing(
    sb: Sandbox, client: MassivaClient, journal_at: JournalAt
) -> None:
    df = campaign_frame(40, n_invalid=5, seed=10)
    journal = journal_at()
    results = send(
        df,
        client=client,
        phone="tel",
        template=TEMPLATE,
        journal=journal,
        dry_run=True,
        max_phones=10,
    )
    assert send_requests(sb) == 0 and journal_at.written() is None
    plan = results.attrs["dry_run"]
    assert plan["messages"] == 40 and plan["requests"] >= 4
    assert plan["credits_needed"] == 40 and plan["credits_available"] == 100_000
    ready = results[results["state"] == "scheduled"]
    assert len(ready) == 40 and set(ready["reason"]) == {"dry_run"}
    # against an existing journal: what is already sent is not planned again
    send(
        df.iloc[:10], client=client, phone="tel", template=TEMPLATE, journal=journal, progress=False
    )
    before = journal_at.written()
    again = send(df, client=client, phone="tel", template=TEMPLATE, journal=journal, dry_run=True)
    sent_before = int((results.iloc[:10]["state"] == "scheduled").sum())
    assert again.attrs["dry_run"]["messages"] == 40 - sent_before
    assert journal_at.written() == before


def test_dry_run_without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MASSIVA_USUARIO", raising=False)
    monkeypatch.delenv("MASSIVA_CLAVE", raising=False)
    results = send(campaign_frame(5), phone="tel", template=TEMPLATE, dry_run=True, progress=False)
    assert results.attrs["dry_run"]["credits_available"] is None
    with pytest.raises(InputError, match="MASSIVA_USUARIO"):
        send(campaign_frame(5), phone="tel", template=TEMPLATE, progress=False)


def test_progress_false_prints_nothing(
    sb: Sandbox, client: MassivaClient, capsys: pytest.CaptureFixture[str]
) -> None:
    send(campaign_frame(20), client=client, phone="tel", template=TEMPLATE, progress=False)
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    send(campaign_frame(20, seed=1), client=client, phone="tel", template="Otro {nombre}")
    out, err = capsys.readouterr()
    assert "massiva send" in err and "20/20" in err


def test_progress_callable_counts_messages(sb: Sandbox, client: MassivaClient) -> None:
    seen: list[tuple[int, int]] = []
    send(
        campaign_frame(25),
        client=client,
        phone="tel",
        template=TEMPLATE,
        max_phones=10,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen[-1] == (25, 25) and len(seen) >= 3
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def _send_times(sb: Sandbox) -> pd.Series:
    reqs = sb.requests()
    return reqs.loc[reqs["path"] == "/webservices/SendSms", "received_at"].sort_values()


@pytest.mark.parametrize(
    ("options", "spacing"),
    [({"rate": 20, "max_phones": 2}, 1 / 20), ({"message_rate": 30, "max_phones": 3}, 3 / 30)],
)
def test_pacing_is_respected(
    sb: Sandbox, client: MassivaClient, options: dict[str, Any], spacing: float
) -> None:
    started = time.monotonic()
    results = send(
        campaign_frame(12),
        client=client,
        phone="tel",
        template=TEMPLATE,
        concurrency=4,
        progress=False,
        **options,
    )
    elapsed = time.monotonic() - started
    times = _send_times(sb)
    n = results.attrs["send"]["requests"]
    assert len(times) == n >= 4
    # the last request cannot leave before (n - 1) slots have passed
    assert elapsed >= (n - 1) * spacing
    span = (times.iloc[-1] - times.iloc[0]).total_seconds()
    # Arrivals at the sandbox carry the machine's scheduling jitter (a loaded machine can
    # hold one request back for tens of ms): one slot of slack. Unpaced, the 4 threads
    # would deliver all n requests within a few ms, far below (n - 2) slots.
    assert span >= (n - 2) * spacing


def test_a_busy_journal_is_refused(sb: Sandbox, client: MassivaClient, tmp_path: Path) -> None:
    from massiva_frames.sending.journal.sqlite import Journal

    journal = tmp_path / "j.db"
    holder = Journal(journal)
    holder.lock()
    try:
        with pytest.raises(JournalBusyError):
            send(campaign_frame(2), client=client, phone="tel", template=TEMPLATE, journal=journal)
        with pytest.raises(JournalBusyError):
            dispatch(journal, client=client)
    finally:
        holder.close()
    assert send_requests(sb) == 0


def test_bad_arguments() -> None:
    df = campaign_frame(2)
    with pytest.raises(InputError):
        send(df.to_dict(), phone="tel", template=TEMPLATE)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="concurrency"):
        send(df, phone="tel", template=TEMPLATE, concurrency=0, dry_run=True)
    with pytest.raises(InputError, match="window"):
        send(df, phone="tel", template=TEMPLATE, window=("8", "20:00"), dry_run=True)
    with pytest.raises(InputError, match="journal not found"):
        dispatch("/nonexistent/journal.db")


# --- scheduling --------------------------------------------------------------------------

MONDAY_NOON = pd.Timestamp("2025-01-06 12:00", tz="America/Caracas")


def test_send_at_later_waits_for_dispatch(
    sb: Sandbox, client: MassivaClient, journal_at: JournalAt
) -> None:
    df = campaign_frame(6, seed=11)
    df["when"] = [
        "2025-01-06 11:00",
        "2025-01-06 13:00",
        None,
        "not a date",
        "2025-01-06T18:30:00Z",
        "",
    ]
    journal = journal_at()
    results = send(
        df,
        client=client,
        phone="tel",
        template=TEMPLATE,
        journal=journal,
        send_at="when",
        now=MONDAY_NOON,
        progress=False,
    )
    assert list(results["state"]) == [
        "accepted",
        "scheduled",
        "accepted",
        "invalid",
        "scheduled",
        "accepted",
    ]
    assert results.loc[results.index[3], "reason"] == "send_at_invalid"
    assert set(results.loc[results["state"] == "scheduled", "reason"]) == {"not_due"}
    assert len(sb.messages()) == 3
    # 13:00 Caracas: only the first scheduled row is due
    at_one = dispatch(
        journal, client=client, now=pd.Timestamp("2025-01-06 13:00", tz="America/Caracas")
    )
    assert list(at_one["state"]) == [
        "accepted",
        "accepted",
        "accepted",
        "invalid",
        "scheduled",
        "accepted",
    ]
    nothing = send_requests(sb)
    dispatch(journal, client=client, now=pd.Timestamp("2025-01-06 14:00", tz="America/Caracas"))
    assert send_requests(sb) == nothing
    final = dispatch(journal, client=client, now=pd.Timestamp("2025-01-06 18:30", tz="UTC"))
    assert set(final["state"]) == {"accepted", "invalid"}
    assert_matches_sandbox(final, sb)
    pd.testing.assert_frame_equal(results_from_journal(journal), final)


def test_window_moves_sends_to_the_next_opening(
    sb: Sandbox, client: MassivaClient, journal_at: JournalAt
) -> None:
    df = campaign_frame(4, seed=12)
    journal = journal_at()
    late = pd.Timestamp("2025-01-06 21:15", tz="America/Caracas")
    results = send(
        df,
        client=client,
        phone="tel",
        template=TEMPLATE,
        journal=journal,
        window=("08:00", "20:00"),
        now=late,
        progress=False,
    )
    assert (results["state"] == "scheduled").all() and send_requests(sb) == 0
    dispatch(journal, client=client, now=pd.Timestamp("2025-01-07 07:59", tz="America/Caracas"))
    assert send_requests(sb) == 0
    done = dispatch(
        journal, client=client, now=pd.Timestamp("2025-01-07 08:00", tz="America/Caracas")
    )
    assert (done["state"] == "accepted").all()
    assert_matches_sandbox(done, sb)


def test_send_at_scalar(sb: Sandbox, client: MassivaClient, journal_at: JournalAt) -> None:
    journal = journal_at()
    results = send(
        campaign_frame(3),
        client=client,
        phone="tel",
        template=TEMPLATE,
        journal=journal,
        send_at="2025-01-06 12:30",
        now=MONDAY_NOON,
        progress=False,
    )
    assert (results["state"] == "scheduled").all()
    # a re-run before the time changes nothing; at the time it sends
    again = send(
        campaign_frame(3),
        client=client,
        phone="tel",
        template=TEMPLATE,
        journal=journal,
        send_at="2025-01-06 12:30",
        now="2025-01-06 12:30",
        progress=False,
    )
    assert (again["state"] == "accepted").all()


# --- processes killed mid-send -----------------------------------------------------------

WORKER = """
import sys, pandas as pd
from massiva_frames.sending.campaign import send
df = pd.read_parquet(sys.argv[1])
print("start", flush=True)
send(df, phone="tel", template="Hola {nombre}", journal=sys.argv[2], max_phones=25,
     concurrency=4, progress=False)
print("done", flush=True)
"""


@pytest.mark.slow
def test_sigkill_at_random_moments_never_double_sends(tmp_path: Path) -> None:
    df = campaign_frame(1_500, n_invalid=50, n_dup=50, seed=13)
    source = tmp_path / "in.parquet"
    df.to_parquet(source)
    journal = tmp_path / "j.db"
    rng = random.Random(13)
    with sandbox(credits=100_000, callback_delay=60) as sb:
        sb.inject("latency", ratio=1.0, seconds=0.05)
        env = {
            **os.environ,
            "MASSIVA_USUARIO": sb.usuario,
            "MASSIVA_CLAVE": sb.clave,
            "MASSIVA_BASE_URL": sb.base_url,
        }
        kills = 0
        # requests into each run before the kill (0: while it starts up), then a random
        # pause that lands inside a request or between two
        for target in (0, 1, 3, 6, 10, 15):
            seen = len(sb.requests())
            proc = subprocess.Popen(
                [sys.executable, "-c", WORKER, str(source), str(journal)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 60
            while proc.poll() is None and len(sb.requests()) < seen + target:
                assert time.monotonic() < deadline
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.06) if target else rng.uniform(0.2, 0.6))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
            proc.communicate(timeout=60)
        assert kills >= 5
        sb.clear_faults()
        final = subprocess.run(
            [sys.executable, "-c", WORKER, str(source), str(journal)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert final.returncode == 0, final.stderr[-2000:]
        results = results_from_journal(journal)
        messages = sb.messages()
    assert len(results) == len(df)
    assert set(results["state"].unique()) <= FINAL
    assert messages["phone"].is_unique  # no phone texted twice
    accepted = results[results["state"] == "accepted"]
    unknown = results[results["state"] == "unknown"]
    assert set(accepted["message_id"].astype(int)) <= set(messages["id"])
    # every message the sandbox took belongs to an accepted row or one in doubt
    assert set(messages["phone"]) <= set(accepted["phone"]) | set(unknown["phone"])
    assert set(unknown["reason"]) == {"in_doubt_process_stopped"}
    assert len(accepted) + len(unknown) == 1_500


# --- how each error maps to states (the rules the run loop applies) ---------------------


@pytest.mark.parametrize(
    ("error", "state", "reason"),
    [
        (ConnectError("refused"), "pending", "not_sent_connect_failed"),
        (RateLimitedError("429", http_status=429), "pending", "not_sent_rate_limited"),
        (URLTooLongError("too long"), "pending", "not_sent_url_too_long"),
        (InputError("bad charset"), "pending", "not_sent_input_error"),
        (AuthenticationError(-1, "x"), "pending", "not_sent_authentication_failed"),
        (InsufficientCreditsError(-5, "x"), "pending", "not_sent_insufficient_credits"),
        (NoActivePlanError(-4, "x"), "pending", "not_sent_no_active_plan"),
        (MissingFieldsError(-2, "faltan"), "rejected", "missing_fields"),
        (APIError(-9, "raro"), "rejected", "api_error"),
        (AmbiguousSendError("timeout"), "unknown", "in_doubt_no_response"),
        (HTTPStatusError("500", http_status=500), "unknown", "in_doubt_http_status"),
        (ProtocolError("not xml"), "unknown", "in_doubt_bad_response"),
        (RuntimeError("a bug"), "unknown", "in_doubt_error"),
    ],
)
def test_error_outcomes(error: BaseException, state: str, reason: str) -> None:
    batch = Batch(7, [11, 12], ("584141234567", "584241234567"), ("Hola",))
    fates, batch_state, _, _ = outcomes(batch, error, at=2, requested_at=1)
    settled = [row for fate in fates for row in fate.rows()]
    assert [o[0] for o in settled] == [11, 12]
    assert [o[1] for o in settled] == [state, state]
    assert [o[2] for o in settled] == [reason, reason]
    expected = "refused" if isinstance(error, AccountError) else None
    expected = expected or {"pending": "not_sent", "rejected": "done", "unknown": "unknown"}[state]
    assert batch_state == expected
    sent_at = [o[6] for o in settled]
    assert sent_at == {"pending": [None, None], "rejected": [2, 2], "unknown": [1, 1]}[state]


def test_every_row_invalid_sends_nothing(
    sb: Sandbox, client: MassivaClient, journal_at: JournalAt
) -> None:
    df = pd.DataFrame(
        {"phone": ["no", None, "0212-5551234"], "msg": ["a", "b", "c"], "when": ["x", None, ""]},
        index=[7, 9, 8],
    )
    for dry_run in (True, False):
        results = send(
            df, client=client, text="msg", send_at="when", journal=journal_at(),
            dry_run=dry_run, progress=False,
        )  # fmt: skip
        assert list(results.index) == [7, 9, 8]
        assert (results["state"] == "invalid").all() and results["reason"].notna().all()
    assert len(sb.requests()) == 0  # not even the credit query


def test_a_repeated_index_label_is_refused_before_anything_is_journalled(
    sb: Sandbox, client: MassivaClient, tmp_path: Path
) -> None:
    # df.join(results) would multiply rows: the send refuses, naming the labels and the fix.
    df = pd.DataFrame(
        {"phone": ["04141234567", "04241234567", "04161234567"], "msg": ["a", "b", "c"]},
        index=["x", "x", "y"],
    )
    before = len(sb.requests())
    with pytest.raises(InputError, match=r"repeats labels \('x'\).*reset_index"):
        send(df, client=client, text="msg", journal=tmp_path / "j.db", progress=False)
    assert not (tmp_path / "j.db").exists()
    assert len(sb.requests()) == before
    results = send(
        df.reset_index(), client=client, text="msg", journal=tmp_path / "j.db", progress=False
    )
    assert (results["state"] == "accepted").all() and list(results.index) == [0, 1, 2]
