"""``massiva-frames report`` end to end: a results file, a real receiver's logs, a PNG."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from massiva_frames.analytics.shapes import STATES
from massiva_frames.faces.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from massiva_frames.receiving import read_callbacks, receiver

T0 = pd.Timestamp("2024-05-01 14:00:00", tz="UTC")  # 10:00 in Caracas

#: (phone, state, message_id, batch)
ROWS = [
    ("584141111111", "accepted", 501, 1),
    ("584241111112", "accepted", 502, 1),
    ("584121111113", "accepted", 503, 1),
    ("584161111114", "accepted", 504, 2),
    ("584261111115", "rejected", 505, 2),
    (None, "invalid", None, None),
]


def results_frame() -> pd.DataFrame:
    n = len(ROWS)
    sent = [None if state == "invalid" else T0 for _, state, _, _ in ROWS]
    return pd.DataFrame(
        {
            "phone": pd.array([r[0] for r in ROWS], dtype="string"),
            "text": pd.array(["Hola"] * n, dtype="string"),
            "state": pd.Categorical([r[1] for r in ROWS], categories=list(STATES)),
            "reason": pd.array(
                [None, None, None, None, "rejected_by_api", "phone_missing"], dtype="string"
            ),
            "batch": pd.array([r[3] for r in ROWS], dtype="Int64"),
            "message_id": pd.array([r[2] for r in ROWS], dtype="Int64"),
            "sid": pd.array([None] * n, dtype="string"),
            "request_status": pd.array([4, 4, 4, 4, 4, None], dtype="Int64"),
            "api_message": pd.array(["Envio Exitoso"] * 5 + [None], dtype="string"),
            "sent_at": pd.DatetimeIndex(pd.to_datetime(sent, utc=True)).as_unit("us"),
            "encoding": pd.array(["GSM-7"] * n, dtype="string"),
            "segments": pd.array([1] * n, dtype="Int64"),
        },
        index=pd.Index([f"row{i}" for i in range(n)]),
    )


@pytest.fixture
def logdir(tmp_path: Path) -> Iterator[Path]:
    """A real receiver's log directory holding status and inbound callbacks."""
    folder = tmp_path / "logs"
    status = [
        ("501", "1", "2024-05-01 10:00:04", "+584141234567"),
        ("502", "2", "2024-05-01 10:00:05", "ERROR EN ENVIO"),
        ("502", "1", "2024-05-01 10:00:09", "+584141234567"),  # later: delivered
        ("503", "2", "2024-05-01 10:00:06", "ERROR EN ENVIO"),
        ("777", "1", "2024-05-01 10:00:06", "+584141234567"),  # not ours
    ]
    with receiver(folder) as rc, requests.Session() as http:
        for mid, estatus, fecha, detalle in status:
            params = {
                "id": mid,
                "estatus": estatus,
                "fecha_actualizacion": fecha,
                "usuario": "demo@massiva.test",
                "detalle": detalle,
            }
            assert http.get(rc.url, params=params, timeout=5).status_code == 200
        inbound = {
            "msg": "Báj́a por favor",
            "phone": "584141111111",
            "linea": "584141234567",
            "email": "demo@massiva.test",
        }
        assert http.get(rc.url, params=inbound, timeout=5).status_code == 200
    assert len(read_callbacks(folder, kind="status")) == 5
    yield folder


def write_results(tmp_path: Path, suffix: str = ".parquet") -> Path:
    path = tmp_path / f"results{suffix}"
    frame = results_frame()
    if suffix == ".csv":
        frame.to_csv(path)
    else:
        frame.to_parquet(path)
    return path


def test_report_prints_the_summary_and_writes_the_files(
    tmp_path: Path, logdir: Path, capsys: Any
) -> None:
    results = write_results(tmp_path)
    png, out, stops = tmp_path / "d.png", tmp_path / "final.parquet", tmp_path / "stop.csv"
    argv = ["report", "--results", str(results), "--logs", str(logdir), "--png", str(png)]
    argv += ["--by", "operator", "--by", "batch", "--output", str(out)]
    argv += ["--opt-outs", str(stops)]
    assert main(argv) == EXIT_OK
    text = capsys.readouterr().out
    assert "6 result rows; 5 status callbacks for 4 messages (1 matching no accepted row)" in text
    assert "Delivery by operator" in text and "Delivery by batch" in text
    movistar = next(line for line in text.splitlines() if line.startswith("Movistar"))
    assert "100.0%" in movistar  # 501 and 502 delivered
    digitel = next(line for line in text.splitlines() if line.startswith("Digitel"))
    assert "0.0%" in digitel  # 503 failed
    assert "1 inbound messages, 1 attributed to a send; 1 opt-outs" in text

    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    final = pd.read_parquet(out)
    assert list(final.index) == list(results_frame().index)
    assert [str(s) for s in final["state"]] == [
        "delivered",
        "delivered",
        "failed",
        "accepted",
        "rejected",
        "invalid",
    ]
    assert final.loc["row1", "latency"] == pd.Timedelta(seconds=9)
    assert pd.read_csv(stops, dtype=str)["phone"].tolist() == ["584141111111"]


