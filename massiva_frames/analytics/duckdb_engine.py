"""DuckDB over the parquet files: delivery analytics on results and logs larger than memory.

The pandas functions hand their heavy part to DuckDB with ``engine="duckdb"`` (and, with
the default ``engine="auto"``, when the status log on disk is larger than
:data:`AUTO_BYTES` and DuckDB is installed):

- ``attach_delivery(results, LOGDIR, engine="duckdb")``: DuckDB reads the status log
  out of core (parquet files plus the events not yet compacted), drops repeated
  callbacks by ``event_key`` and keeps each message's final event
  (:func:`final_status_log`); the pandas code attaches those to the results;
- ``delivery_summary(path_or_frame, engine="duckdb")``: DuckDB counts and measures each
  group (:func:`summary_groups`); a path is a parquet file, directory or glob of
  attached results;
- :func:`write_attached`: results as parquet (larger than memory) joined with the log
  into a new parquet file, never in pandas.

Same answers as the pandas path (tests hold them equal), with one documented exception:
a naive ``updated_at`` inside a daylight-saving gap or overlap of ``tz`` (none in
America/Caracas since 2016) is read by DuckDB's rules, not pandas'.
Needs ``pip install 'massiva-frames[duckdb]'``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ..errors import InputError
from ..prepare.phones import OPERATOR_NAMES
from ..receiving.event_journal import read_journal
from ..receiving.store import SCHEMAS, rows_to_table
from .shapes import DEFAULT_TZ, STATES

__all__ = [
    "AUTO_BYTES",
    "ENGINES",
    "available",
    "final_status_log",
    "log_bytes",
    "summary_groups",
    "use_duckdb",
    "write_attached",
]

#: ``engine="auto"`` uses DuckDB for status logs whose parquet files exceed this size.
AUTO_BYTES = 256 << 20
#: The values of the ``engine=`` options.
ENGINES = ("auto", "pandas", "duckdb")

_ACCEPTED = ("accepted", "delivered", "failed")
_STATUS_SQL = (
    "CASE lower(trim(CAST(status AS VARCHAR))) WHEN 'delivered' THEN 1 WHEN '1' THEN 1 "
    "WHEN 'failed' THEN 0 WHEN '2' THEN 0 END"
)


def available() -> bool:
    """True when the ``duckdb`` package can be imported."""
    try:
        import duckdb  # noqa: F401
    except ImportError:
        return False
    return True


def _duckdb() -> Any:
    try:
        import duckdb
    except ImportError as exc:
        raise InputError(
            "engine='duckdb' needs DuckDB: pip install 'massiva-frames[duckdb]'"
        ) from exc
    return duckdb


def _run(con: Any, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run ``query`` and fetch every row (a DuckDB connection wants results finished)."""
    rows: list[tuple[Any, ...]] = con.execute(query, params).fetchall()
    return rows


def _arrow_table(con: Any, query: str, params: Any = None) -> pa.Table:
    """A query's result as an Arrow table (DuckDB 1.x and 2.x name it differently)."""
    relation = con.sql(query, params=params)
    fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
    table: pa.Table = fetch()
    return table


def _arrow_reader(con: Any, query: str, rows: int) -> Any:
    """A query's result as a stream of Arrow record batches."""
    relation = con.sql(query)
    fetch = getattr(relation, "to_arrow_reader", None) or relation.fetch_arrow_reader
    return fetch(rows)


def _status_files(logdir: Path) -> list[str]:
    return sorted(str(p) for p in (logdir / "status").glob("day=*/part-*.parquet"))


def log_bytes(logdir: str | os.PathLike[str]) -> int:
    """Bytes of the status log's parquet files under ``logdir``."""
    return sum(os.path.getsize(p) for p in _status_files(Path(logdir)))


