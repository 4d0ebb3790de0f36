"""The callback store: field parsing, journal -> parquet compaction, reading, other readers."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pytest

from massiva_frames.errors import InputError
from massiva_frames.receiving import compact, read_callbacks, receiver
from massiva_frames.receiving import store as store_module
from massiva_frames.receiving.event_journal import (
    DurableLog,
    connect_journal,
    journal_path,
    pending_rows,
)
from massiva_frames.receiving.fields import (
    CallbackRejected,
    classify,
    decode_form,
    event_key,
    normalise_line,
    parse_fecha,
)

DAY_US = 86_400_000_000
T0 = 1_718_000_000_000_000  # 2024-06-10 06:13:20 UTC, in microseconds


# -- fields ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "charset", "expected"),
    [
        (b"a=1&b=2", None, {"a": "1", "b": "2"}),
        (b"a=x+y&b=x%20y", None, {"a": "x y", "b": "x y"}),
        (b"msg=caf%E9", None, {"msg": "café"}),
        (b"msg=caf%C3%A9", None, {"msg": "café"}),
        (b"msg=%80", None, {"msg": "€"}),  # Windows-1252, the Latin-1 superset
        (b"msg=caf\xe9", "iso-8859-1", {"msg": "café"}),
        (b"msg=caf%E9", "bogus-charset", {"msg": "café"}),
        (b"MSG=a&&=b&c", None, {"msg": "a", "c": ""}),
        (b"a=1&a=2", None, {"a": "2"}),
        (b"a=%zz%2", None, {"a": "%zz%2"}),
        (b"", None, {}),
    ],
)
def test_decode_form(raw: bytes, charset: str | None, expected: dict[str, str]) -> None:
    assert decode_form(raw, charset=charset) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2014-01-01 12:10:30", dt.datetime(2014, 1, 1, 12, 10, 30)),
        ("2014-01--01 12:10:30", dt.datetime(2014, 1, 1, 12, 10, 30)),  # the seed's format
        ("2014-01-01T12:10:30", dt.datetime(2014, 1, 1, 12, 10, 30)),
        ("2014-1-1 2:05", dt.datetime(2014, 1, 1, 2, 5)),
        (" 2014-01-01 12:10:30.250 ", dt.datetime(2014, 1, 1, 12, 10, 30)),
        ("2014-01-01", dt.datetime(2014, 1, 1)),
        ("2014-02-30 10:00:00", None),
        ("01/01/2014 12:10", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_fecha(text: str | None, expected: dt.datetime | None) -> None:
    assert parse_fecha(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+584142122268", "584142122268"),
        ("+58 (414) 212-2268", "584142122268"),
        ("ERROR EN ENVIO", "ERROR EN ENVIO"),
        ("  ", None),
        (None, None),
    ],
)
def test_normalise_line(text: str | None, expected: str | None) -> None:
    assert normalise_line(text) == expected


def test_classify() -> None:
    kind, values = classify({"id": " 7 ", "estatus": "2", "extra": "ignored"})
    assert (kind, values) == ("status", (" 7 ", "2", None, None, None))
    kind, values = classify({"msg": "", "phone": "584121234567", "linea": "1"})
    assert (kind, values) == ("inbound", ("", "584121234567", "1", None))
    # An id beside msg and phone does not make it a status callback.
    kind, values = classify({"id": "9", "msg": "hola", "phone": "1"})
    assert (kind, values) == ("inbound", ("hola", "1", None, None))
    with pytest.raises(CallbackRejected) as err:
        classify({"id": "1", "estatus": "1", "usuario": "x" * 2001})
    assert err.value.code == 413 and "usuario" in err.value.reason


def test_event_key_is_the_identity_of_the_parameters() -> None:
    a = event_key("inbound", ["hola", "1", None, None])
    assert a == event_key("inbound", ["hola", "1", None, None])
    assert a != event_key("inbound", ["hola", "1", "", None])  # absent is not empty
    assert a != event_key("inbound", ["hola ", "1", None, None])
    assert a != event_key("status", ["hola", "1", None, None])


# -- the store ------------------------------------------------------------------------


def _status(log: DurableLog, mid: int, *, us: int, estatus: str = "1", **extra: str) -> None:
    values = (
        str(mid),
        estatus,
        extra.get("fecha", "2024-06-10 08:00:00"),
        extra.get("usuario", "u@x.com"),
        extra.get("detalle", "+584142122268" if estatus == "1" else "ERROR EN ENVIO"),
    )
    log.write("status", values, key=event_key("status", values), received_us=us)


def _inbound(log: DurableLog, text: str, *, us: int) -> None:
    values = (text, "584121234567", "584141234567", None)
    log.write("inbound", values, key=event_key("inbound", values), received_us=us)


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


def test_empty_log_gives_typed_empty_frames(logdir: Path) -> None:
    status = read_callbacks(logdir, kind="status")
    assert status.empty
    assert status.dtypes.astype(str).to_dict() == {
        "message_id": "Int64",
        "status": "category",
        "updated_at": "datetime64[us, America/Caracas]",
        "user": "string",
        "detail": "string",
        "line": "string",
        "received_at": "datetime64[us, UTC]",
    }
    inbound = read_callbacks(logdir, kind="inbound")
    assert list(inbound.columns) == ["text", "phone", "line", "email", "received_at"]
    assert compact(logdir).moved == 0


def test_wrong_arguments(logdir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="kind"):
        read_callbacks(logdir, kind="delivery")
    with pytest.raises(InputError, match="time zone"):
        read_callbacks(logdir, tz="Mars/Olympus")
    with pytest.raises(InputError, match="no callback log"):
        read_callbacks(tmp_path / "missing")
    with pytest.raises(InputError, match="no callback log"):
        compact(tmp_path / "missing")


def test_visible_before_and_after_compaction_and_typed(logdir: Path) -> None:
    log = DurableLog(logdir)
    try:
        _status(log, 1, us=T0)
        _status(log, 2, us=T0 + 1, estatus="2", fecha="")
        _status(log, 3, us=T0 + 2, fecha="2024-06-10 08:00:00")
        _status(log, 1, us=T0 + 3)  # a repeat of the first
        _inbound(log, "Hola", us=T0 + 4)
    finally:
        log.close()
    before = read_callbacks(logdir)
    assert pending_rows(logdir) == 5
    assert before["message_id"].tolist() == [1, 2, 3]
    assert before["status"].tolist() == ["delivered", "failed", "delivered"]
    assert before["line"].tolist()[0] == "584142122268" and pd.isna(before["line"][1])
    assert pd.isna(before["updated_at"][1])  # empty fecha_actualizacion is accepted
    assert before["updated_at"][0] == pd.Timestamp("2024-06-10 12:00:00", tz="UTC")
    assert before["received_at"][0] == pd.Timestamp(T0, unit="us", tz="UTC")
    stats = compact(logdir)
    assert stats.moved == 5 and stats.files_written == 2
    assert pending_rows(logdir) == 0
    after = read_callbacks(logdir)
    pd.testing.assert_frame_equal(before, after)
    assert read_callbacks(logdir, kind="inbound")["text"].tolist() == ["Hola"]
    utc = read_callbacks(logdir, tz="UTC")
    assert utc["updated_at"][0] == pd.Timestamp("2024-06-10 08:00:00", tz="UTC")


def test_partitioned_by_day_and_read_directly_by_pyarrow_and_duckdb(logdir: Path) -> None:
    log = DurableLog(logdir)
    try:
        for i in range(10):
            _status(log, i, us=T0 + (i % 2) * DAY_US + i)
    finally:
        log.close()
    compact(logdir)
    days = sorted(p.name for p in (logdir / "status").iterdir())
    assert days == ["day=2024-06-10", "day=2024-06-11"]
    table = ds.dataset(logdir / "status", format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 10
    assert sorted(table["message_id"].to_pylist()) == list(range(10))
    assert set(map(str, table["day"].to_pylist())) == {"2024-06-10", "2024-06-11"}
    glob = str(logdir / "status" / "**" / "*.parquet")
    with duckdb.connect() as con:
        rows = con.execute(
            "SELECT day, count(*), min(message_id), any_value(typeof(received_at)) "
            "FROM read_parquet(?, hive_partitioning=true) GROUP BY day ORDER BY day",
            [glob],
        ).fetchall()
    assert [(str(r[0]), r[1], r[2]) for r in rows] == [("2024-06-10", 5, 0), ("2024-06-11", 5, 1)]
    assert rows[0][3] == "TIMESTAMP WITH TIME ZONE"


def test_compaction_merges_small_files_and_loses_nothing(logdir: Path) -> None:
    expected = []
    for batch in range(12):  # one compaction per batch: one small file each
        log = DurableLog(logdir)
        try:
            for i in range(5):
                mid = batch * 10 + i
                _status(log, mid, us=T0 + mid)
                expected.append(mid)
            _status(log, batch * 10, us=T0 + batch * 10 + 5)  # a repeat
        finally:
            log.close()
        compact(logdir, merge=False)
    day = logdir / "status" / "day=2024-06-10"
    assert len(list(day.glob("part-*.parquet"))) == 12
    before = read_callbacks(logdir)
    (day / ".part-leftover.parquet.tmp").write_bytes(b"half a file")  # left by a crash
    stats = compact(logdir, max_small_files=8)
    assert stats.files_merged == 12 and stats.moved == 0
    assert [p.name for p in day.iterdir() if p.name.startswith(".")] == []
    assert len(list(day.glob("part-*.parquet"))) == 1
    after = read_callbacks(logdir)
    pd.testing.assert_frame_equal(before, after)
    assert after["message_id"].tolist() == expected
    assert compact(logdir, max_small_files=8).files_merged == 0  # nothing more to merge


def test_crash_between_parquet_and_journal_delete_gives_no_repeat(
    logdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = DurableLog(logdir)
    try:
        for i in range(20):
            _status(log, i, us=T0 + i)
    finally:
        log.close()
    real = store_module._write_part

    def write_then_die(*args: object) -> Path:
        real(*args)  # type: ignore[arg-type]
        raise SystemExit("killed after the parquet file, before the journal delete")

    monkeypatch.setattr(store_module, "_write_part", write_then_die)
    with pytest.raises(SystemExit):
        compact(logdir)
    monkeypatch.undo()
    assert pending_rows(logdir) == 20  # still in the journal, and also in parquet
    assert read_callbacks(logdir)["message_id"].tolist() == list(range(20))
    compact(logdir)  # moved again: now twice in parquet
    assert read_callbacks(logdir)["message_id"].tolist() == list(range(20))
    compact(logdir, max_small_files=1)  # the merge drops the repeats
    raw = ds.dataset(logdir / "status", format="parquet").to_table()
    assert raw.num_rows == 20


def test_rows_that_cannot_be_typed_become_missing(logdir: Path) -> None:
    DurableLog(logdir).close()
    conn = connect_journal(journal_path(logdir))
    conn.execute(
        "INSERT INTO status (received_us, event_key, id, estatus, fecha_actualizacion) "
        "VALUES (?, 'k1', 'abc', '9', 'ayer'), (?, 'k2', '007', '1', NULL)",
        (T0, T0 + 1),
    )
    conn.close()
    df = read_callbacks(logdir)
    assert df["message_id"].tolist()[1] == 7 and pd.isna(df["message_id"][0])
    assert pd.isna(df["status"][0]) and pd.isna(df["updated_at"][0])
    compact(logdir)
    assert len(read_callbacks(logdir)) == 2


def test_another_process_reads_while_the_receiver_runs(logdir: Path) -> None:
    import requests

    with receiver(logdir, compact_interval=3600) as rc:
        for i in range(5):
            assert requests.get(rc.url, params={"id": i, "estatus": 1}, timeout=10).ok
        code = (
            "import sys; from massiva_frames.receiving import read_callbacks;"
            "print(len(read_callbacks(sys.argv[1])))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(logdir)],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
        assert out.strip() == "5"
        assert pending_rows(logdir) == 5


def test_reading_while_compacting_never_fails_nor_misses(logdir: Path) -> None:
    log = DurableLog(logdir)
    written = 0
    stop = threading.Event()
    errors: list[BaseException] = []

    def compactor() -> None:
        while not stop.is_set():
            try:
                compact(logdir, max_small_files=2)
            except BaseException as exc:  # reported below
                errors.append(exc)
                return

    thread = threading.Thread(target=compactor)
    thread.start()
    try:
        for round_ in range(40):
            for _ in range(5):
                _status(log, written, us=T0 + written)
                written += 1
            frame = read_callbacks(logdir)
            assert frame["message_id"].tolist() == list(range(written)), round_
    finally:
        stop.set()
        thread.join(60)
        log.close()
    assert not errors
    assert read_callbacks(logdir)["message_id"].tolist() == list(range(written))


def test_compactions_are_serialised(logdir: Path) -> None:
    from massiva_frames.receiving.store import _lock, _unlock

    fd = _lock(logdir, 1.0)
    try:
        with pytest.raises(TimeoutError):
            compact(logdir, timeout=0.2)
    finally:
        _unlock(fd)
    assert compact(logdir, timeout=0.2).moved == 0
