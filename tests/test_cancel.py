"""cancel() and ``massiva-frames cancel`` over a real journal and a real sandbox.

Rows are scheduled with ``send_at``, cancelled by campaign, time, index label or key,
then ``dispatch`` runs past their time: what reaches the sandbox is exactly the rows
that were not cancelled, and a re-run of the send or dispatch never sends a cancelled
row. Rows already sent are counted and left as they are.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import massiva_frames as mf
from massiva_frames.errors import InputError
from massiva_frames.faces.cli import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
from massiva_frames.sandbox import Sandbox, sandbox
from massiva_frames.sending.journal.sqlite import Journal
from massiva_frames.wire.client import MassivaClient

DAY1, DAY2 = "2030-01-07 09:00", "2030-01-08 09:00"
LATER = "2030-01-09 10:00"


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with sandbox(credits=1_000, callback_delay=60) as server:
        yield server


@pytest.fixture
def client(sb: Sandbox) -> Iterator[MassivaClient]:
    with MassivaClient(sb.usuario, sb.clave, sb.base_url, timeout=(2, 5)) as c:
        yield c


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "cliente": ["c-1", "c-2", "c-3", "c-4"],
            "tel": ["04141000001", "04141000002", "04141000003", "04141000004"],
            "nombre": ["Ana", "Beto", "Carla", "Dani"],
            "cuando": [DAY1, DAY1, DAY2, DAY2],
        },
        index=pd.Index(["a", "b", "c", "d"], name="id"),
    )


def schedule(client: MassivaClient, journal: Path, df: pd.DataFrame, **kw: object) -> pd.DataFrame:
    options: dict[str, object] = {"phone": "tel", "template": "Hola {nombre}", "send_at": "cuando"}
    options.update(kw)
    out: pd.DataFrame = mf.send(df, client=client, journal=journal, progress=False, **options)
    return out


def sent_phones(sb: Sandbox) -> list[str]:
    messages = sb.messages()
    return sorted(messages["phone"]) if len(messages) else []


def test_cancel_before_a_time_then_dispatch_sends_only_the_rest(
    sb: Sandbox, client: MassivaClient, journal_at: Any
) -> None:
    journal = journal_at()  # a SQLite file, then a PostgreSQL journal
    df = frame()
    planned = schedule(client, journal, df)
    assert planned["state"].astype(str).tolist() == ["scheduled"] * 4

    counts = mf.cancel(journal, before="2030-01-07 12:00")
    assert counts == mf.CancelCounts(cancelled=2)
    assert mf.cancel(journal, before="2030-01-07 12:00") == mf.CancelCounts(already_cancelled=2)

    after = mf.results_from_journal(journal)
    assert after["state"].astype(str).tolist() == [
        "cancelled",
        "cancelled",
        "scheduled",
        "scheduled",
    ]
    assert after.loc["a", "reason"] == "cancelled"

    done = mf.dispatch(journal, client=client, now=LATER)
    assert done["state"].astype(str).tolist() == ["cancelled", "cancelled", "accepted", "accepted"]
    assert sent_phones(sb) == ["584141000003", "584141000004"]
    # neither a re-run of the send nor another dispatch sends a cancelled row
    rerun = schedule(client, journal, df, now=LATER)
    assert rerun["state"].astype(str).tolist() == done["state"].astype(str).tolist()
    mf.dispatch(journal, client=client, now=LATER)
    assert len(sb.messages()) == 2
    summary = mf.delivery_summary(done, by=None)
    assert int(summary.loc["all", "cancelled"]) == 2 and int(summary.loc["all", "sent"]) == 2


def test_cancel_by_campaign(sb: Sandbox, client: MassivaClient, tmp_path: Path) -> None:
    journal = tmp_path / "j.db"
    df = frame()
    schedule(client, journal, df.iloc[:2], campaign="enero")
    schedule(client, journal, df.iloc[2:], campaign="febrero")
    assert mf.cancel(journal, campaign="enero") == mf.CancelCounts(cancelled=2)
    assert mf.cancel(journal, campaign="marzo") == mf.CancelCounts()
    mf.dispatch(journal, client=client, now=LATER)
    assert sent_phones(sb) == ["584141000003", "584141000004"]


def test_cancel_by_rows_and_by_keys(sb: Sandbox, client: MassivaClient, tmp_path: Path) -> None:
    journal = tmp_path / "j.db"
    df = frame()
    planned = schedule(client, journal, df, key="cliente")
    # a filtered results frame names its rows by index label
    assert mf.cancel(journal, rows=planned.loc[["b"]]) == mf.CancelCounts(cancelled=1)
    assert mf.cancel(journal, keys=["c-4"]) == mf.CancelCounts(cancelled=1)
    # filters combine: row "a" is not of campaign "other", so nothing matches
    assert mf.cancel(journal, rows=["a"], campaign="other") == mf.CancelCounts()
    done = mf.dispatch(journal, client=client, now=LATER)
    assert done["state"].astype(str).tolist() == ["accepted", "cancelled", "accepted", "cancelled"]
    assert sent_phones(sb) == ["584141000001", "584141000003"]


def test_sent_rows_are_counted_and_left_alone(
    sb: Sandbox, client: MassivaClient, tmp_path: Path
) -> None:
    journal = tmp_path / "j.db"
    df = frame().drop(columns="cuando")
    sent = mf.send(df, client=client, journal=journal, phone="tel", text="nombre", progress=False)
    assert (sent["state"] == "accepted").all()
    assert mf.cancel(journal, campaign="") == mf.CancelCounts(sent=4)
    assert (mf.results_from_journal(journal)["state"] == "accepted").all()


def test_split_row_is_cancelled_whole(sb: Sandbox, client: MassivaClient, journal_at: Any) -> None:
    journal = journal_at()  # a SQLite file, then a PostgreSQL journal
    df = frame().iloc[:1].assign(nombre="x" * 300)
    planned = schedule(client, journal, df, long_text="split")
    assert mf.cancel(journal, rows=planned.index).cancelled == 2  # both parts
    done = mf.dispatch(journal, client=client, now=LATER)
    assert done["state"].astype(str).tolist() == ["cancelled"]
    assert mf.results_from_journal(journal)["state"].astype(str).tolist() == ["cancelled"]
    assert len(sb.messages()) == 0


def test_cancel_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="journal not found"):
        mf.cancel(tmp_path / "none.db", campaign="x")
    journal = tmp_path / "j.db"
    Journal(journal).close()
    with pytest.raises(InputError, match="campaign=, before=, rows= or keys="):
        mf.cancel(journal)
    with pytest.raises(InputError, match="not a date and time"):
        mf.cancel(journal, before="someday")


# --- the command line ----------------------------------------------------------------


def cli(sb: Sandbox, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MASSIVA_USUARIO": sb.usuario, "MASSIVA_CLAVE": sb.clave}
    env["MASSIVA_BASE_URL"] = sb.base_url
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


def test_cli_cancel_exit_codes(sb: Sandbox, tmp_path: Path) -> None:
    source, journal = tmp_path / "in.csv", tmp_path / "j.db"
    frame().to_csv(source, index=False)
    out = tmp_path / "r.csv"
    scheduled = cli(
        sb, "send", str(source), "--phone", "tel", "--template", "Hola {nombre}",
        "--key", "cliente", "--send-at", DAY1, "--journal", str(journal),
        "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert scheduled.returncode == EXIT_OK, scheduled.stderr

    usage = cli(sb, "cancel", "--journal", str(journal))
    assert usage.returncode == EXIT_USAGE
    assert usage.stderr.startswith("massiva-frames cancel: error: say what to cancel")
    missing = cli(sb, "cancel", "--journal", str(tmp_path / "none.db"), "--campaign", "x")
    assert missing.returncode == EXIT_FAILURE
    assert missing.stderr.startswith("massiva-frames cancel: error: journal not found")

    by_key = cli(sb, "cancel", "--journal", str(journal), "--key", "c-1", "c-2")
    assert by_key.returncode == EXIT_OK, by_key.stderr
    assert by_key.stdout.strip() == "cancelled 2 messages"
    rows = tmp_path / "rows.csv"
    pd.read_csv(out).query("cliente == 'c-3'").to_csv(rows, index=False)  # line 4
    by_rows = cli(sb, "cancel", "--journal", str(journal), "--rows", str(rows))
    assert by_rows.returncode == EXIT_OK and "cancelled 1 messages" in by_rows.stdout
    no_lines = tmp_path / "bad.csv"
    no_lines.write_text("cliente\nc-4\n")
    bad = cli(sb, "cancel", "--journal", str(journal), "--rows", str(no_lines))
    assert bad.returncode == EXIT_FAILURE and "no input_line column" in bad.stderr

    dispatched = cli(sb, "dispatch", "--journal", str(journal), "--now", LATER, "--out", str(out))
    assert dispatched.returncode == EXIT_OK, dispatched.stderr
    assert sent_phones(sb) == ["584141000004"]
    states = pd.read_csv(out)["state"].tolist()
    assert states == ["cancelled", "cancelled", "cancelled", "accepted"]

    too_late = cli(sb, "cancel", "--journal", str(journal), "--before", LATER)
    assert too_late.returncode == EXIT_PARTIAL
    assert "cancelled 0 messages (3 were already cancelled)" in too_late.stdout
    assert "not cancelled: 1 already sent" in too_late.stdout


def test_rows_of_a_range_index_and_a_busy_journal(
    sb: Sandbox, client: MassivaClient, tmp_path: Path
) -> None:
    journal = tmp_path / "j.db"
    planned = schedule(client, journal, frame().reset_index(drop=True))  # labels 0..3
    picked = planned.iloc[[1, 3]]
    assert mf.cancel(journal, rows=picked) == mf.CancelCounts(cancelled=2)
    assert mf.cancel(journal, rows=[7, "1", 2.5]) == mf.CancelCounts()  # no such rows
    with Journal(journal) as busy:
        busy.lock()  # a dispatch under way
        with pytest.raises(mf.JournalBusyError):
            mf.cancel(journal, rows=[0])
    states = mf.results_from_journal(journal)["state"].astype(str).tolist()
    assert states == ["scheduled", "cancelled", "scheduled", "cancelled"]