def use_duckdb(engine: str, source: Any, *, log: Any = None) -> bool:
    """Whether ``engine`` (``auto``, ``pandas``, ``duckdb``) sends this call to DuckDB.

    ``auto`` chooses DuckDB for a path (``source`` or ``log``) whose status parquet is
    larger than :data:`AUTO_BYTES`, or for a results path, when DuckDB is installed.
    """
    if engine not in ENGINES:
        raise InputError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if engine != "auto":
        return engine == "duckdb"
    if not available():
        return False
    if isinstance(source, str | os.PathLike) and log is None:
        return True  # a results path: only DuckDB reads it
    if isinstance(log, str | os.PathLike) and Path(log).is_dir():
        return log_bytes(log) > AUTO_BYTES
    return False


def _connect(memory_limit: str | None, threads: int | None) -> Any:
    con = _duckdb().connect()
    _run(con, "SET TimeZone = 'UTC'")
    # spill to the system's temporary directory, not to the caller's working directory
    spill = Path(tempfile.gettempdir()) / "massiva-duckdb"
    _run(con, f"SET temp_directory = '{str(spill).replace(chr(39), chr(39) * 2)}'")
    if memory_limit is not None:
        _run(con, f"SET memory_limit = '{memory_limit}'")
    if threads is not None:
        _run(con, f"SET threads = {int(threads)}")
    return con


def _check_zone(con: Any, tz: str) -> None:
    try:
        _run(con, "SELECT timezone(?, TIMESTAMP '2000-01-01')", [tz])
    except Exception as exc:  # duckdb raises its own error types for unknown zones
        raise InputError(f"unknown time zone {tz!r}") from exc


def _log_view(con: Any, logdir: str | os.PathLike[str]) -> None:
    """View ``massiva_log``: the status events of ``logdir`` (parquet + journal)."""
    root = Path(logdir)
    if not root.is_dir():
        raise InputError(f"no callback log directory at {str(root)!r}")
    schema = SCHEMAS["status"]
    pending = rows_to_table("status", read_journal(root, "status"))
    con.register("massiva_pending", pending)
    columns = ", ".join(schema.names)
    files = _status_files(root)
    if files:
        listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        stored = f"SELECT {columns} FROM read_parquet([{listed}], union_by_name = true)"
    else:
        con.register("massiva_stored", schema.empty_table())
        stored = f"SELECT {columns} FROM massiva_stored"
    _run(
        con,
        f"CREATE OR REPLACE TEMP VIEW massiva_log AS "
        f"SELECT {columns} FROM massiva_pending UNION ALL {stored}",
    )


_EVENTS_SQL = """
SELECT min(received_at) AS received_at, any_value(message_id) AS message_id,
       any_value({status}) AS code, any_value(updated_at) AS updated_at,
       any_value(line) AS line
FROM massiva_log GROUP BY event_key
"""  # a repeated callback (same event_key) counts once, at its first arrival

_FINAL_SQL = """
CREATE OR REPLACE TEMP TABLE massiva_final AS
SELECT message_id, code, timezone($tz, updated_at) AS final_at, received_at, line
FROM ({events})
WHERE message_id IS NOT NULL AND code IS NOT NULL
QUALIFY row_number() OVER (
    PARTITION BY message_id
    ORDER BY timezone($tz, updated_at) DESC NULLS LAST, received_at DESC NULLS LAST
) = 1
"""

_COUNT_SQL = """
SELECT count(*), count(*) FILTER (WHERE message_id IS NULL OR code IS NULL) FROM ({events})
"""


def _final_table(con: Any, logdir: str | os.PathLike[str], tz: str) -> dict[str, int]:
    """Temp table ``massiva_final``: one row per message, its final usable event."""
    _check_zone(con, tz)
    error: Exception | None = None
    for _ in range(20):
        _log_view(con, logdir)
        try:
            con.execute(
                _FINAL_SQL.format(events=_EVENTS_SQL.format(status=_STATUS_SQL)), {"tz": tz}
            )
            break
        except _duckdb().IOException as exc:  # a merge replaced files between list and read
            error = exc
            time.sleep(0.05)
    else:
        assert error is not None
        raise error
    events_sql = _EVENTS_SQL.format(status=_STATUS_SQL)
    events, unusable = (int(v) for v in _run(con, _COUNT_SQL.format(events=events_sql))[0])
    messages = int(_run(con, "SELECT count(*) FROM massiva_final")[0][0])
    return {"events": events, "unusable_events": unusable, "messages": messages}


