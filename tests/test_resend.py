"""Follow-up sends (``resend``) over a real sandbox, a real receiver and real journals.

A campaign is sent; the sandbox fails some deliveries and calls the receiver back, which
writes its parquet log; ``resend`` reads that log and sends exactly the failed rows again
as attempt 2; the same follow-up again sends nothing; after attempt 2's callbacks a
third follow-up sends attempt 3 of exactly attempt 2's failures. On SQLite and on
PostgreSQL (``journal_at``), plus journals written before attempts existed, the rows that
must never be sent again (delivered, in doubt), ``pending_after``, dry runs, bad input
and the ``massiva-frames resend`` command.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import massiva_frames as mf
from massiva_frames.errors import InputError
from massiva_frames.faces.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from massiva_frames.faces.followup import delivery_statuses
from massiva_frames.sandbox import Sandbox, sandbox
from massiva_frames.sending.journal import postgres_connection, postgres_schema
from massiva_frames.sending.journal.postgres import PostgresJournal
from massiva_frames.sending.journal.sqlite import Journal
from massiva_frames.sending.resending import ResendCounts, attempt_key, resend_messages
from massiva_frames.wire.client import MassivaClient

N = 30


def campaign(n: int = N) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tel": [f"0414{2000000 + i:07d}" for i in range(n)],
            "nombre": [f"N{i}" for i in range(n)],
        },
        index=pd.Index([f"c{i}" for i in range(n)], name="cliente"),
    )


def wait_for_log(logdir: Path, n: int, timeout: float = 20.0) -> pd.Series:
    """The final statuses in the receiver's log, once it holds ``n`` messages."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = delivery_statuses(logdir) if logdir.exists() else pd.Series([], dtype=object)
        if len(statuses) >= n or time.monotonic() > deadline:
            return statuses
        time.sleep(0.1)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Sandbox, MassivaClient, Path]]:
    logdir = tmp_path / "logs"
    with (
        mf.receiver(logdir) as rc,
        sandbox(
            status_url=rc.url, callback_delay=0.1, fail_ratio=0.4, seed=7, credits=10_000
        ) as sb,
        MassivaClient(sb.usuario, sb.clave, sb.base_url, timeout=(2, 10)) as client,
    ):
        yield sb, client, logdir


