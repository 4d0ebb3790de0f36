"""The send journal on PostgreSQL, against a real throwaway server (``pg_server``).

Its URL and versions; the journal operations beside the SQLite journal's; workers sharing
one journal (claims, leases, a killed or frozen worker, two sends of one frame at once);
a database that goes away; copies between SQLite and PostgreSQL, and the CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pg_server import PASSWORD, Cluster, JournalAt

from massiva_frames.errors import InputError, JournalBusyError, JournalUnavailableError, mask
from massiva_frames.faces.cli import main
from massiva_frames.sandbox import Sandbox, sandbox
from massiva_frames.sending.campaign import dispatch, results_from_journal, send
from massiva_frames.sending.journal import postgres_connection
from massiva_frames.sending.journal.postgres import PostgresJournal, copy_journal
from massiva_frames.sending.journal.postgres_url import Location, is_postgres_url
from massiva_frames.sending.journal.sqlite import Journal
from massiva_frames.sending.journal.writes import Fate
from massiva_frames.sending.rows import row_key
from massiva_frames.wire.client import MassivaClient

PHONES = [f"0414{1000000 + i:07d}" for i in range(40)]


def frame(n: int, *, offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {"tel": [f"0414{2000000 + offset + i:07d}" for i in range(n)], "n": range(n)},
        index=pd.Index([f"r{i}" for i in range(n)], name="rid"),
    )


def clean(text: str) -> bool:
    """No form of the cluster's password in ``text``."""
    return mask(text, [PASSWORD]) == text


@pytest.fixture
def sb() -> Any:
    with sandbox(credits=1_000_000, callback_delay=3600) as server:
        yield server


@pytest.fixture
def client(sb: Sandbox) -> Any:
    with MassivaClient(sb.usuario, sb.clave, sb.base_url, timeout=(2, 5)) as c:
        yield c


# --- the URL -------------------------------------------------------------------------------


def test_urls_name_the_database_never_the_password() -> None:
    assert is_postgres_url("postgresql://u@h/db") and is_postgres_url(" POSTGRES://h/db")
    assert not is_postgres_url("sends.db") and not is_postgres_url(Path("postgresql://x"))
    url = "postgresql://etl:s%3Bcr%40t@db.example:6543/sms?schema=junio&lease=5&sslmode=require"
    where = Location.parse(url)
    assert where.name == "postgresql://etl@db.example:6543/sms (schema junio)"
    assert (where.schema, where.lease, where.reconnect) == ("junio", 5.0, 15.0)
    assert "schema" not in where.conninfo and "sslmode=require" in where.conninfo
    assert "s;cr@t" not in repr(where) and "s%3Bcr%40t" not in repr(where)
    failure = where.unavailable(RuntimeError("password s;cr@t refused for s%3Bcr%40t"))
    assert "s;cr@t" not in str(failure) and "s%3Bcr%40t" not in str(failure)
    assert "db.example:6543/sms" in str(failure)
    for bad in ("schema=a-b", "schema=1x", "lease=0", "reconnect=soon"):
        with pytest.raises(InputError):
            Location.parse(f"postgresql://h/db?{bad}")


# --- tables and versions --------------------------------------------------------------------