def final_status_log(
    logdir: str | os.PathLike[str],
    *,
    tz: str = DEFAULT_TZ,
    memory_limit: str | None = None,
    threads: int | None = None,
) -> pd.DataFrame:
    """Each message's final status event, read from ``logdir`` by DuckDB.

    Parameters
    ----------
    logdir : path
        The receiver's log directory (parquet dataset and journal).
    tz : str, default "America/Caracas"
        The zone of the provider's ``updated_at`` (docs/protocol.md §5).
    memory_limit : str, optional
        DuckDB's memory limit (e.g. ``"1GB"``); beyond it DuckDB spills to disk.
    threads : int, optional
        DuckDB's threads.

    Returns
    -------
    DataFrame
        A status log with one event per message id (the one ``attach_delivery`` would
        pick): ``message_id`` (Int64), ``status``, ``updated_at`` and ``received_at``
        (UTC), ``line``. ``attrs["events"]`` and ``attrs["unusable_events"]`` count the
        events of the whole log (repeats dropped).
    """
    con = _connect(memory_limit, threads)
    try:
        stats = _final_table(con, logdir, tz)
        table = _arrow_table(
            con,
            "SELECT message_id, CASE code WHEN 1 THEN 'delivered' ELSE 'failed' END AS "
            "status, final_at AS updated_at, received_at, line FROM massiva_final",
        )
    finally:
        con.close()
    frame: pd.DataFrame = table.to_pandas(
        types_mapper={pa.int64(): pd.Int64Dtype(), pa.string(): pd.StringDtype()}.get
    )
    for name in ("updated_at", "received_at"):
        frame[name] = frame[name].dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    frame.attrs.update(events=stats["events"], unusable_events=stats["unusable_events"])
    return frame


def _quote(name: Hashable) -> str:
    return '"' + str(name).replace('"', '""') + '"'


def _source(con: Any, source: Any, what: str) -> tuple[str, list[str], dict[str, str]]:
    """A relation name for a frame or a parquet path/glob, its columns and SQL types."""
    if isinstance(source, pd.DataFrame):
        frame = source.reset_index(drop=True)
        for name in frame.columns:
            if isinstance(frame[name].dtype, pd.CategoricalDtype):
                frame[name] = frame[name].astype("string")
        con.register("massiva_source", frame)
        relation = "massiva_source"
    elif isinstance(source, str | os.PathLike):
        path = str(source)
        if Path(path).is_dir():
            path = str(Path(path) / "**" / "*.parquet")
        relation = f"read_parquet('{path.replace(chr(39), chr(39) * 2)}')"
    else:
        raise InputError(f"{what} must be a DataFrame or a parquet path, got {type(source)}")
    try:
        described = _run(con, f"DESCRIBE SELECT * FROM {relation}")
    except _duckdb().Error as exc:
        raise InputError(f"{what}: cannot read {source!s}: {exc}") from exc
    types = {str(row[0]): str(row[1]) for row in described}
    return relation, list(types), types


def _utc(column: str, kind: str) -> str:
    """SQL for a timestamp column as TIMESTAMPTZ (naive values are UTC)."""
    if kind.startswith("TIMESTAMP WITH TIME ZONE"):
        return column
    return f"timezone('UTC', CAST({column} AS TIMESTAMP))"


def _latency_seconds(source: Any, kind: str) -> str:
    """SQL for the ``latency`` column in seconds (an INTERVAL, or a parquet duration)."""
    if kind == "INTERVAL":
        return "epoch(latency)"
    if isinstance(source, pd.DataFrame):
        return "CAST(latency AS DOUBLE) / 1e9"
    unit = "us"
    for field in ds.dataset(str(source), format="parquet").schema:
        if field.name == "latency" and pa.types.is_duration(field.type):
            unit = field.type.unit
    scale = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[unit]
    return f"CAST(latency AS DOUBLE) / {scale}"


