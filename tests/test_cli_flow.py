"""The command line as a cron job meets it: send → re-run → dispatch → cancel → follow-up
(``resend``), as subprocesses.

Each step runs ``python -m massiva_frames.faces.cli`` against a real sandbox on
127.0.0.1 and checks its exit code, its messages and what reached the sandbox. The files
are made here: a Spanish Excel export as CSV (cp1252, ``;``, accents, a non-breaking
space), an ``.xlsx`` written with openpyxl, and an output folder that does not exist.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from massiva_frames.faces.cli import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL
from massiva_frames.sandbox import Sandbox, sandbox

SECRET = "Fl0w-s3cr3t;|&="
USER = "flow@massiva.test"
PREFIX_LINES = ("massiva-frames ", "journal: ")


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with sandbox(usuario=USER, clave=SECRET, credits=1_000, callback_delay=60) as server:
        yield server


def cli(sb: Sandbox, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MASSIVA_USUARIO": USER, "MASSIVA_CLAVE": SECRET}
    env["MASSIVA_BASE_URL"] = sb.base_url
    done = subprocess.run(
        [sys.executable, "-m", "massiva_frames.faces.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert SECRET not in done.stdout + done.stderr and "s3cr3t" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done


def sends(sb: Sandbox) -> int:
    return int((sb.requests()["path"] == "/webservices/SendSms").sum())


def test_spanish_csv_send_rerun_dispatch(sb: Sandbox, tmp_path: Path) -> None:
    source = tmp_path / "clientes.csv"
    source.write_bytes(
        (
            "cliente;telefono;nombre;saldo\r\n"
            "c-01;0414-1234567;José Peña;1234,5\r\n"
            "c-02;0424\xa01234568;Ángela Núñez;10\r\n"
            "c-03;0212-5551234;Fijo;0\r\n"
            "c-04;04161234569;Iñaki;7\r\n"
        ).encode("cp1252")
    )
    journal, out = tmp_path / "envios.db", tmp_path / "resultados.csv"
    send = ["send", str(source), "--phone", "telefono", "--template", "Hola {nombre}"]
    send += ["--key", "cliente", "--keep", "nombre", "--journal", str(journal)]
    send += ["--out", str(out), "--no-progress"]

    first = cli(sb, *send)
    assert first.returncode == EXIT_PARTIAL, first.stderr  # the landline: newly invalid
    assert f"{source} is not UTF-8: read it as cp1252" in first.stderr
    assert all(line.startswith(PREFIX_LINES) for line in first.stderr.splitlines())
    assert "this run: 1 request(s) · 3 message(s) · 3 accepted" in first.stdout
    assert "needs a look (exit 3): 1 newly invalid" in first.stdout
    listed = first.stdout[first.stdout.index("row(s) not sent") :].splitlines()
    assert listed[2].split() == ["4", "invalid", "phone_landline", "0212-5551234"]
    assert sends(sb) == 1
    texts = sb.messages().set_index("phone")["text"]
    assert texts["584141234567"] == "Hola José Peña"
    assert texts["584241234568"] == "Hola Ángela Núñez"  # the NBSP phone normalised
    results = pd.read_csv(out, dtype=str, encoding="utf-8")
    assert list(results.columns[:3]) == ["input_line", "cliente", "nombre"]
    assert results[["input_line", "cliente", "state"]].values.tolist() == [
        ["2", "c-01", "accepted"],
        ["3", "c-02", "accepted"],
        ["4", "c-03", "invalid"],
        ["5", "c-04", "accepted"],
    ]
    assert results["nombre"].tolist()[:2] == ["José Peña", "Ángela Núñez"]

    again = cli(sb, *send)
    assert again.returncode == EXIT_OK, again.stdout
    assert "this run: nothing to send (every sendable row was already sent" in again.stdout
    assert "None" not in again.stdout and sends(sb) == 1
    pd.testing.assert_frame_equal(pd.read_csv(out, dtype=str), results)

    dispatched = cli(sb, "dispatch", "--journal", str(journal), "--out", str(tmp_path / "d.csv"))
    assert dispatched.returncode == EXIT_OK and sends(sb) == 1
    assert "this run: nothing to send" in dispatched.stdout and "None" not in dispatched.stdout
    assert pd.read_csv(tmp_path / "d.csv")["input_line"].tolist() == [2, 3, 4, 5]


def test_xlsx_scheduled_then_dispatched(sb: Sandbox, tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    book.active.title = "Notas"
    sheet = book.create_sheet("Clientes")
    sheet.append(["telefono", "nombre", "saldo"])
    sheet.append(["04141234567", "José", 1234.5])
    sheet.append([None, None, None])  # a blank row: sheet row 3 stays row 3
    sheet.append([4241234567, "Ñandú", 3])
    source = tmp_path / "clientes.xlsx"
    book.save(source)
    journal = tmp_path / "j.db"

    scheduled = cli(
        sb, "send", str(source), "--sheet", "Clientes", "--phone", "telefono",
        "--template", "Hola {nombre}, saldo {saldo:,.2f}", "--journal", str(journal),
        "--out", str(tmp_path / "r.parquet"), "--send-at", "2030-01-07 09:00",
        "--window", "08:00-20:00", "--no-progress",
    )  # fmt: skip
    # the blank row is invalid (phone_missing): it needs a look; the rest waits as asked
    assert scheduled.returncode == EXIT_PARTIAL, scheduled.stdout
    assert "2 message(s) scheduled for later (massiva-frames dispatch)" in scheduled.stdout
    assert sends(sb) == 0
    plan = pd.read_parquet(tmp_path / "r.parquet")
    assert plan["input_line"].tolist() == [2, 3, 4]
    assert plan["state"].astype(str).tolist() == ["scheduled", "invalid", "scheduled"]

    early = cli(sb, "dispatch", "--journal", str(journal), "--now", "2030-01-07 08:59")
    assert early.returncode == EXIT_OK and sends(sb) == 0
    assert "nothing to send" in early.stdout and "2 message(s) scheduled for later" in early.stdout
    out = tmp_path / "d.parquet"
    due = cli(
        sb, "dispatch", "--journal", str(journal), "--now", "2030-01-07 09:00", "--out", str(out)
    )
    assert due.returncode == EXIT_OK, due.stderr
    assert "this run: 1 request(s) · 2 message(s) · 2 accepted" in due.stdout
    assert sends(sb) == 1
    assert sorted(sb.messages()["text"]) == ["Hola José, saldo 1,234.50", "Hola Ñandú, saldo 3.00"]
    done = pd.read_parquet(out)
    assert done["input_line"].tolist() == [2, 3, 4]
    assert done["state"].astype(str).tolist() == ["accepted", "invalid", "accepted"]
    rerun = cli(sb, "dispatch", "--journal", str(journal), "--now", "2030-01-07 10:00")
    assert rerun.returncode == EXIT_OK and sends(sb) == 1


def test_unwritable_output_sends_nothing(sb: Sandbox, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("telefono,nombre\n04141234567,Ana\n")
    out = tmp_path / "missing" / "dir" / "r.parquet"
    done = cli(
        sb, "send", str(source), "--phone", "telefono", "--template", "Hola {nombre}",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == EXIT_FAILURE
    assert done.stderr == (
        f"massiva-frames send: error: --out {out}: the folder {out.parent} does not exist\n"
    )
    assert sb.requests().empty  # not even the credit query
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_send_rerun_dispatch_cancel_then_follow_up(tmp_path: Path) -> None:
    """The exit codes of one campaign's life: send (all scheduled) → re-run → dispatch →
    cancel → follow-up (``resend`` of the failed deliveries) → the same follow-up again."""
    import massiva_frames as mf

    source = tmp_path / "clientes.csv"
    lines = ["cliente,telefono,nombre,cuando"]
    lines += [f"c-0{i},0414100000{i},Cliente {i},2030-01-07 09:00" for i in range(1, 7)]
    lines += [f"c-0{i},0414100000{i},Cliente {i},2030-01-08 09:00" for i in (7, 8)]
    source.write_text("\n".join(lines) + "\n")
    journal, logdir = tmp_path / "envios.db", tmp_path / "logs"
    send = ["send", str(source), "--phone", "telefono", "--template", "Hola {nombre}"]
    send += ["--key", "cliente", "--send-at", "cuando", "--journal", str(journal)]
    send += ["--campaign", "enero", "--out", str(tmp_path / "r.csv"), "--no-progress"]
    with (
        mf.receiver(logdir) as rc,
        sandbox(usuario=USER, clave=SECRET, credits=1_000, status_url=rc.url,
                callback_delay=0.1, fail_ratio=0.5, seed=3) as sb,
    ):  # fmt: skip
        scheduled = cli(sb, *send)
        assert scheduled.returncode == EXIT_OK, scheduled.stdout + scheduled.stderr
        assert "8 message(s) scheduled for later" in scheduled.stdout and sends(sb) == 0
        rerun = cli(sb, *send)
        assert rerun.returncode == EXIT_OK and sends(sb) == 0

        due = cli(sb, "dispatch", "--journal", str(journal), "--now", "2030-01-07 09:00")
        assert due.returncode == EXIT_OK, due.stdout + due.stderr
        assert "6 message(s) · 6 accepted" in due.stdout and sends(sb) == 1

        cancelled = cli(sb, "cancel", "--journal", str(journal), "--key", "c-07")
        assert cancelled.returncode == EXIT_OK and "cancelled 1 messages" in cancelled.stdout
        too_late = cli(sb, "cancel", "--journal", str(journal), "--key", "c-01")
        assert too_late.returncode == EXIT_PARTIAL  # already sent: not cancelled

        assert sb.wait_callbacks(30)
        truth = sb.messages()
        failed = sorted(truth.loc[truth["final"] == "failed", "phone"])
        assert 0 < len(failed) < 6
        deadline = time.monotonic() + 20
        while len(mf.read_callbacks(logdir)) < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        frozen = tmp_path / "logs-then"  # the log as the follow-up reads it
        shutil.copytree(logdir, frozen)
        follow = ["resend", "--journal", str(journal), "--log", str(frozen)]
        out = tmp_path / "f.parquet"
        resent = cli(sb, *follow, "--out", str(out))
        assert resent.returncode == EXIT_OK, resent.stdout + resent.stderr
        assert f"follow-up: sent again {len(failed)} row(s) ({len(failed)} failed)" in resent.stdout
        assert sends(sb) == 2
        assert sorted(sb.messages()["phone"].iloc[6:]) == failed
        rows = pd.read_parquet(out)
        assert rows["input_line"].tolist() == list(range(2, 10))
        assert (rows["attempt"] == 2).sum() == len(failed)
        assert rows["state"].astype(str).tolist()[6:] == ["cancelled", "scheduled"]

        again = cli(sb, *follow)
        assert again.returncode == EXIT_OK and "sent again 0 row(s)" in again.stdout
        assert sends(sb) == 2
        lost = cli(sb, "resend", "--journal", str(tmp_path / "nope.db"), "--log", str(frozen))
        assert lost.returncode == EXIT_FAILURE
        assert lost.stderr.startswith("massiva-frames resend: error: journal not found")

        last = cli(sb, "dispatch", "--journal", str(journal), "--now", "2030-01-08 09:00")
        assert last.returncode == EXIT_OK and "1 message(s) · 1 accepted" in last.stdout
        assert sends(sb) == 3 and sb.messages()["phone"].iloc[-1] == "584141000008"