def _sql(pg_server: Cluster, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the cluster's database (psycopg imported here: without it,
    every test of this module skips at its fixture)."""
    import psycopg

    with psycopg.connect(pg_server.url()) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def _versions(pg_server: Cluster, schema: str) -> list[int]:
    rows = _sql(pg_server, f'SELECT version FROM "{schema}".journal_version ORDER BY 1')
    return [int(r[0]) for r in rows]


def test_tables_are_created_once_and_a_newer_journal_is_refused(
    pg_server: Cluster, pg_url: str
) -> None:
    schema = Location.parse(pg_url).schema
    for _ in range(2):
        PostgresJournal(pg_url).close()
    assert _versions(pg_server, schema) == [1, 2]
    _sql(pg_server, f'INSERT INTO "{schema}".journal_version VALUES (99, 0)')
    with pytest.raises(InputError, match="newer massiva-frames") as info:
        PostgresJournal(pg_url)
    assert "journal version 99" in str(info.value) and clean(str(info.value))


def test_forward_migrations_run_in_order_once(
    pg_server: Cluster, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    PostgresJournal(pg_url).close()  # version 2
    steps = {**postgres_connection.MIGRATIONS, 3: ["ALTER TABLE runs ADD COLUMN note text"]}
    monkeypatch.setattr(postgres_connection, "MIGRATIONS", steps)
    monkeypatch.setattr(postgres_connection, "SCHEMA_VERSION", 3)
    for _ in range(2):
        with PostgresJournal(pg_url) as journal:
            journal.start_run("send")
    schema = Location.parse(pg_url).schema
    assert _versions(pg_server, schema) == [1, 2, 3]
    notes = _sql(pg_server, f'SELECT note FROM "{schema}".runs')
    assert notes == [(None,), (None,)]


def test_a_missing_journal_is_not_created_by_reading_it(pg_server: Cluster, pg_url: str) -> None:
    for call in (lambda: results_from_journal(pg_url), lambda: dispatch(pg_url)):
        with pytest.raises(InputError, match="journal not found") as info:
            call()
        assert clean(str(info.value)) and "(schema t_" in str(info.value)
    schema = Location.parse(pg_url).schema
    assert _sql(pg_server, "SELECT to_regnamespace(%s)", (schema,)) == [(None,)]


def test_schemas_keep_journals_apart(
    sb: Sandbox, client: MassivaClient, pg_server: Cluster
) -> None:
    one, two = pg_server.url("campaign_one"), pg_server.url("campaign_two")
    first = send(frame(5), client=client, phone="tel", template="Hola {n}", journal=one,
                 progress=False)  # fmt: skip
    second = send(frame(5), client=client, phone="tel", template="Hola {n}", journal=two,
                  progress=False)  # fmt: skip
    assert (first["state"] == "accepted").all() and (second["state"] == "accepted").all()
    assert len(sb.messages()) == 10  # a journal per schema: the same rows, sent twice
    pd.testing.assert_frame_equal(results_from_journal(one), first)


# --- the operations, on both backends ----------------------------------------------------


def _open(where: JournalAt) -> Any:
    location = where()
    return PostgresJournal(location) if where.backend == "postgres" else Journal(location)


def _fill(journal: Any, n: int) -> list[int]:
    keys = [row_key("c", PHONES[i], f"hola {i}") for i in range(n)]
    rows = [
        (i, "", keys[i], "ready", None, PHONES[i], f"hola {i}", "GSM-7", 1, 1) for i in range(n)
    ]
    journal.replace_rows(rows, {"index": {"kind": "range", "start": 0, "stop": n, "step": 1,
                                          "names": [None]}})  # fmt: skip
    journal.add_messages((keys[i], 1, PHONES[i], f"hola {i}", "c", None) for i in range(n))
    return [int(i) for i in journal.pending()["id"]]


def test_outcomes_recovery_and_requeue_read_alike_on_both(journal_at: JournalAt) -> None:
    with _open(journal_at) as journal:
        ids = _fill(journal, 4)
        number = journal.next_batch_number()
        journal.mark_inflight(number, ids[:3], method="POST", requested_at=1_700_000_000_000_000)
        assert journal.counts() == {"inflight": 3, "pending": 1}
        journal.record_outcome(
            number,
            [
                (
                    ids[0],
                    "accepted",
                    None,
                    11,
                    's,"a\\{b} ñ',
                    "Envio 'Exitoso'",
                    1_700_000_000_500_000,
                ),
                (ids[1], "rejected", "provider_rejected", 12, "NULL", "Envio Exitoso", 1),
                (ids[2], "pending", "not_sent_connect_failed", None, None, "x", None),
            ],
            batch_state="done",
            request_status=1,
            detail=None,
        )
        journal.mark_inflight(number + 1, [ids[3]], method="POST", requested_at=5_000_000)
    results = results_from_journal(journal_at())
    assert list(results["state"]) == ["accepted", "rejected", "scheduled", "unknown"]
    assert list(results["reason"].fillna("-")) == [
        "-", "provider_rejected", "not_sent_connect_failed", "in_doubt_process_stopped",
    ]  # fmt: skip
    assert results.loc[0, "message_id"] == 11 and pd.isna(results.loc[2, "batch"])
    assert list(results["sid"].iloc[:2]) == ['s,"a\\{b} ñ', "NULL"]  # as given
    assert results.loc[0, "api_message"] == "Envio 'Exitoso'"
    with _open(journal_at) as journal:
        assert journal.recover() == 1 and journal.recover() == 0
        assert journal.counts() == {"accepted": 1, "rejected": 1, "pending": 1, "unknown": 1}
        assert journal.pending()["id"].tolist() == [ids[2]]
        keys = [row_key("c", PHONES[i], f"hola {i}") for i in range(4)]
        assert journal.requeue(keys, states=("unknown",)) == 1
        assert journal.counts()["pending"] == 2
    after = results_from_journal(journal_at())
    assert after.loc[3, "state"] == "scheduled" and pd.isna(after.loc[3, "sent_at"])


def test_texts_survive_the_journal_as_given(
    sb: Sandbox, client: MassivaClient, journal_at: JournalAt
) -> None:
    # An invalid row keeps its text as given, NUL and tab included (PostgreSQL text
    # cannot hold a NUL: the rows table stores bytes); a lone surrogate becomes "?" on
    # both; what COPY's text format escapes (backslash, line ends, a literal \N) comes
    # back as it went.
    texts = ["Hola", "a\x00b", "c\ud800d", "x\ty", "Hola\nque tal \\ ok\r\n\\N", "\\N"]
    phones = ["04141234567", "0414\x001234567", "04161234567", "04261234567", "04121234567",
              "04241234567"]  # fmt: skip
    df = pd.DataFrame({"phone": phones, "msg": texts}, dtype=object)
    results = send(df, client=client, text="msg", journal=journal_at(), progress=False)
    assert (
        list(results["state"]) == ["accepted", "invalid", "invalid", "invalid"] + ["accepted"] * 2
    )
    assert results.loc[1, "text"] == "a\x00b" and results.loc[3, "text"] == "x\ty"
    assert list(results["text"].iloc[4:]) == texts[4:]
    assert sorted(sb.messages()["text"]) == sorted(["Hola", *texts[4:]])
    pd.testing.assert_frame_equal(results_from_journal(journal_at()), results)


# --- workers sharing a journal --------------------------------------------------------------

WORKER = """
import sys, time, pandas as pd
from pathlib import Path
from massiva_frames.sending.campaign import send
df = pd.read_parquet(sys.argv[1])
go = Path(sys.argv[3])
while not go.exists():
    time.sleep(0.005)