def _operator_sql(codes: bool) -> str:
    cases = " ".join(f"WHEN '{c}' THEN '{c if codes else n}'" for c, n in OPERATOR_NAMES.items())
    code = (
        'CASE WHEN length("phone") = 12 AND starts_with("phone", \'58\') '
        'THEN substr("phone", 3, 3) END'
    )
    known = f"CASE {code} {cases} END"
    if codes:
        return known
    return f"CASE WHEN \"phone\" IS NULL THEN NULL ELSE coalesce({known}, 'other') END"


def summary_groups(
    source: Any,
    keys: Sequence[Hashable],
    *,
    tz: str = DEFAULT_TZ,
    memory_limit: str | None = None,
) -> dict[str, Any]:
    """Per-group state counts and delivery latencies, computed by DuckDB.

    Parameters
    ----------
    source : DataFrame or path
        A results frame (delivery attached), or a parquet file, directory or glob of one.
    keys : list
        ``delivery_summary``'s ``by`` keys: columns, ``operator``, ``prefix``, ``hour``,
        ``date``, ``attempt`` (a frame's ``campaign`` attribute is constant: not a SQL group).

    Returns
    -------
    dict
        ``sample``: one row per group holding the source columns its keys come from (so
        the pandas key functions give each group's labels); ``counts`` (groups x
        :data:`~massiva_frames.analytics.shapes.STATES`), ``rows``, ``median``, ``p90``
        (latency seconds of delivered rows per group), and ``total_median``,
        ``total_p90`` over every group.
    """
    con = _connect(memory_limit, None)
    try:
        _check_zone(con, tz)
        relation, columns, types = _source(con, source, "the frame")
        if "state" not in columns:
            raise InputError("the frame has no column 'state'")
        groups: list[str] = []
        sample: dict[str, str] = {}
        for key in keys:
            if key in columns:
                groups.append(_quote(key))
                sample[str(key)] = _quote(key)
            elif key in ("operator", "prefix"):
                if "phone" not in columns:
                    raise InputError("the frame has no column 'phone'")
                groups.append(_operator_sql(key == "prefix"))
                sample["phone"] = '"phone"'
            elif key in ("hour", "date"):
                if "sent_at" not in columns:
                    raise InputError("the frame has no column 'sent_at'")
                local = f"timezone($tz, {_utc('sent_at', types['sent_at'])})"
                groups.append(f"hour({local})" if key == "hour" else f"CAST({local} AS DATE)")
                sample["sent_at"] = _utc("sent_at", types["sent_at"])
            elif key == "attempt":  # no such column: first attempts only (as in pandas)
                if "message_id" not in columns:
                    raise InputError("the frame has no column 'message_id'")
                groups.append("CASE WHEN message_id IS NULL THEN NULL ELSE 1 END")
                sample["message_id"] = '"message_id"'
            # campaign (no such column) and unknown keys: the pandas key function decides
        seconds = (
            _latency_seconds(source, types["latency"]) if "latency" in columns else "NULL::DOUBLE"
        )
        delivered = "CAST(state AS VARCHAR) = 'delivered'"
        counts = ", ".join(
            f"count(*) FILTER (WHERE CAST(state AS VARCHAR) = '{s}') AS n{i}"
            for i, s in enumerate(STATES)
        )
        # any_value skips nulls: a group's sample is null only when the whole group is
        picked = ", ".join(
            f"any_value({expr}) AS {_quote('s_' + name)}" for name, expr in sample.items()
        )
        group_sql = ", ".join(f"{g} AS g{i}" for i, g in enumerate(groups))
        select = ", ".join(
            p
            for p in (
                group_sql,
                picked,
                "count(*) AS n_rows",
                counts,
                f"quantile_disc(lat, 0.5) FILTER (WHERE {delivered}) AS lat_median",
                f"quantile_disc(lat, 0.9) FILTER (WHERE {delivered}) AS lat_p90",
            )
            if p
        )
        by = f"GROUP BY {', '.join(f'g{i}' for i in range(len(groups)))}" if groups else ""
        base = f"SELECT *, {seconds} AS lat FROM {relation}"
        params = {"tz": tz} if "$tz" in select else {}
        table = _arrow_table(con, f"SELECT {select} FROM ({base}) {by}", params or None)
        total = _run(
            con,
            "SELECT quantile_disc(lat, 0.5), quantile_disc(lat, 0.9) "
            f"FROM ({base}) WHERE {delivered}",
        )[0]
    finally:
        con.close()
    got = table.to_pandas(types_mapper={pa.string(): pd.StringDtype()}.get)
    picked_frame = pd.DataFrame(
        {name: got["s_" + name] for name in sample}, index=pd.RangeIndex(len(got))
    )
    if "sent_at" in picked_frame:
        picked_frame["sent_at"] = pd.to_datetime(picked_frame["sent_at"], utc=True)
    if isinstance(source, pd.DataFrame):
        picked_frame.attrs = dict(source.attrs)
    return {
        "sample": picked_frame,
        "counts": got[[f"n{i}" for i in range(len(STATES))]].to_numpy(dtype=np.int64),
        "rows": got["n_rows"].to_numpy(dtype=np.int64),
        "median": got["lat_median"].to_numpy(dtype=float, na_value=np.nan),
        "p90": got["lat_p90"].to_numpy(dtype=float, na_value=np.nan),
        "total_median": np.nan if total[0] is None else float(total[0]),
        "total_p90": np.nan if total[1] is None else float(total[1]),
    }


