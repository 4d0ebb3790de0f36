"""``massiva-frames send`` and ``dispatch`` against the sandbox: files, exit codes, secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from massiva_frames.faces.cli import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, main
from massiva_frames.sandbox import Sandbox, sandbox

SECRET = "Zx9-s3cr3t;|&="
USER = "cli@massiva.test"


@pytest.fixture
def sb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    with sandbox(usuario=USER, clave=SECRET, credits=1_000, callback_delay=60) as server:
        monkeypatch.setenv("MASSIVA_USUARIO", USER)
        monkeypatch.setenv("MASSIVA_CLAVE", SECRET)
        monkeypatch.setenv("MASSIVA_BASE_URL", server.base_url)
        yield server


def sends(sb: Sandbox) -> int:
    return int((sb.requests()["path"] == "/webservices/SendSms").sum())


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("telefono,nombre\n" + "".join(f"{p},{n}\n" for p, n in rows))
    return path


GOOD = [("04141234567", "Ana"), ("0424-1234568", "Luis"), ("04161234569", "Eva")]
MIXED = [*GOOD, ("0212-5551234", "Fijo"), ("04141234567", "Ana")]  # landline, duplicate


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert SECRET not in out + err and "s3cr3t" not in out + err
    assert "Traceback" not in out + err
    return code, out, err


def test_all_accepted_exits_0_and_rerun_sends_nothing(
    sb: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_csv(tmp_path / "in.csv", GOOD)
    out = tmp_path / "results.parquet"
    argv = ["send", str(source), "--phone", "telefono", "--template", "Hola {nombre}"]
    argv += ["--out", str(out), "--journal", str(tmp_path / "j.db"), "--no-progress"]
    code, stdout, _ = run_cli(capsys, *argv)
    assert code == EXIT_OK
    results = pd.read_parquet(out)
    assert list(results["state"]) == ["accepted"] * 3
    assert list(results["phone"]) == ["584141234567", "584241234568", "584161234569"]
    assert "accepted" in stdout and "1 request(s)" in stdout
    assert sends(sb) == 1
    code, _, _ = run_cli(capsys, *argv)
    assert code == EXIT_OK and sends(sb) == 1
    pd.testing.assert_frame_equal(pd.read_parquet(out), results)


def test_partial_exits_3_and_csv_output_speaks_in_file_lines(
    sb: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_csv(tmp_path / "in.csv", MIXED)
    out = tmp_path / "results.csv"
    code, stdout, _ = run_cli(
        capsys, "send", str(source), "--phone", "telefono", "--template", "Hola {nombre}",
        "--out", str(out), "--no-progress", "--method", "GET",
    )  # fmt: skip
    assert code == EXIT_PARTIAL
    assert "needs a look (exit 3): 1 newly invalid" in stdout
    results = pd.read_csv(out, dtype={"phone": str})
    assert list(results["input_line"]) == [2, 3, 4, 5, 6]  # the header is line 1
    assert list(results["state"]) == ["accepted", "accepted", "accepted", "invalid", "suppressed"]
    assert "phone_landline" in stdout and "duplicate" in stdout
    # the rows to look at are listed by line, with the phone as the file has it
    listed = stdout[stdout.index("row(s) not sent") :].splitlines()
    assert listed[1].split() == ["line", "state", "reason", "telefono"]
    assert listed[2].split() == ["5", "invalid", "phone_landline", "0212-5551234"]
    assert set(sb.requests()["method"]) == {"GET"}


def test_parquet_input_text_column_and_dry_run(
    sb: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.parquet"
    pd.DataFrame(
        {"tel": ["04141234567", "04241234567"], "msg": ["Hola", "Chao"]}, index=["a", "b"]
    ).to_parquet(source)
    out = tmp_path / "plan.parquet"
    code, stdout, _ = run_cli(
        capsys, "send", str(source), "--phone", "tel", "--text", "msg", "--out", str(out),
        "--dry-run", "--journal", str(tmp_path / "j.db"),
    )  # fmt: skip
    assert code == EXIT_OK
    assert "dry run:" in stdout and "credits needed 2" in stdout and "available 1000" in stdout
    assert "journal:" not in stdout  # a dry run journals nothing
    assert sends(sb) == 0 and not (tmp_path / "j.db").exists()
    plan = pd.read_parquet(out)
    assert list(plan["input_line"]) == [1, 2] and set(plan["reason"]) == {"dry_run"}


def test_failures_exit_1_with_one_line(
    sb: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_csv(tmp_path / "in.csv", GOOD)
    base = ["send", str(source), "--phone", "telefono", "--template", "Hola {nombre}"]
    out = str(tmp_path / "r.parquet")

    sb.set_credits(2)
    code, _, err = run_cli(capsys, *base, "--out", out)
    assert code == EXIT_FAILURE
    assert err.startswith("massiva-frames send: error: InsufficientCreditsError: ")
    assert "needs 3 credits" in err and "has 2" in err
    assert err.count("\n") == 1 and sends(sb) == 0
    assert not [p for p in tmp_path.iterdir() if "journal" in p.name]  # nothing to keep

    monkeypatch.setenv("MASSIVA_CLAVE", SECRET + "x")
    code, _, err = run_cli(capsys, *base, "--out", out)
    assert code == EXIT_FAILURE and "AuthenticationError" in err and err.count("\n") == 1

    monkeypatch.delenv("MASSIVA_CLAVE")
    code, _, err = run_cli(capsys, *base, "--out", out)
    assert code == EXIT_FAILURE and "MASSIVA_CLAVE" in err

    code, _, err = run_cli(
        capsys, "send", str(tmp_path / "missing.csv"), "--text", "t", "--out", out
    )
    assert code == EXIT_FAILURE and "missing.csv: no such file" in err
    code, _, err = run_cli(capsys, *base, "--out", str(tmp_path / "r.xlsx"))
    assert code == EXIT_USAGE and ".parquet or .pq or .csv" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["send", "in.csv", "--out", "r.parquet"])  # neither --text nor --template
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["dispatch"])
    assert info.value.code == 2
    capsys.readouterr()


def test_account_error_mid_run_writes_what_was_sent(
    sb: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_csv(tmp_path / "in.csv", GOOD)
    out = tmp_path / "r.parquet"
    sb.set_credits(1_000, company=1)  # the company runs out after the first message
    code, stdout, err = run_cli(
        capsys, "send", str(source), "--phone", "telefono", "--template", "Hola {nombre}",
        "--out", str(out), "--max-phones", "1", "--concurrency", "1", "--no-progress",
        "--journal", str(tmp_path / "j.db"),
    )  # fmt: skip
    assert code == EXIT_FAILURE and "InsufficientCreditsError" in err
    results = pd.read_parquet(out).set_index("input_line")
    assert list(results["state"]) == ["accepted", "scheduled", "scheduled"]
    assert results.loc[3, "reason"] == "not_sent_insufficient_credits"
    assert results.loc[4, "reason"] == "run_stopped"
    assert "accepted" in stdout


def send_for_later(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> tuple[str, int, str]:
    """Send GOOD for 2030-01-07 09:00 (Caracas): the journal, the exit code, stdout."""
    source = write_csv(tmp_path / "in.csv", GOOD)
    journal = str(tmp_path / "j.db")
    code, stdout, _ = run_cli(
        capsys, "send", str(source), "--phone", "telefono", "--template", "Hola {nombre}",
        "--out", str(tmp_path / "r.parquet"), "--journal", journal,
        "--send-at", "2030-01-07 09:00", "--window", "08:00-20:00",
    )  # fmt: skip
    return journal, code, stdout


def disk_full(self: pd.DataFrame, path: object, *args: object, **kwargs: object) -> None:
    """``DataFrame.to_parquet`` on a full disk."""
    import errno

    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def test_dispatch_sends_what_is_due(
    sb: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal, code, stdout = send_for_later(capsys, tmp_path)
    # scheduled for later is what was asked: not a row to look at
    assert code == EXIT_OK and "not_due" in stdout and sends(sb) == 0
    assert "3 message(s) scheduled for later (massiva-frames dispatch)" in stdout

    code, stdout, _ = run_cli(capsys, "dispatch", "--journal", journal, "--now", "2030-01-07 08:59")
    assert code == EXIT_OK and sends(sb) == 0  # nothing due yet
    assert "nothing to send" in stdout and "None" not in stdout
    out = tmp_path / "after.parquet"
    code, stdout, _ = run_cli(
        capsys, "dispatch", "--journal", journal, "--now", "2030-01-07 09:00", "--out", str(out)
    )
    assert code == EXIT_OK and sends(sb) == 1
    after = pd.read_parquet(out)
    assert (after["state"] == "accepted").all() and list(after["input_line"]) == [2, 3, 4]
    code, _, err = run_cli(capsys, "dispatch", "--journal", str(tmp_path / "nope.db"))
    assert code == EXIT_FAILURE
    assert err.startswith("massiva-frames dispatch: error: journal not found")


def test_dispatch_whose_out_cannot_be_written_points_to_its_journal(
    sb: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills before dispatch writes --out: what it sent stays in the journal."""
    from massiva_frames.sending.campaign import results_from_journal

    journal, code, _ = send_for_later(capsys, tmp_path)
    assert code == EXIT_OK and sends(sb) == 0

    monkeypatch.setattr(pd.DataFrame, "to_parquet", disk_full)
    out = tmp_path / "after.parquet"
    code, stdout, err = run_cli(
        capsys, "dispatch", "--journal", journal, "--now", "2030-01-07 09:00", "--out", str(out)
    )
    assert code == EXIT_FAILURE and sends(sb) == 1
    assert "accepted" in stdout and "results written" not in stdout  # the summary, no file
    assert err.startswith(f"massiva-frames dispatch: error: cannot write --out {out}: ")
    assert "No space left on device" in err
    assert err.rstrip().endswith(
        f"; nothing is lost: the results are in the journal {journal}: load them with "
        f"mf.results_from_journal({journal!r})"
    )
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    assert list(results_from_journal(journal)["state"]) == ["accepted"] * 3