def test_report_reads_a_csv_results_file(tmp_path: Path, logdir: Path, capsys: Any) -> None:
    results = write_results(tmp_path, ".csv")
    assert main(["report", "--results", str(results), "--logs", str(logdir)]) == EXIT_OK
    text = capsys.readouterr().out
    total = next(line for line in text.splitlines() if line.startswith("total"))
    assert total.split()[1:4] == ["6", "1", "0"]  # rows, invalid, suppressed
    assert "50.0%" in total  # 2 delivered of 4 sent


@pytest.mark.parametrize(
    ("which", "message"),
    [("results", "no results file at"), ("logs", "no callback log directory at")],
)
def test_missing_input_is_a_one_line_error(
    tmp_path: Path, logdir: Path, capsys: Any, which: str, message: str
) -> None:
    results = write_results(tmp_path)
    paths = {"results": str(results), "logs": str(logdir)}
    paths[which] = str(tmp_path / "missing")
    assert main(["report", "--results", paths["results"], "--logs", paths["logs"]]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert lines[0].startswith("massiva-frames report: error:")


def test_bad_inputs_exit_1(tmp_path: Path, logdir: Path, capsys: Any) -> None:
    results = write_results(tmp_path)
    code = main(["report", "--results", str(results), "--logs", str(logdir), "--by", "nope"])
    assert code == EXIT_FAILURE
    assert "cannot group by 'nope'" in capsys.readouterr().err
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    assert main(["report", "--results", str(broken), "--logs", str(logdir)]) == EXIT_FAILURE
    assert "cannot read" in capsys.readouterr().err


def test_console_script(tmp_path: Path, logdir: Path) -> None:
    results = write_results(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "massiva_frames.faces.cli", "report"]
        + ["--results", str(results), "--logs", str(logdir), "--by", "hour"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert "Delivery by hour" in done.stdout
    hour_10 = next(line for line in done.stdout.splitlines() if line.startswith("10 "))
    assert hour_10.split()[1] == "5"  # five rows sent at 10:00 Caracas time


def test_outputs_are_checked_before_any_work(tmp_path: Path, logdir: Path, capsys: Any) -> None:
    results = write_results(tmp_path)
    out = tmp_path / "final.parquet"
    argv = ["report", "--results", str(results), "--logs", str(logdir), "--output", str(out)]
    missing = tmp_path / "missing" / "d.png"
    assert main([*argv, "--png", str(missing)]) == EXIT_FAILURE
    captured = capsys.readouterr()
    assert captured.out == "" and not out.exists()  # nothing printed, nothing written
    assert captured.err == (
        f"massiva-frames report: error: --png {missing}: the folder {missing.parent} "
        "does not exist\n"
    )
    assert main([*argv, "--png", str(tmp_path / "d.jpg")]) == EXIT_USAGE
    assert "--png" in capsys.readouterr().err and not out.exists()
    assert main([*argv, "--opt-outs", str(tmp_path / "stops.parquet")]) == EXIT_USAGE
    capsys.readouterr()


def test_a_results_file_from_send_keeps_its_lines(
    tmp_path: Path, logdir: Path, capsys: Any
) -> None:
    """``send`` writes ``input_line`` first: the report's output carries it on, beside
    the provider's dispatching ``line`` that delivery brings."""
    frame = results_frame()
    frame.index = pd.RangeIndex(2, 2 + len(frame), name="input_line")
    source = tmp_path / "results.csv"
    frame.reset_index().to_csv(source, index=False)
    out = tmp_path / "final.csv"
    argv = ["report", "--results", str(source), "--logs", str(logdir), "--output", str(out)]
    assert main(argv) == EXIT_OK
    capsys.readouterr()
    final = pd.read_csv(out)
    assert final.columns[0] == "input_line"
    assert final["input_line"].tolist() == [2, 3, 4, 5, 6, 7]
    assert final["line"].tolist()[:2] == [584141234567, 584141234567]  # who dispatched
    assert final["state"].tolist()[:3] == ["delivered", "delivered", "failed"]
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