_BATCH_ROWS = 1 << 17


def _write_batches(reader: Any, out: str | os.PathLike[str]) -> int:
    """Stream record batches into one parquet file; ``latency`` (microseconds) becomes a
    duration, as pandas writes a timedelta. Written under a temporary name, then renamed."""
    target = Path(out)
    tmp = target.with_name(f".{target.name}.tmp")
    schema = reader.schema
    at = schema.get_field_index("latency")
    schema = schema.set(at, pa.field("latency", pa.duration("us")))
    rows = 0
    with pq.ParquetWriter(tmp, schema) as writer:
        for batch in reader:
            columns = list(batch.columns)
            columns[at] = columns[at].cast(pa.duration("us"))
            writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
            rows += batch.num_rows
    os.replace(tmp, target)
    return rows


_ATTACHED = ("state", "reason", "status_at", "line", "delivered_at", "latency")


def _attach_sql(relation: str, columns: list[str], types: dict[str, str], tick_us: int) -> str:
    """SELECT of the results with delivery attached, as ``attach_delivery`` computes it:
    ``sent_at`` read at ``tick_us``, the resolution of the matched delivery stamps."""
    eligible = (
        "CAST(r.state AS VARCHAR) IN ('accepted', 'delivered', 'failed') "
        "AND CAST(r.message_id AS BIGINT) = f.message_id"
    )
    old_reason = "CAST(r.reason AS VARCHAR)" if "reason" in columns else "NULL::VARCHAR"
    old_at = (
        _utc("r.status_at", types["status_at"]) if "status_at" in columns else "NULL::TIMESTAMPTZ"
    )
    old_line = "CAST(r.line AS VARCHAR)" if "line" in columns else "NULL::VARCHAR"
    new = {
        "state": "CASE WHEN f.message_id IS NULL THEN CAST(r.state AS VARCHAR) "
        "WHEN f.code = 1 THEN 'delivered' ELSE 'failed' END",
        "reason": f"CASE WHEN f.message_id IS NULL THEN {old_reason} "
        "WHEN f.code = 1 THEN NULL ELSE 'delivery_failed' END",
        "status_at": f"CASE WHEN f.message_id IS NULL THEN {old_at} ELSE f.final_at END",
        "line": f"CASE WHEN f.message_id IS NULL THEN {old_line} ELSE f.line END",
    }
    inner = [f"r.{_quote(c)}" for c in columns if c not in _ATTACHED]
    inner += [f"{expr} AS {name}" for name, expr in new.items()]
    if "sent_at" in columns:
        inner.append(f"{_utc('r.sent_at', types['sent_at'])} AS massiva_sent")
    joined = (
        f"SELECT {', '.join(inner)} FROM {relation} AS r LEFT JOIN massiva_final AS f ON {eligible}"
    )
    delivered_at = "CASE WHEN state = 'delivered' THEN status_at END"
    if "sent_at" in columns:
        sent = f"(epoch_us(massiva_sent) // {tick_us} * {tick_us})"
        gap = f"(epoch_us({delivered_at}) - {sent})"
        # the provider stamps whole seconds: a same-second delivery may look early
        latency = f"CASE WHEN {gap} < 0 AND {gap} >= -{tick_us} THEN 0 ELSE {gap} END"
    else:
        latency = "NULL::BIGINT"
    computed = {"delivered_at": delivered_at, "latency": latency}
    order = [c for c in columns if c not in ("delivered_at", "latency")]
    order += [c for c in ("reason", "status_at", "line") if c not in columns]
    outer = [_quote(c) for c in order]
    outer += [f"{expr} AS {name}" for name, expr in computed.items()]
    return f"SELECT {', '.join(outer)} FROM ({joined})"