results = send(df, phone="tel", template="Hola {n}", journal=sys.argv[2], max_phones=100,
               concurrency=4, progress=False)
results.to_parquet(sys.argv[4])
print("done", flush=True)
"""


def test_two_sends_of_one_frame_at_once_send_each_message_once(pg_url: str, tmp_path: Path) -> None:
    df = frame(10_000)
    source = tmp_path / "in.parquet"
    df.to_parquet(source)
    go = tmp_path / "go"
    with sandbox(credits=100_000, callback_delay=3600) as sb:
        sb.inject("latency", ratio=1.0, seconds=0.02)
        env = {**os.environ, "MASSIVA_USUARIO": sb.usuario, "MASSIVA_CLAVE": sb.clave,
               "MASSIVA_BASE_URL": sb.base_url}  # fmt: skip
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    WORKER,
                    str(source),
                    pg_url,
                    str(go),
                    str(tmp_path / f"{k}.pq"),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for k in range(2)
        ]
        time.sleep(1.5)  # both imported and waiting
        go.touch()
        outs = [p.communicate(timeout=180) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
        messages = sb.messages()
        sends = int((sb.requests()["path"] == "/webservices/SendSms").sum())
    assert len(messages) == 10_000 and messages["phone"].is_unique
    assert sends == 100  # each batch requested once, by one of the two
    first, second = (pd.read_parquet(tmp_path / f"{k}.pq") for k in range(2))
    assert (first["state"] == "accepted").all()
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(results_from_journal(pg_url), first)


HOLDER = """
import sys, time
from massiva_frames.sending.journal.postgres import PostgresJournal
j = PostgresJournal(sys.argv[1])
j.lock()
with j.transaction():
    j.replace_rows([], {})
    first, added = j.insert_messages(["k1", "k2", "k3"], [1, 1, 1],
        ["584141000001", "584141000002", "584141000003"], ["a", "b", "c"], campaign="")