def test_failed_rows_go_out_again_once_as_a_new_attempt(
    world: tuple[Sandbox, MassivaClient, Path], journal_at: Any
) -> None:
    sb, client, logdir = world
    journal = journal_at()
    df = campaign()
    first = mf.send(df, client=client, phone="tel", template="Hola {nombre}", journal=journal,
                    campaign="enero", progress=False)  # fmt: skip
    assert (first["state"] == "accepted").all()
    assert first["attempt"].tolist() == [1] * N
    assert first["first_message_id"].equals(first["message_id"])
    assert sb.wait_callbacks(30)
    statuses = wait_for_log(logdir, N)
    truth = sb.messages().set_index("id")["final"]
    failed_ids = sorted(truth.index[truth == "failed"])
    assert 0 < len(failed_ids) < N
    assert sorted(statuses.index[statuses == "failed"]) == failed_ids
    failed_rows = first.index[first["message_id"].isin(failed_ids)]

    followup = mf.resend(journal, logdir, client=client)  # the latest send's campaign
    counts = followup.attrs["resend"]
    assert (
        counts
        == ResendCounts(
            resent=len(failed_ids), failed=len(failed_ids), delivered=N - len(failed_ids)
        ).as_dict()
    )
    everything = sb.messages()
    new = everything[everything["id"] > truth.index.max()]
    assert sorted(new["phone"]) == sorted(first.loc[failed_rows, "phone"])
    assert sorted(new["text"]) == sorted(first.loc[failed_rows, "text"])
    assert followup.index.equals(df.index)
    assert followup.loc[failed_rows, "attempt"].tolist() == [2] * len(failed_rows)
    assert followup.loc[failed_rows, "first_message_id"].equals(
        first.loc[failed_rows, "message_id"]
    )
    assert set(followup.loc[failed_rows, "message_id"]) == set(new["id"])
    assert (followup.loc[failed_rows, "state"] == "accepted").all()
    kept = followup.index.difference(failed_rows)
    pd.testing.assert_frame_equal(followup.loc[kept], first.loc[kept], check_like=True)
    pd.testing.assert_frame_equal(mf.results_from_journal(journal), followup)

    # the same follow-up again (what the log said then): nothing is sent twice
    before = len(sb.messages())
    again = mf.resend(journal, statuses, client=client, campaign="enero")
    assert len(sb.messages()) == before
    assert again.attrs["send"]["messages_due"] == 0
    assert again.attrs["resend"]["resent"] == 0
    assert again.attrs["resend"]["awaiting"] == len(failed_ids)

    # attempt 2's callbacks: a third follow-up sends attempt 3 of its failures alone
    assert sb.wait_callbacks(30)
    statuses = wait_for_log(logdir, N + len(failed_ids))
    second_ids = set(new["id"])
    truth = sb.messages().set_index("id")["final"]
    failed_again = sorted(i for i in second_ids if truth[i] == "failed")
    third = mf.resend(journal, logdir, client=client)
    assert third.attrs["resend"]["resent"] == len(failed_again)
    assert (third["attempt"] == 3).sum() == len(failed_again)
    final = mf.attach_delivery(mf.results_from_journal(journal), logdir)
    table = mf.delivery_summary(final, by="attempt")
    assert table["rows"].sum() == N
    assert table.loc[1, "rows"] == N - len(failed_ids)
    assert table.loc[1, "delivered"] == N - len(failed_ids)
    assert table.loc[2, "rows"] == len(failed_ids) - len(failed_again)
    assert table.loc[2, "delivered"] == len(failed_ids) - len(failed_again)
    if failed_again:
        assert table.loc[3, "rows"] == len(failed_again)


def test_delivered_and_in_doubt_rows_are_never_sent_again(tmp_path: Path) -> None:
    with (
        sandbox(callback_delay=60, credits=1_000) as sb,
        MassivaClient(sb.usuario, sb.clave, sb.base_url, timeout=(2, 2)) as client,
    ):
        journal = tmp_path / "j.db"
        df = campaign(6)
        mf.send(df.iloc[:4], client=client, phone="tel", template="Hola {nombre}",
                journal=journal, campaign="c", progress=False)  # fmt: skip
        sb.inject("latency", count=1, seconds=0)  # the credit query
        sb.inject("http500", count=1)  # processed, then 500: the rows are in doubt
        results = mf.send(df, client=client, phone="tel", template="Hola {nombre}",
                          journal=journal, campaign="c", progress=False)  # fmt: skip
        assert results["state"].astype(str).tolist() == ["accepted"] * 4 + ["unknown"] * 2
        ids = results["message_id"]
        statuses = {int(ids.iloc[0]): "delivered", int(ids.iloc[1]): "failed"}
        n = len(sb.messages())

        dry = resend_messages(journal, statuses, client=client, dry_run=True)
        assert dry.attrs["resend"]["resent"] == 1 and dry.attrs["send"]["dry_run"]
        assert dry.attrs["send"]["messages_due"] == 1
        assert len(sb.messages()) == n and mf.results_from_journal(journal)["attempt"].max() == 1

        done = resend_messages(journal, statuses, client=client, states=["failed"])
        counts = done.attrs["resend"]
        assert (counts["resent"], counts["delivered"], counts["awaiting"]) == (1, 1, 2)
        assert counts["in_doubt"] == 2
        assert len(sb.messages()) == n + 1
        assert sb.messages()["phone"].iloc[-1] == results["phone"].iloc[1]
        assert done["attempt"].tolist() == [1, 2, 1, 1, 1, 1]
        assert done["state"].astype(str).tolist()[4:] == ["unknown", "unknown"]

        with pytest.raises(InputError, match="resend_unknown=True"):
            resend_messages(journal, statuses, client=client, states=["failed", "unknown"])
        opted = resend_messages(journal, statuses, client=client, resend_unknown=True)
        assert opted.attrs["resend"]["unknown"] == 2 and len(sb.messages()) == n + 3
        assert opted["attempt"].tolist() == [1, 2, 1, 1, 2, 2]
        assert opted["state"].astype(str).tolist()[4:] == ["accepted", "accepted"]
        # the first attempt's failure no longer counts: attempt 2 is the row's latest
        last = resend_messages(journal, statuses, client=client, resend_unknown=True)
        assert last.attrs["resend"]["resent"] == 0 and len(sb.messages()) == n + 3