def write_attached(
    results: Any,
    logdir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    tz: str = DEFAULT_TZ,
    memory_limit: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """``attach_delivery`` from parquet to parquet, out of core: no pandas frame is built.

    Parameters
    ----------
    results : path or DataFrame
        Results as a parquet file, directory or glob (or a frame).
    logdir : path
        The receiver's log directory.
    out : path
        The parquet file to write: the results' columns with ``state``, ``reason``,
        ``status_at`` and ``line`` as ``attach_delivery`` sets them, plus
        ``delivered_at`` and ``latency`` (a duration, as pandas writes a timedelta; null
        without ``sent_at``). Batches are streamed: memory stays bounded by DuckDB's.
    tz : str, default "America/Caracas"
        The zone of the provider's ``updated_at`` (docs/protocol.md §5).
    memory_limit : str, optional
        DuckDB's memory limit (e.g. ``"1GB"``); beyond it DuckDB spills to disk.
    threads : int, optional
        DuckDB's threads.

    Returns
    -------
    dict
        ``events``, ``unusable_events``, ``messages``, ``rows``, ``matched_rows`` and
        ``unmatched_ids``, as ``attach_delivery``'s ``attrs["delivery"]`` counts them, and
        ``latency_resolution_s`` (1.0 for the provider's whole-second stamps).
    """
    con = _connect(memory_limit, threads)
    try:
        stats: dict[str, Any] = dict(_final_table(con, logdir, tz))
        relation, columns, types = _source(con, results, "results")
        for name in ("state", "message_id"):
            if name not in columns:
                raise InputError(f"results has no column {name!r}")
        try:
            counted = _run(
                con,
                "SELECT count(*), count(DISTINCT f.message_id), "
                # the resolution of the delivery stamps, as analytics.shapes.resolution reads it
                "bool_and(epoch_us(f.final_at) % 1000000 = 0) FILTER (WHERE f.code = 1), "
                "bool_and(epoch_us(f.final_at) % 1000 = 0) FILTER (WHERE f.code = 1) "
                f"FROM {relation} AS r JOIN massiva_final AS f "
                "ON CAST(r.state AS VARCHAR) IN ('accepted', 'delivered', 'failed') "
                "AND CAST(r.message_id AS BIGINT) = f.message_id",
            )[0]
            tick_us = 1_000_000 if counted[2] in (True, None) else 1000 if counted[3] else 1
            sql = _attach_sql(relation, columns, types, tick_us)
            written = _write_batches(_arrow_reader(con, sql, _BATCH_ROWS), out)
        except _duckdb().ConversionException as exc:
            raise InputError("results column 'message_id' must hold integer ids") from exc
    finally:
        con.close()
    stats["rows"] = written
    stats["matched_rows"] = int(counted[0])
    stats["unmatched_ids"] = stats["messages"] - int(counted[1])
    stats["latency_resolution_s"] = tick_us / 1e6
    return stats