number = j.next_batch_number()
j.write_turn([], [(number, [first], "POST", 1_000_000)])
print("inflight", flush=True)
time.sleep(float(sys.argv[2]))
j.write_turn([], [(number + 1, [first + 1], "POST", 2_000_000)])
print("launched again", flush=True)
"""


def _holder(url: str, pause: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, str(pause)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "inflight"
    return proc


def test_a_frozen_workers_batch_becomes_unknown_when_its_lease_expires(
    pg_server: Cluster, pg_url: str
) -> None:
    url = pg_url + "&lease=4"
    proc = _holder(url, 0.5)
    os.kill(proc.pid, signal.SIGSTOP)  # alive (its session holds its lock), renewing nothing
    try:
        with PostgresJournal(url) as journal:
            assert journal.recover() == 0  # the lease still holds
            assert journal.counts() == {"inflight": 1, "pending": 2}
            time.sleep(5)
            assert journal.recover() == 1  # expired: in doubt, never resent
            assert journal.counts() == {"unknown": 1, "pending": 2}
            journal.lock()
            assert journal.pending_messages()["row_key"].tolist() == ["k2", "k3"]
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=30)
    # woken up, the worker finds its lease taken over and sends nothing more
    assert proc.returncode != 0 and "JournalBusyError" in err and "lease expired" in err
    with PostgresJournal(url) as journal:
        assert journal.counts() == {"unknown": 1, "pending": 2}  # k2 was not sent


def test_a_killed_workers_batch_becomes_unknown_once_its_session_is_gone(pg_url: str) -> None:
    proc = _holder(pg_url, 60)  # lease 60 s: its end is seen from the session's lock
    proc.kill()
    proc.communicate(timeout=30)
    with PostgresJournal(pg_url) as journal:
        journal.lock()
        started = time.monotonic()
        pending = journal.pending_messages()  # waits for the dead worker's batch
        waited = time.monotonic() - started
        assert 0.5 < waited < 15
        assert journal.counts() == {"unknown": 1, "pending": 2}
        assert sorted(pending["row_key"]) == ["k2", "k3"]
        assert journal.next_batch_number() == 2


def test_claims_keep_workers_apart(pg_url: str) -> None:
    setup = PostgresJournal(pg_url)
    with setup.transaction():
        setup.replace_rows([], {})
        setup.insert_messages([f"k{i}" for i in range(6)], [1] * 6, ["584141000001"] * 6,
                              ["x"] * 6, campaign="")  # fmt: skip
    setup.close()
    a, b = PostgresJournal(pg_url), PostgresJournal(pg_url)
    try:
        a.lock()
        b.lock()
        mine = a.pending_messages()
        assert len(mine) == 6
        seen: list[int] = []
        waiter = threading.Thread(target=lambda: seen.append(len(b.pending_messages())))
        waiter.start()
        time.sleep(0.6)
        assert waiter.is_alive()  # b waits while a holds claims
        first = a.next_batch_number()
        ids = [int(i) for i in mine["id"]]
        a.write_turn([], [(first, ids[:4], "POST", 1)])
        with PostgresJournal(pg_url) as c, pytest.raises(JournalBusyError, match="no longer"):
            c.lock()
            c.write_turn([], [(99, ids[4:], "POST", 1)])  # not c's to send
        a.set_pending(ids[4:], reason="not_due")  # a lets two wait: anyone may take them
        fates = [Fate("accepted", None, "ok", 2, ids[:4], [1, 2, 3, 4], ["s"] * 4)]
        a.record_fates(first, fates, batch_state="done", request_status=1, detail=None)
        waiter.join(10)
        assert seen == [2]
        assert b.next_batch_number() > first  # numbers never shared
    finally:
        a.close()
        b.close()


# --- the database going away ------------------------------------------------------------


def test_an_unreachable_database_is_named_never_the_password(
    sb: Sandbox, client: MassivaClient, pg_server: Cluster, free_port: int
) -> None:
    url = pg_server.url("nowhere").replace(f":{pg_server.port}/", f":{free_port}/")
    for call in (
        lambda: send(frame(2), client=client, phone="tel", template="x", journal=url),
        lambda: dispatch(url, client=client),
        lambda: results_from_journal(url),
    ):
        with pytest.raises(JournalUnavailableError) as info:
            call()
        text = f"{info.value} {info.value!r} {info.value.args}"
        assert f"127.0.0.1:{free_port}/massiva (schema nowhere)" in str(info.value)
        assert clean(text) and info.value.__cause__ is None
    assert len(sb.messages()) == 0


def test_a_database_that_goes_away_mid_send_stops_it_cleanly(
    sb: Sandbox, client: MassivaClient, pg_server: Cluster, pg_url: str
) -> None:
    url = pg_url + "&reconnect=1"
    df = frame(60)
    answers: list[int] = []

    def progress(done: int, total: int) -> None:
        answers.append(done)
        if len(answers) == 2:
            pg_server.stop()

    try:
        with pytest.raises(JournalUnavailableError) as info:
            send(df, client=client, phone="tel", template="Hola {n}", journal=url,
                 max_phones=10, concurrency=1, progress=progress)  # fmt: skip
    finally:
        pg_server.start()
    assert f"127.0.0.1:{pg_server.port}/massiva" in str(info.value) and clean(str(info.value))
    seen = results_from_journal(url)
    accepted = seen[seen["state"] == "accepted"]
    assert len(accepted) >= 10  # the answer committed before the server left is kept
    assert set(seen["state"]) <= {"accepted", "unknown", "scheduled"}
    sent = set(sb.messages()["phone"])
    assert set(seen.loc[seen["state"] == "scheduled", "phone"]).isdisjoint(sent)
    again = send(df, client=client, phone="tel", template="Hola {n}", journal=url, progress=False)
    assert set(again["state"]) <= {"accepted", "unknown"}
    assert sb.messages()["phone"].is_unique  # nothing sent twice
    assert (again["state"] == "unknown").sum() <= 10  # at most the batch in flight


def test_a_server_restart_mid_send_is_ridden_out(
    sb: Sandbox, client: MassivaClient, pg_server: Cluster, pg_url: str
) -> None:
    answers: list[int] = []

    def progress(done: int, total: int) -> None:
        answers.append(done)
        if len(answers) == 2:
            pg_server.restart(pause=0.5)

    results = send(frame(60), client=client, phone="tel", template="Hola {n}", journal=pg_url,
                   max_phones=10, concurrency=1, progress=progress)  # fmt: skip
    assert (results["state"] == "accepted").all()
    assert len(sb.messages()) == 60 and sb.messages()["phone"].is_unique
    pd.testing.assert_frame_equal(results_from_journal(pg_url), results)


# --- copies between backends and the CLI ---------------------------------------------------


def _tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with Journal(path, readonly=True) as journal:
        tables = {
            t: journal.conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
            for t in ("meta", "rows", "messages", "batches", "runs")
        }
    # batch ids: the same JSON array, however it was spaced
    tables["batches"] = [(*b[:-1], json.loads(b[-1] or "null")) for b in tables["batches"]]
    return tables


def test_copies_keep_every_state_both_ways(
    sb: Sandbox, client: MassivaClient, pg_url: str, tmp_path: Path, capsys: Any
) -> None:
    source = tmp_path / "source.db"
    df = frame(12)
    df.loc["r1", "tel"] = "123"  # invalid
    df["when"] = [None] * 10 + ["2099-01-01 10:00"] * 2  # two wait
    df["msg"] = ["Hola"] * 11 + [" ".join(f"palabra{i}" for i in range(40))]  # in parts
    sb.inject("latency", count=1, seconds=0)  # the credit query
    sb.inject("http500", count=1)  # the first batch: unknown
    send(df, client=client, phone="tel", text="msg", send_at="when", long_text="split",
         journal=source, max_phones=3, concurrency=1, progress=False)  # fmt: skip
    with Journal(source) as journal:  # and one request under way when a process died
        waiting = journal.pending()["id"].tolist()[:1]
        journal.mark_inflight(journal.next_batch_number(), waiting, method="POST")
    expected = results_from_journal(source)
    assert set(expected["state"]) == {"accepted", "unknown", "invalid", "scheduled"}
    assert main(["journal", "copy", str(source), pg_url]) == 0
    out = capsys.readouterr().out
    assert "-> postgresql://postgres@127.0.0.1" in out and clean(out)
    pd.testing.assert_frame_equal(results_from_journal(pg_url), expected)
    back = tmp_path / "back.db"
    print(copy_journal(pg_url, back))
    assert _tables(back) == _tables(source)
    # a copy goes only into an empty journal
    assert main(["journal", "copy", str(source), pg_url]) == 1
    err = capsys.readouterr().err
    assert "already holds a journal" in err and clean(err)
    # the copy works on: its request under way is in doubt, the others go out when due
    done = dispatch(pg_url, client=client, now="2099-01-01 10:00")
    assert (done.loc[done["state"] == "unknown"].index.size) == (
        expected["state"] == "unknown"
    ).sum()
    assert set(done["state"]) == {"accepted", "unknown", "invalid"}
    assert sb.messages().groupby(["phone", "text"]).size().max() == 1


def test_cli_send_and_dispatch_with_a_postgres_journal(
    sb: Sandbox, pg_url: str, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "in.csv"
    frame(8).assign(when=["2030-01-07 09:00"] * 4 + [""] * 4).to_csv(source, index=False)
    monkeypatch.setenv("MASSIVA_USUARIO", sb.usuario)
    monkeypatch.setenv("MASSIVA_CLAVE", sb.clave)
    argv = ["send", str(source), "--phone", "tel", "--template", "Hola {n}", "--send-at",
            "when", "--base-url", sb.base_url, "--out", str(tmp_path / "r.parquet"),
            "--no-progress"]  # fmt: skip
    assert main([*argv, "--journal", pg_url]) == 0  # four scheduled: not a 3
    monkeypatch.setenv("MASSIVA_JOURNAL", pg_url)  # the journal from the environment
    assert main(["dispatch", "--journal", pg_url, "--base-url", sb.base_url,
                 "--now", "2030-01-07 09:00"]) == 0  # fmt: skip
    out, err = capsys.readouterr()
    assert clean(out + err)
    assert len(sb.messages()) == 8
    with MassivaClient(sb.usuario, sb.clave, sb.base_url) as c:
        again = send(frame(8), phone="tel", template="Hola {n}", client=c, progress=False)
    assert (again["state"] == "accepted").all() and len(sb.messages()) == 8
    assert again.attrs["send"]["new_messages"] == 0  # MASSIVA_JOURNAL: the same journal