def test_cancel_by_row_or_key_reaches_a_rows_waiting_follow_up(journal_at: Any) -> None:
    """A follow-up attempt waiting in the journal (quiet hours) is cancelled by the row's
    label or key, as its first attempt would be; the rest goes out on ``dispatch``."""
    with (
        sandbox(callback_delay=600, credits=1_000) as sb,
        MassivaClient(sb.usuario, sb.clave, sb.base_url) as client,
    ):
        journal = journal_at()
        df = campaign(4).assign(cuenta=[f"A{i}" for i in range(4)])
        first = mf.send(df, client=client, phone="tel", template="Hola {nombre}", key="cuenta",
                        journal=journal, window=("08:00", "20:00"), now="2026-03-02 10:00",
                        progress=False)  # fmt: skip
        ids = first["message_id"].astype(int).tolist()
        statuses = {ids[0]: "failed", ids[1]: "failed", ids[2]: "failed", ids[3]: "delivered"}
        n = len(sb.messages())
        night = resend_messages(journal, statuses, client=client, now="2026-03-02 22:00")
        assert night.attrs["resend"]["resent"] == 3 and len(sb.messages()) == n
        assert night["attempt"].tolist() == [2, 2, 2, 1]
        assert night["state"].astype(str).tolist() == ["scheduled"] * 3 + ["accepted"]

        by_row = mf.cancel(journal, rows=["c0"])
        assert (by_row.cancelled, by_row.sent) == (1, 1)  # attempt 2 cancelled, attempt 1 sent
        by_key = mf.cancel(journal, keys=["A1"])
        assert (by_key.cancelled, by_key.sent) == (1, 1)
        assert mf.cancel(journal, keys=["A3"]).cancelled == 0  # delivered: nothing waits

        morning = mf.dispatch(journal, client=client, now="2026-03-03 09:00")
        assert len(sb.messages()) == n + 1
        assert sb.messages()["phone"].iloc[-1] == first.loc["c2", "phone"]
        assert morning["state"].astype(str).tolist() == [
            "cancelled", "cancelled", "accepted", "accepted"
        ]  # fmt: skip
        assert morning["attempt"].tolist() == [2, 2, 2, 1]


def test_rows_left_without_a_final_status_go_out_after_pending_after(tmp_path: Path) -> None:
    with (
        sandbox(callback_delay=600, credits=1_000) as sb,
        MassivaClient(sb.usuario, sb.clave, sb.base_url) as client,
    ):
        journal = tmp_path / "j.db"
        first = mf.send(campaign(5), client=client, phone="tel", template="Hola {nombre}",
                        journal=journal, progress=False)  # fmt: skip
        sent = first["sent_at"].max()
        with pytest.raises(InputError, match="no final status"):
            resend_messages(journal, {}, client=client)
        soon = resend_messages(journal, {}, client=client, pending_after="2h",
                               now=sent + pd.Timedelta("1h"))  # fmt: skip
        assert soon.attrs["resend"] == ResendCounts(awaiting=5).as_dict()
        late = resend_messages(journal, {}, client=client, pending_after="2h",
                               now=sent + pd.Timedelta("3h"))  # fmt: skip
        assert late.attrs["resend"]["overdue"] == 5 and len(sb.messages()) == 10
        assert late["attempt"].tolist() == [2] * 5
        with pytest.raises(InputError, match="not a duration"):
            resend_messages(journal, {}, client=client, pending_after="soon")


