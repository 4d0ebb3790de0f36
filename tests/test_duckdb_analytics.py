"""DuckDB analytics: ``attach_delivery`` and ``delivery_summary`` give the pandas answers.

The callback log is written the way the receiver writes it (the durable journal, then
compaction into the day-partitioned parquet dataset), with repeated callbacks, unknown
ids, unusable events and events still waiting in the journal; the same data go through
the pandas and the DuckDB paths. The dataset is also read by Spark (when installed).
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from massiva_frames import attach_delivery, delivery_summary, read_callbacks
from massiva_frames.analytics import duckdb_engine
from massiva_frames.analytics.duckdb_engine import final_status_log, write_attached
from massiva_frames.errors import InputError
from massiva_frames.receiving import compact
from massiva_frames.receiving.event_journal import DurableLog
from massiva_frames.receiving.fields import event_key

DAY_US = 86_400_000_000
T0 = 1_718_000_000_000_000  # 2024-06-10 06:13:20 UTC, in microseconds
N = 400


def _write(log: DurableLog, values: tuple[str | None, ...], us: int) -> None:
    log.write("status", values, key=event_key("status", values), received_us=us)


def build_log(logdir: Path, seed: int = 0) -> None:
    """Status events for ids 0..N+49 (the last 50 match no result), across two days."""
    rng = np.random.default_rng(seed)
    log = DurableLog(logdir)
    us = T0
    written: list[tuple[str | None, ...]] = []
    try:
        for mid in range(N + 50):
            for _ in range(int(rng.integers(1, 4))):
                estatus = str(rng.choice(["1", "2", "1", "9"]))  # 9: not a status
                minute = int(rng.integers(0, 50))
                fecha = f"2024-06-1{int(rng.integers(0, 2))} 0{minute // 10}:{minute:02d}:00"
                if rng.random() < 0.05:
                    fecha = ""  # no time: loses to any dated event
                detalle = "+584142122268" if estatus == "1" else "ERROR EN ENVIO"
                values = (str(mid), estatus, fecha, "u@x.com", detalle)
                us += int(rng.integers(1, DAY_US // 300))
                _write(log, values, us)
                written.append(values)
                if rng.random() < 0.2:  # the provider repeats it later
                    _write(log, values, us + DAY_US // 50)
        _write(log, ("not-an-id", "1", "2024-06-10 08:00:00", "u", "+584142122268"), us + 1)
    finally:
        log.close()
    compact(logdir, merge=False)
    # a few more after compaction: some repeats of stored events, read from the journal
    log = DurableLog(logdir)
    try:
        for mid in range(0, 60, 3):
            values = (str(mid), "2", "2024-06-11 09:59:00", "u@x.com", "ERROR EN ENVIO")
            _write(log, values, us + DAY_US + mid)
            _write(log, values, us + DAY_US + mid + 5)
        for i, values in enumerate(written[:30]):  # repeats of events already in parquet
            _write(log, values, us + 2 * DAY_US + i)
    finally:
        log.close()


def results_frame(seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = N + 30
    state = rng.choice(["accepted", "accepted", "invalid", "rejected", "unknown", "delivered"], n)
    message_id = pd.array(np.arange(n), dtype="Int64")
    message_id[state == "invalid"] = pd.NA
    sent = pd.Timestamp("2024-06-10 11:00", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 3600, n), unit="s"
    )
    phones = rng.choice(["584141234567", "584121234567", "584261234567", "12025550143"], n)
    frame = pd.DataFrame(
        {
            "phone": pd.array(phones, dtype="string"),
            "state": pd.Categorical(state),
            "reason": pd.array([None] * n, dtype="string"),
            "batch": pd.array(rng.integers(0, 5, n), dtype="Int64"),
            "message_id": message_id,
            "sent_at": pd.Series(sent).astype("datetime64[us, UTC]").to_numpy(),
        },
        index=pd.RangeIndex(n) * 2 + 100,
    )
    frame["sent_at"] = (
        frame["sent_at"].dt.tz_localize("UTC")
        if frame["sent_at"].dt.tz is None
        else frame["sent_at"]
    )
    return frame


@pytest.fixture(scope="module")
def built_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("built") / "logs"
    path.mkdir()
    build_log(path)
    return path


@pytest.fixture
def logdir(built_log: Path, tmp_path: Path) -> Path:
    """A copy of the built log for each test (tests may compact it)."""
    path = tmp_path / "logs"
    shutil.copytree(built_log, path)
    return path


@pytest.mark.parametrize("tz", ["America/Caracas", "Europe/Madrid", "UTC"])
def test_attach_delivery_duckdb_equals_pandas(logdir: Path, tz: str) -> None:
    results = results_frame()
    expected = attach_delivery(results, logdir, tz=tz, engine="pandas")
    got = attach_delivery(results, logdir, tz=tz, engine="duckdb")
    pd.testing.assert_frame_equal(got, expected)
    assert got.attrs["delivery"] == expected.attrs["delivery"]
    stats = expected.attrs["delivery"]
    assert stats["unmatched_ids"] > 0 and stats["unusable_events"] > 0
    assert (got["state"] == "delivered").any() and (got["state"] == "failed").any()


def test_final_log_is_one_event_per_message_of_the_whole_log(logdir: Path) -> None:
    whole = read_callbacks(logdir, kind="status")
    final = final_status_log(logdir)
    usable = whole[whole["message_id"].notna() & whole["status"].notna()]
    assert final["message_id"].is_unique
    assert set(final["message_id"]) == set(usable["message_id"])
    assert final.attrs == {
        "events": len(whole),
        "unusable_events": len(whole) - len(usable),
    }


def test_auto_chooses_duckdb_above_the_size(logdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert duckdb_engine.log_bytes(logdir) > 0
    assert not duckdb_engine.use_duckdb("auto", None, log=logdir)
    monkeypatch.setattr(duckdb_engine, "AUTO_BYTES", 0)
    assert duckdb_engine.use_duckdb("auto", None, log=logdir)
    assert not duckdb_engine.use_duckdb("auto", None, log=read_callbacks(logdir))
    with pytest.raises(InputError, match="engine"):
        attach_delivery(results_frame(), logdir, engine="spark")


def plain(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.reset_index(drop=True).astype(object)
    return out.where(frame.reset_index(drop=True).notna(), None)


def test_write_attached_reads_our_clock_at_the_stamps_resolution(
    logdir: Path, tmp_path: Path
) -> None:
    """sent_at with microseconds (our clock) against whole-second provider stamps: DuckDB
    floors it to the second as attach_delivery does, and says the resolution."""
    results = results_frame()
    jitter = np.random.default_rng(7).integers(0, 1_000_000, len(results))
    results["sent_at"] = results["sent_at"] + pd.to_timedelta(jitter, unit="us")
    source = tmp_path / "results.parquet"
    results.to_parquet(source)
    out = tmp_path / "attached.parquet"
    stats = write_attached(source, logdir, out, threads=1)
    expected = attach_delivery(pd.read_parquet(source), logdir, engine="pandas")
    got = pd.read_parquet(out)
    pd.testing.assert_series_equal(
        got["latency"].reset_index(drop=True), expected["latency"].reset_index(drop=True)
    )
    assert stats["latency_resolution_s"] == expected.attrs["delivery"]["latency_resolution_s"]
    assert stats["latency_resolution_s"] == 1.0
    whole = got["latency"].dropna()
    assert len(whole) and (whole % pd.Timedelta(seconds=1) == pd.Timedelta(0)).all()


def test_write_attached_parquet_to_parquet(logdir: Path, tmp_path: Path) -> None:
    results = results_frame()
    source = tmp_path / "results.parquet"
    results.to_parquet(source)
    out = tmp_path / "attached.parquet"
    stats = write_attached(source, logdir, out, memory_limit="256MB", threads=1)
    expected = attach_delivery(pd.read_parquet(source), logdir, engine="pandas")
    got = pd.read_parquet(out)
    assert list(got.columns) == list(expected.columns)
    assert str(got["latency"].dtype).startswith("timedelta64")
    pd.testing.assert_frame_equal(plain(got), plain(expected))
    assert stats == {**expected.attrs["delivery"], "rows": len(results)}

    # the summary of that file, by DuckDB, equals the pandas summary of the frame
    for by in ["operator", "prefix", "batch", ["operator", "hour"], "date", None]:
        want = delivery_summary(expected, by=by, total=True)
        have = delivery_summary(out, by=by, total=True)  # a path: DuckDB
        pd.testing.assert_frame_equal(have, want, check_exact=False, rtol=1e-9)


@pytest.mark.parametrize("by", ["operator", "prefix", "hour", ["batch", "operator"], "campaign"])
def test_delivery_summary_duckdb_on_a_frame_equals_pandas(logdir: Path, by: Any) -> None:
    attached = attach_delivery(results_frame(), logdir)
    attached.attrs["campaign"] = "promo"
    attached.loc[attached.index[:5], "phone"] = pd.NA
    want = delivery_summary(attached, by=by, total=True, tz="Europe/Madrid")
    have = delivery_summary(attached, by=by, total=True, tz="Europe/Madrid", engine="duckdb")
    pd.testing.assert_frame_equal(have, want, check_exact=False, rtol=1e-9)


def test_duckdb_wrong_arguments(logdir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown time zone"):
        final_status_log(logdir, tz="Mars/Olympus")
    with pytest.raises(InputError, match="no callback log directory"):
        final_status_log(tmp_path / "missing")
    with pytest.raises(InputError, match="cannot group by 'nope'"):
        delivery_summary(results_frame(), by="nope", engine="duckdb")
    bad = results_frame().assign(message_id="x")
    with pytest.raises(InputError, match="integer ids"):
        write_attached(bad, logdir, tmp_path / "o.parquet")


def test_empty_log_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    results = results_frame()
    got = attach_delivery(results, empty, engine="duckdb")
    pd.testing.assert_frame_equal(got, attach_delivery(results, empty, engine="pandas"))


# ------------------------------------------------------------- the dataset, read by others


def test_callback_dataset_read_by_duckdb_sql(logdir: Path) -> None:
    import duckdb

    compact(logdir, merge=False)  # the repeats of stored events join them in parquet
    glob = str(logdir / "status" / "**" / "*.parquet")
    with duckdb.connect() as con:
        types = dict(
            con.execute(
                "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM "
                "read_parquet(?, hive_partitioning = true))",
                [glob],
            ).fetchall()
        )
        deduped = con.execute(
            "SELECT count(DISTINCT event_key), count(*) FROM read_parquet(?)", [glob]
        ).fetchone()
    assert types["received_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["updated_at"] == "TIMESTAMP"  # the provider's wall-clock time, no zone
    assert types["message_id"] == "BIGINT" and types["day"] == "DATE"
    assert deduped[0] < deduped[1]  # repeats are stored: readers drop them by event_key


pytestmark = pytest.mark.filterwarnings(
    "ignore:PySpark does not yet fully support pandas:FutureWarning",
    "ignore:The copy keyword is deprecated",
)


def test_callback_dataset_read_by_spark(logdir: Path, spark_session: Any) -> None:
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    compact(logdir, merge=False)  # everything in parquet, repeats included
    frame = spark_session.read.parquet(str(logdir / "status"))  # hive partitions: day
    kinds = dict(frame.dtypes)
    assert kinds["received_at"] == "timestamp" and kinds["updated_at"] == "timestamp_ntz"
    assert kinds["message_id"] == "bigint" and kinds["day"] == "date"
    # de-duplication by event key: the first arrival of each
    first = Window.partitionBy("event_key").orderBy("received_at")
    deduped = (
        frame.withColumn("n", F.row_number().over(first))
        .filter("n = 1")
        .select("message_id", "status", "updated_at", "received_at")
        .toPandas()
    )
    assert frame.count() > len(deduped)
    whole = read_callbacks(logdir, kind="status", tz="UTC")
    assert len(deduped) == len(whole)
    # Spark shows received_at in the session zone (UTC); updated_at as written (no zone)
    key = ["message_id", "received_at"]
    ours = whole.assign(
        updated_at=whole["updated_at"].dt.tz_localize(None),
        received_at=whole["received_at"].dt.tz_localize(None),
        status=whole["status"].astype("string"),
    )[["message_id", "status", "updated_at", "received_at"]]
    theirs = deduped.assign(
        received_at=pd.to_datetime(deduped["received_at"]).astype("datetime64[us]"),
        updated_at=pd.to_datetime(deduped["updated_at"]).astype("datetime64[us]"),
    )
    a = plain(ours.sort_values(key, na_position="first"))
    b = plain(theirs.sort_values(key, na_position="first"))
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert dt.date(2024, 6, 10) <= min(frame.select("day").distinct().toPandas()["day"])