def test_console_script_in_a_subprocess(sb: Sandbox, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", MIXED)
    env = {**os.environ, "MASSIVA_USUARIO": USER, "MASSIVA_CLAVE": SECRET}
    env["MASSIVA_BASE_URL"] = sb.base_url
    argv = [sys.executable, "-m", "massiva_frames.faces.cli", "send", str(source)]
    argv += ["--phone", "telefono", "--template", "Hola {nombre}", "--out"]
    done = subprocess.run(
        [*argv, str(tmp_path / "r.parquet")], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == EXIT_PARTIAL, done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert "massiva send" in done.stderr  # the progress bar, on stderr
    env["MASSIVA_CLAVE"] = "wrong"
    done = subprocess.run(
        [*argv, str(tmp_path / "r2.parquet"), "--journal", str(tmp_path / "j.db")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == EXIT_FAILURE
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1


def test_journal_and_results_hold_no_credentials(
    sb: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_csv(tmp_path / "in.csv", MIXED)
    journal = tmp_path / "j.db"
    out = tmp_path / "r.parquet"
    code, _, _ = run_cli(
        capsys, "send", str(source), "--phone", "telefono", "--template", "Hola {nombre}",
        "--out", str(out), "--journal", str(journal), "--method", "GET",
    )  # fmt: skip
    assert code == EXIT_PARTIAL
    written = [p for p in tmp_path.iterdir() if p.name.startswith(("j.db", "r."))]
    assert journal in written and out in written
    for path in written:
        data = path.read_bytes()
        for secret in (SECRET, USER, "s3cr3t"):
            assert secret.encode() not in data, (path.name, secret)


# -- results that join back ------------------------------------------------------------


def test_results_keep_the_line_the_key_and_the_kept_columns(
    sb: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(
        "cliente,telefono,nombre,batch,line\n"
        "c-01,04141234567,Ana,x,1\n"
        "c-02,0212-5551234,Fijo,y,2\n"
        "c-03,04241234568,Luis,z,3\n"
    )
    out = tmp_path / "r.parquet"
    code, _, _ = run_cli(
        capsys, "send", str(source), "--phone", "telefono", "--template", "Hola {nombre}",
        "--out", str(out), "--key", "cliente", "--keep", "nombre", "--keep", "batch",
        "--keep", "line", "--no-progress",
    )  # fmt: skip
    assert code == EXIT_PARTIAL
    results = pd.read_parquet(out)
    assert list(results.columns[:4]) == ["input_line", "cliente", "nombre", "input_batch"]
    assert list(results["input_line"]) == [2, 3, 4]
    assert list(results["cliente"]) == ["c-01", "c-02", "c-03"]
    assert list(results["input_batch"]) == ["x", "y", "z"]
    assert list(results["input_input_line"]) == [
        "1",
        "2",
        "3",
    ]  # never the file's line  # a results column's name: prefixed
    assert list(results["phone"])[::2] == ["584141234567", "584241234568"]
    # joins back to the input on the key, or on the line
    joined = pd.read_csv(source, dtype=str).merge(results, on="cliente", suffixes=("", "_r"))
    assert list(joined["state"]) == ["accepted", "invalid", "accepted"]

    code, _, err = run_cli(
        capsys, "send", str(source), "--phone", "telefono", "--text", "nombre",
        "--out", str(out), "--keep", "nope",
    )  # fmt: skip
    assert code == EXIT_FAILURE and "--keep nope 'nope': no such column" in err


# -- exit codes: what this run did ---------------------------------------------------------


def test_a_rerun_that_finds_nothing_to_do_exits_0_like_dispatch(
    sb: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_csv(tmp_path / "in.csv", MIXED)  # one landline, one duplicate
    journal = str(tmp_path / "j.db")
    argv = ["send", str(source), "--phone", "telefono", "--template", "Hola {nombre}"]
    argv += ["--out", str(tmp_path / "r.csv"), "--journal", journal, "--no-progress"]
    code, stdout, _ = run_cli(capsys, *argv)
    assert code == EXIT_PARTIAL and "needs a look (exit 3): 1 newly invalid" in stdout
    assert "this run: 1 request(s) · 3 message(s) · 3 accepted" in stdout

    code, stdout, _ = run_cli(capsys, *argv)  # the same file again: nothing new
    assert code == EXIT_OK and sends(sb) == 1
    assert "this run: nothing to send (every sendable row was already sent" in stdout
    assert "None" not in stdout and "needs a look" not in stdout
    code, stdout, _ = run_cli(capsys, "dispatch", "--journal", journal)
    assert code == EXIT_OK and "nothing to send" in stdout and "None" not in stdout

    # a new invalid row (another reason on line 5) is judged by this run: 3 again
    source.write_text(source.read_text().replace("0212-5551234", "0416-12"))
    code, stdout, _ = run_cli(capsys, *argv)
    assert code == EXIT_PARTIAL and "1 newly invalid" in stdout and sends(sb) == 1


def test_rows_this_run_left_in_doubt_exit_3_and_the_rerun_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with sandbox(usuario=USER, clave=SECRET, callback_delay=60) as server:
        monkeypatch.setenv("MASSIVA_USUARIO", USER)
        monkeypatch.setenv("MASSIVA_CLAVE", SECRET)
        monkeypatch.setenv("MASSIVA_BASE_URL", server.base_url)
        server.inject("latency", count=1, seconds=0)  # the credit query goes through
        server.inject("http500")  # then every SendSms answers 500: in doubt
        source = write_csv(tmp_path / "in.csv", GOOD)
        argv = ["send", str(source), "--phone", "telefono", "--template", "Hola {nombre}"]
        argv += ["--out", str(tmp_path / "r.parquet"), "--journal", str(tmp_path / "j.db")]
        code, stdout, _ = run_cli(capsys, *argv, "--no-progress")
        assert code == EXIT_PARTIAL and "3 unknown (in doubt)" in stdout
        server.clear_faults()
        code, stdout, _ = run_cli(capsys, *argv, "--no-progress")
        assert code == EXIT_OK and "nothing to send" in stdout  # unknown: never resent


# -- outputs: checked first, written whole, never lost ------------------------------------


@pytest.mark.parametrize("where", ["missing folder", "folder is a file", "out is a folder"])
def test_an_unwritable_out_sends_nothing(
    sb: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    source = write_csv(tmp_path / "in.csv", GOOD)
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "r.parquet").mkdir()
    out = {
        "missing folder": tmp_path / "missing" / "dir" / "r.parquet",
        "folder is a file": tmp_path / "file.txt" / "r.parquet",
        "out is a folder": tmp_path / "r.parquet",
    }[where]
    code, stdout, err = run_cli(
        capsys, "send", str(source), "--phone", "telefono", "--template", "Hola {nombre}",
        "--out", str(out),
    )  # fmt: skip
    assert code == EXIT_FAILURE and sends(sb) == 0 and sb.requests().empty
    assert err.startswith(f"massiva-frames send: error: --out {out}: ") and err.count("\n") == 1
    assert stdout == ""
    assert not [p for p in tmp_path.rglob("*journal*")]
    code, _, err = run_cli(
        capsys, "send", str(source), "--phone", "telefono", "--template", "Hola {nombre}",
        "--out", str(tmp_path / "ok.parquet"), "--journal", str(tmp_path / "no" / "j.db"),
    )  # fmt: skip
    assert code == EXIT_FAILURE and "--journal" in err and sb.requests().empty


def test_the_temporary_journal_is_named_and_deleted_once_written(
    sb: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_csv(tmp_path / "in.csv", GOOD)
    out = tmp_path / "r.parquet"
    code, stdout, _ = run_cli(
        capsys, "send", str(source), "--phone", "telefono", "--template", "Hola {nombre}",
        "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert code == EXIT_OK
    first = stdout.splitlines()[0]
    assert first.startswith(f"journal: {tmp_path}/.r.parquet.") and "temporary" in first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "r.parquet"]


def test_a_failed_write_loses_no_results(
    sb: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills between the check and the write: the journal keeps the results."""
    from massiva_frames.sending.campaign import results_from_journal

    source = write_csv(tmp_path / "in.csv", GOOD)
    out = tmp_path / "r.parquet"
    real = pd.DataFrame.to_parquet

    monkeypatch.setattr(pd.DataFrame, "to_parquet", disk_full)
    argv = ["send", str(source), "--phone", "telefono", "--template", "Hola {nombre}"]
    code, stdout, err = run_cli(capsys, *argv, "--out", str(out), "--no-progress")
    assert code == EXIT_FAILURE and sends(sb) == 1
    assert "accepted" in stdout  # the summary is still shown
    assert err.startswith(f"massiva-frames send: error: cannot write --out {out}: ")
    assert "No space left on device" in err and "nothing is lost" in err
    kept = [p for p in tmp_path.iterdir() if p.name.endswith(".journal.db")]
    assert len(kept) == 1 and f"--journal {kept[0]}" in err
    assert f"mf.results_from_journal('{kept[0]}')" in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    assert list(results_from_journal(kept[0])["state"]) == ["accepted"] * 3

    # what the message says: the same command with that journal sends nothing twice
    monkeypatch.setattr(pd.DataFrame, "to_parquet", real)
    code, stdout, _ = run_cli(
        capsys, *argv, "--out", str(out), "--journal", str(kept[0]), "--no-progress"
    )
    assert code == EXIT_OK and sends(sb) == 1 and "nothing to send" in stdout
    results = pd.read_parquet(out)
    assert list(results["state"]) == ["accepted"] * 3 and list(results["input_line"]) == [2, 3, 4]


def test_an_existing_results_file_survives_a_failed_write(
    sb: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_csv(tmp_path / "in.csv", GOOD)
    out = tmp_path / "r.csv"
    out.write_text("earlier results\n")

    def broken(self: pd.DataFrame, path: object, *args: object, **kwargs: object) -> None:
        Path(str(path)).write_text("half a fi")
        raise OSError(5, "Input/output error", str(path))

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    code, _, err = run_cli(
        capsys, "send", str(source), "--phone", "telefono", "--template", "Hola {nombre}",
        "--out", str(out), "--journal", str(tmp_path / "j.db"), "--no-progress",
    )  # fmt: skip
    assert code == EXIT_FAILURE and "Input/output error" in err
    assert out.read_text() == "earlier results\n"  # whole or not at all
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("j.db")) == [
        "in.csv",
        "r.csv",
    ]


# -- one error prefix --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["validate", "{tmp}/none.csv", "--phone", "t", "--text", "m"], EXIT_FAILURE),
        (["send", "{tmp}/none.csv", "--text", "m", "--out", "{tmp}/r.csv"], EXIT_FAILURE),
        (["send", "{tmp}/in.csv", "--text", "m", "--out", "{tmp}/r.json"], EXIT_USAGE),
        (["dispatch", "--journal", "{tmp}/none.db"], EXIT_FAILURE),
        (["dispatch", "--journal", "{tmp}/none.db", "--out", "{tmp}/r.txt"], EXIT_USAGE),
        (["report", "--results", "{tmp}/none.parquet", "--logs", "{tmp}"], EXIT_FAILURE),
        (["report", "--results", "{tmp}/in.csv", "--logs", "{tmp}", "--png", "a.jpg"], EXIT_USAGE),
        (["credits", "--base-url", "http://127.0.0.1:9/webservices"], EXIT_FAILURE),
        (["demo", "--rows", "0"], EXIT_USAGE),
        (["receive", "--dir", "{tmp}", "--threads", "0"], EXIT_USAGE),
    ],
)
def test_every_command_speaks_with_one_prefix(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    code: int,
) -> None:
    monkeypatch.setenv("MASSIVA_USUARIO", USER)
    monkeypatch.setenv("MASSIVA_CLAVE", SECRET)
    write_csv(tmp_path / "in.csv", GOOD)
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    got, _, err = run_cli(capsys, *args)
    assert got == code
    assert err.startswith(f"massiva-frames {argv[0]}: error: ") and err.count("\n") == 1, err


def test_a_run_stopped_mid_way_keeps_its_temporary_journal_for_the_rest(
    sb: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_csv(tmp_path / "in.csv", GOOD)
    out = tmp_path / "r.parquet"
    sb.set_credits(1_000, company=1)  # the company runs out after the first message
    argv = ["send", str(source), "--phone", "telefono", "--template", "Hola {nombre}"]
    argv += ["--out", str(out), "--max-phones", "1", "--concurrency", "1", "--no-progress"]
    code, _, err = run_cli(capsys, *argv)
    assert code == EXIT_FAILURE and sends(sb) == 2  # one accepted, one refused
    kept = [p for p in tmp_path.iterdir() if p.name.endswith(".journal.db")]
    assert len(kept) == 1
    lines = err.splitlines()
    assert lines[0].startswith("massiva-frames send: error: InsufficientCreditsError")
    assert lines[1] == (
        f"massiva-frames send: the results are kept in the journal {kept[0]}: re-run this "
        f"command with --journal {kept[0]} to send the rest, or load them with "
        f"mf.results_from_journal('{kept[0]}')"
    )
    assert list(pd.read_parquet(out)["state"]) == ["accepted", "scheduled", "scheduled"]
    sb.set_credits(1_000, company=1_000)
    code, _, _ = run_cli(capsys, *argv, "--journal", str(kept[0]))
    assert code == EXIT_OK
    assert list(pd.read_parquet(out)["state"]) == ["accepted"] * 3
    assert len(sb.messages()) == 3  # the first message was not sent again