def test_bad_input_is_a_clear_error(
    world: tuple[Sandbox, MassivaClient, Path], tmp_path: Path
) -> None:
    sb, client, logdir = world
    journal = tmp_path / "j.db"
    with pytest.raises(InputError, match="journal not found"):
        mf.resend(journal, logdir, client=client)
    first = mf.send(campaign(4), client=client, phone="tel", template="Hola {nombre}",
                    journal=journal, campaign="enero", progress=False)  # fmt: skip
    assert sb.wait_callbacks(30)
    wait_for_log(logdir, 4)
    with pytest.raises(InputError, match=r"campaign 'febrero' not found .*'enero'"):
        mf.resend(journal, logdir, client=client, campaign="febrero")
    with pytest.raises(InputError, match="log directory not found"):
        mf.resend(journal, tmp_path / "nowhere", client=client)
    other = pd.DataFrame(
        {
            "message_id": [9_999_001, 9_999_002],
            "status": ["failed", "failed"],
            "updated_at": pd.Timestamp("2030-01-01", tz="UTC"),
        }
    )
    with pytest.raises(InputError, match="none of the 2 message ids"):
        mf.resend(journal, other, client=client)
    with pytest.raises(InputError, match="states must be among"):
        mf.resend(journal, logdir, client=client, states=["delivered"])
    with pytest.raises(InputError, match="delivery must be"):
        mf.resend(journal, 42, client=client)
    # an attach_delivery frame works as well as the log
    attached = mf.attach_delivery(first, logdir)
    n = len(sb.messages())
    done = mf.resend(journal, attached, client=client)
    assert done.attrs["resend"]["resent"] == int((attached["state"] == "failed").sum())
    assert len(sb.messages()) == n + done.attrs["resend"]["resent"]


def _old_sqlite_journal(source: Path, target: Path) -> None:
    """``target``: the journal ``source`` holds, as a version 2 journal stored it (the
    messages without ``attempt`` and ``first_key``)."""
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    for name, sql in src.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"):
        if name.startswith("sqlite_"):
            continue
        if name == "messages":
            sql = sql.replace("attempt INTEGER NOT NULL DEFAULT 1,", "")
            sql = sql.replace("first_key TEXT,", "")
        dst.execute(sql)
        columns = [r[1] for r in dst.execute(f"PRAGMA table_info({name})")]
        names = ", ".join(columns)
        rows = src.execute(f"SELECT {names} FROM {name}").fetchall()
        marks = ", ".join("?" for _ in columns)
        dst.executemany(f"INSERT INTO {name} ({names}) VALUES ({marks})", rows)
    dst.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    dst.commit()
    src.close()
    dst.close()


def test_a_journal_written_before_attempts_is_read_then_migrated(
    world: tuple[Sandbox, MassivaClient, Path], tmp_path: Path
) -> None:
    sb, client, logdir = world
    made = tmp_path / "made.db"
    first = mf.send(campaign(10), client=client, phone="tel", template="Hola {nombre}",
                    journal=made, progress=False)  # fmt: skip
    old = tmp_path / "old.db"
    _old_sqlite_journal(made, old)
    columns = {r[1] for r in sqlite3.connect(old).execute("PRAGMA table_info(messages)")}
    assert "attempt" not in columns and "first_key" not in columns

    read = mf.results_from_journal(old)  # read-only: read as it is, not migrated
    pd.testing.assert_frame_equal(read, first)
    with Journal(old, readonly=True) as journal:
        assert journal.get_meta("schema_version") == 2 and not journal.has_attempts
    assert sb.wait_callbacks(30)
    statuses = wait_for_log(logdir, 10)
    dry = mf.resend(old, logdir, client=client, dry_run=True)  # plans on a migrated copy
    assert dry.attrs["resend"]["resent"] == int((statuses == "failed").sum())
    with Journal(old, readonly=True) as journal:
        assert not journal.has_attempts

    done = mf.resend(old, logdir, client=client)
    assert done.attrs["resend"]["resent"] == int((statuses == "failed").sum()) > 0
    with Journal(old, readonly=True) as journal:
        assert journal.get_meta("schema_version") == 3 and journal.has_attempts
    assert (done["attempt"] == 2).sum() == done.attrs["resend"]["resent"]
    again = mf.send(campaign(10), client=client, phone="tel", template="Hola {nombre}",
                    journal=old, progress=False)  # fmt: skip
    assert again.attrs["send"]["messages_due"] == 0  # a re-run still sends nothing
    pd.testing.assert_frame_equal(again.drop(columns=[]), done, check_like=True)


def test_a_postgres_journal_of_version_1_is_read_then_migrated(
    world: tuple[Sandbox, MassivaClient, Path], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb, client, logdir = world
    monkeypatch.setattr(postgres_connection, "MIGRATIONS", {1: postgres_schema.MIGRATIONS[1]})
    monkeypatch.setattr(postgres_connection, "SCHEMA_VERSION", 1)
    old = postgres_schema.results_sql(False), postgres_schema.multi_sql(False)
    monkeypatch.setattr(
        "massiva_frames.sending.journal.postgres_outbox.results_sql", lambda _=True: old[0]
    )
    monkeypatch.setattr(
        "massiva_frames.sending.journal.postgres_outbox.multi_sql", lambda _=True: old[1]
    )
    first = mf.send(
        campaign(8),
        client=client,
        phone="tel",
        template="Hola {nombre}",
        journal=pg_url,
        progress=False,
    )  # fmt: skip  (as version 1 wrote it)
    monkeypatch.undo()

    pd.testing.assert_frame_equal(mf.results_from_journal(pg_url), first)
    with PostgresJournal(pg_url, readonly=True) as journal:
        assert not journal.has_attempts
    assert sb.wait_callbacks(30)
    statuses = wait_for_log(logdir, 8)
    done = mf.resend(pg_url, logdir, client=client)
    assert done.attrs["resend"]["resent"] == int((statuses == "failed").sum()) > 0
    with PostgresJournal(pg_url, readonly=True) as journal:
        assert journal.has_attempts
    assert (done["attempt"] == 2).sum() == done.attrs["resend"]["resent"]


def test_attempt_keys_and_summary_without_the_column() -> None:
    assert attempt_key("k", 1) == "k" and attempt_key("k", 3) == "k#3"
    frame = pd.DataFrame(
        {
            "state": pd.Categorical(["delivered", "failed", "invalid"], categories=mf.STATES),
            "message_id": pd.array([1, 2, None], dtype="Int64"),
            "phone": ["584141000001", "584141000002", "x"],
        }
    )
    table = mf.delivery_summary(frame, by="attempt")
    assert table.loc[1, "rows"] == 2 and table["rows"].sum() == 3


def cli(sb: Sandbox, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MASSIVA_USUARIO": sb.usuario, "MASSIVA_CLAVE": sb.clave}
    env["MASSIVA_BASE_URL"] = sb.base_url
    env.pop("MASSIVA_JOURNAL", None)
    done = subprocess.run(
        [sys.executable, "-m", "massiva_frames.faces.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert sb.clave not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_the_resend_command(world: tuple[Sandbox, MassivaClient, Path], tmp_path: Path) -> None:
    sb, client, logdir = world
    journal = tmp_path / "j.db"
    base = ["resend", "--journal", str(journal), "--log", str(logdir)]
    missing = cli(sb, *base)
    assert missing.returncode == EXIT_FAILURE
    assert missing.stderr.startswith("massiva-frames resend: error: journal not found")
    first = mf.send(campaign(12), client=client, phone="tel", template="Hola {nombre}",
                    journal=journal, campaign="enero", progress=False)  # fmt: skip
    assert sb.wait_callbacks(30)
    statuses = wait_for_log(logdir, 12)
    n_failed = int((statuses == "failed").sum())
    assert n_failed

    shutil.copytree(logdir, tmp_path / "frozen")
    frozen = ["resend", "--journal", str(journal), "--log", str(tmp_path / "frozen")]
    bad_out = cli(sb, *base, "--out", str(tmp_path / "r.txt"))
    assert bad_out.returncode == EXIT_USAGE and "expected a file ending in" in bad_out.stderr
    bad_span = cli(sb, *base, "--pending-after", "soon")
    assert bad_span.returncode == EXIT_USAGE
    assert bad_span.stderr.startswith("massiva-frames resend: error: --pending-after 'soon'")
    wrong = cli(sb, *base, "--campaign", "febrero")
    assert wrong.returncode == EXIT_FAILURE and "campaign 'febrero' not found" in wrong.stderr

    dry = cli(sb, *base, "--dry-run")
    assert dry.returncode == EXIT_OK, dry.stdout + dry.stderr
    assert f"follow-up: would send again {n_failed} row(s) ({n_failed} failed)" in dry.stdout
    n = len(sb.messages())
    assert n == 12

    out = tmp_path / "r.parquet"
    done = cli(sb, *frozen, "--campaign", "enero", "--states", "failed", "--out", str(out))
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    assert f"follow-up: sent again {n_failed} row(s)" in done.stdout
    assert len(sb.messages()) == 12 + n_failed
    written = pd.read_parquet(out)
    assert (written["attempt"] == 2).sum() == n_failed
    assert written["first_message_id"].tolist() == first["message_id"].tolist()

    # the same follow-up again, on the log as it was (attempt 2's callbacks may be in
    # the live one): nothing is sent twice
    again = cli(sb, *frozen, "--out", str(out))
    assert again.returncode == EXIT_OK, again.stdout
    assert "follow-up: sent again 0 row(s)" in again.stdout
    assert len(sb.messages()) == 12 + n_failed


def test_a_split_row_goes_out_again_whole_and_copies_keep_attempts(
    tmp_path: Path, pg_url: str
) -> None:
    with (
        sandbox(callback_delay=600, credits=1_000) as sb,
        MassivaClient(sb.usuario, sb.clave, sb.base_url) as client,
    ):
        journal = tmp_path / "j.db"
        df = campaign(3)
        df["msg"] = ["Hola", " ".join(f"palabra{i}" for i in range(40)), "Chao"]
        first = mf.send(df, client=client, phone="tel", text="msg", long_text="split",
                        journal=journal, progress=False)  # fmt: skip
        parts = sb.messages().query("phone == @first.phone.iloc[1]")["id"].tolist()
        assert len(parts) > 1 and len(sb.messages()) == len(parts) + 2  # the long text split
        statuses = {i: "delivered" for i in parts[:1]} | {i: "failed" for i in parts[1:]}
        statuses[int(first["message_id"].iloc[2])] = "failed"
        partly = resend_messages(journal, statuses, client=client)
        assert partly.attrs["resend"]["resent"] == 1  # a part delivered: the row is left
        assert partly.attrs["resend"]["not_chosen"] == 1
        statuses[parts[0]] = "failed"
        n = len(sb.messages())
        done = resend_messages(journal, statuses, client=client)
        assert done.attrs["resend"]["resent"] == 1 and len(sb.messages()) == n + len(parts)
        new = sb.messages().iloc[n:]
        assert new["phone"].tolist() == [first["phone"].iloc[1]] * len(parts)
        assert done["attempt"].tolist() == [1, 2, 2]
        assert done["state"].astype(str).tolist() == ["accepted"] * 3
        assert done["first_message_id"].iloc[1] == parts[0]

    assert mf.faces.cli.main(["journal", "copy", str(journal), pg_url]) == 0
    copied = mf.results_from_journal(pg_url)
    pd.testing.assert_frame_equal(copied, done)
    back = tmp_path / "back.db"
    assert mf.faces.cli.main(["journal", "copy", pg_url, str(back)]) == 0
    pd.testing.assert_frame_equal(mf.results_from_journal(back), done)
