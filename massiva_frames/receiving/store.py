"""The callback dataset: one parquet dataset per kind, partitioned by day, and reading it.

Layout of a log directory::

    LOGDIR/_journal/<instance>.db                  durable logs (SQLite, see .event_journal)
    LOGDIR/status/day=YYYY-MM-DD/part-<instance>-<uuid>.parquet
    LOGDIR/inbound/day=YYYY-MM-DD/part-<instance>-<uuid>.parquet

``day`` is the UTC date the callback was received (hive partitioning, so
``pyarrow.dataset.dataset(LOGDIR/"status", partitioning="hive")`` and DuckDB's
``read_parquet('LOGDIR/status/**/*.parquet', hive_partitioning=true)`` read it).

Crash safety: compaction writes each parquet file under a hidden temporary name, fsyncs
it, renames it into place (readers never see half a file), fsyncs its directory (and the
parent of every directory it created) and only then deletes the rows from the journal.
A crash between the two leaves an event in both places: a repeat, with the same
``event_key``, which :func:`read_callbacks` and the next merge drop.

Several instances (see :mod:`.instances`): a compaction moves the journals written by a
receiver of its own process and adopts those no live process holds (under their owner
lock); a journal another live process writes is left to that process's compaction. Runs
are serialised by ``_journal/compact.lock``, so no two move the same rows or merge the
same files. A part's name carries the instance whose journal it came from (``merged``
for merges) and a random UUID: no two instances write the same name.

Parquet columns (status): ``event_key``, ``received_at`` (UTC), ``message_id`` (int64),
``status`` ("delivered"/"failed"), ``updated_at`` (the provider's local wall-clock time,
no zone: docs/protocol.md §2), ``user``, ``detail``, ``line``. Inbound: ``event_key``,
``received_at``, ``text``, ``phone``, ``line``, ``email``.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time
import uuid
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ..errors import InputError
from .event_journal import (
    COLUMNS,
    Row,
    connect_journal,
    make_dirs,
    read_journal,
    sync_dir,
)
from .fields import KINDS, STATUS_NAMES, derive_inbound, derive_status
from .instances import OwnerLock, held_here, journals, try_flock, unflock

__all__ = [
    "SCHEMAS",
    "CompactionStats",
    "compact",
    "read_callbacks",
    "rows_to_table",
]

_UTC_US = pa.timestamp("us", tz="UTC")
_KEYS = [("event_key", pa.string()), ("received_at", _UTC_US)]

#: parquet schema of each kind
SCHEMAS: dict[str, pa.Schema] = {
    "status": pa.schema(
        [
            *_KEYS,
            ("message_id", pa.int64()),
            ("status", pa.string()),
            ("updated_at", pa.timestamp("us")),
            ("user", pa.string()),
            ("detail", pa.string()),
            ("line", pa.string()),
        ],
        metadata={"updated_at": "provider local wall-clock time, no zone (docs/protocol.md §2)"},
    ),
    "inbound": pa.schema(
        [
            *_KEYS,
            ("text", pa.string()),
            ("phone", pa.string()),
            ("line", pa.string()),
            ("email", pa.string()),
        ]
    ),
}

#: columns of the frames read_callbacks returns, in order
FRAME_COLUMNS: dict[str, list[str]] = {
    "status": ["message_id", "status", "updated_at", "user", "detail", "line", "received_at"],
    "inbound": ["text", "phone", "line", "email", "received_at"],
}

_DAY_US = 86_400_000_000
_EPOCH = dt.date(1970, 1, 1)
_MOVE_BATCH = 100_000


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(map(repr, KINDS))}, not {kind!r}")


def rows_to_table(kind: str, rows: Sequence[Row]) -> pa.Table:
    """Typed arrow table of journal rows ``(received_us, event_key, *raw values)``."""
    schema = SCHEMAS[kind]
    derive = derive_status if kind == "status" else derive_inbound
    derived = [derive(row[2:]) for row in rows]  # type: ignore[arg-type]
    value_fields = list(schema)[2:]
    columns: list[Sequence[object]] = (
        [list(col) for col in zip(*derived, strict=True)] if derived else [[] for _ in value_fields]
    )
    arrays = [
        pa.array([row[1] for row in rows], pa.string()),
        pa.array([row[0] for row in rows], pa.int64()).cast(_UTC_US),
        *(pa.array(col, type=f.type) for col, f in zip(columns, value_fields, strict=True)),
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _write_part(table: pa.Table, directory: Path, source: str) -> Path:
    """Write ``table`` as a new part file in ``directory``, atomically and durably;
    ``source`` (the instance, or ``merged``) goes into its name."""
    make_dirs(directory)
    unique = uuid.uuid4().hex
    name = f"part-{source}-{unique}.parquet"
    # A hidden name: pyarrow ignores '.'-prefixed files and '*.parquet' globs skip '.tmp'.
    tmp = directory / f".part-{unique}.parquet.tmp"
    pq.write_table(table, tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    final = directory / name
    os.replace(tmp, final)
    sync_dir(directory)
    return final


def _day_dir(logdir: Path, kind: str, day_number: int) -> Path:
    day = _EPOCH + dt.timedelta(days=day_number)
    return logdir / kind / f"day={day.isoformat()}"


def _dedupe(table: pa.Table) -> pa.Table:
    """Earliest row of each ``event_key``, ordered by ``received_at`` (a stable sort)."""
    if table.num_rows == 0:
        return table
    table = table.take(pc.sort_indices(table, sort_keys=[("received_at", "ascending")]))
    order = pa.table({"k": table["event_key"], "i": pa.array(np.arange(table.num_rows))})
    firsts = order.group_by("k", use_threads=False).aggregate([("i", "min")])["i_min"]
    if len(firsts) == table.num_rows:
        return table
    return table.take(pa.array(np.sort(firsts.to_numpy())))


@dataclass(frozen=True)
class CompactionStats:
    """What one :func:`compact` run did."""

    #: events moved from the journal into parquet files
    moved: int = 0
    #: parquet files written (new parts and merged files)
    files_written: int = 0
    #: small parquet files merged into bigger ones (and removed)
    files_merged: int = 0


_try_lock, _unlock = try_flock, unflock


def _lock(logdir: Path, timeout: float) -> int:
    """Take the compaction lock (a flock, released by the kernel if the process dies)."""
    path = logdir / "_journal" / "compact.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    while not _try_lock(fd):
        if time.monotonic() >= deadline:
            os.close(fd)
            raise TimeoutError(f"another compaction of {logdir} is running")
        time.sleep(0.05)
    return fd


def _move(logdir: Path, conn: sqlite3.Connection, kind: str, source: str) -> tuple[int, int]:
    moved = files = 0
    cols = ", ".join(COLUMNS[kind])
    while True:
        rows = conn.execute(
            f"SELECT seq, received_us, event_key, {cols} FROM {kind} ORDER BY seq LIMIT ?",
            (_MOVE_BATCH,),
        ).fetchall()
        if not rows:
            break
        by_day: dict[int, list[Row]] = {}
        seen: set[str] = set()
        for row in rows:
            if row[2] not in seen:  # a repeat within the batch is stored once
                seen.add(row[2])
                by_day.setdefault(row[1] // _DAY_US, []).append(row[1:])
        for day, day_rows in sorted(by_day.items()):
            _write_part(rows_to_table(kind, day_rows), _day_dir(logdir, kind, day), source)
            files += 1
        # Only now that the parquet files are durable. Rows added since the SELECT have a
        # larger seq (the rows read still exist), so this deletes exactly the rows read.
        conn.execute(f"DELETE FROM {kind} WHERE seq <= ?", (rows[-1][0],))
        moved += len(rows)
        if len(rows) < _MOVE_BATCH:
            break
    return moved, files


def _move_journal(root: Path, path: Path) -> tuple[int, int]:
    """Move one instance's journal, if this process writes it or nobody does."""
    with held_here(path) as ours:
        if ours:
            return _move_all(root, path)
    adopted = OwnerLock.take(path)
    if adopted is None:
        return 0, 0  # a live receiver in another process writes it: its own to move
    try:
        return _move_all(root, path) if path.exists() else (0, 0)
    finally:
        adopted.release()


def _move_all(root: Path, path: Path) -> tuple[int, int]:
    moved = files = 0
    conn = connect_journal(path, create=True)
    try:
        for kind in KINDS:
            m, f = _move(root, conn, kind, path.stem)
            moved, files = moved + m, files + f
    finally:
        conn.close()
    return moved, files


def _merge(day_dir: Path, kind: str, max_small_files: int, small_file_bytes: int) -> int:
    for stray in day_dir.glob(".part-*.tmp"):  # left by a crash; we hold the lock
        stray.unlink(missing_ok=True)
    small = sorted(p for p in day_dir.glob("part-*.parquet") if p.stat().st_size < small_file_bytes)
    if len(small) <= max_small_files:
        return 0
    table = ds.dataset([str(p) for p in small], schema=SCHEMAS[kind], format="parquet")
    _write_part(_dedupe(table.to_table()), day_dir, "merged")
    # A crash before these unlinks leaves repeats, which readers and the next merge drop.
    for p in small:
        p.unlink(missing_ok=True)
    sync_dir(day_dir)
    return len(small)


def compact(
    logdir: str | os.PathLike[str],
    *,
    merge: bool = True,
    max_small_files: int = 8,
    small_file_bytes: int = 32 << 20,
    timeout: float = 60.0,
) -> CompactionStats:
    """Move committed callbacks from the journals into the parquet dataset; merge small files.

    Safe to call while receivers run, from any process: runs are serialised by a lock
    file, and a crash at any point loses nothing (at worst it leaves repeats, which
    :func:`read_callbacks` drops). The receiver calls it every few seconds and at shutdown.
    It moves the journals of this process's receivers and those no live receiver holds
    (a stopped or killed instance's: adopted under its owner lock); a receiver running
    in another process compacts its own.

    Parameters
    ----------
    logdir : path
        The callback log directory.
    merge : bool
        Also merge a day's small parquet files into one when there are more than
        ``max_small_files`` of them smaller than ``small_file_bytes``.
    timeout : float
        Seconds to wait for a compaction already running; then ``TimeoutError``.

    Returns
    -------
    CompactionStats

    Examples
    --------
    >>> from massiva_frames.receiving import compact
    >>> compact("callback-logs")  # doctest: +SKIP
    CompactionStats(moved=120, files_written=1, files_merged=0)
    """
    root = Path(logdir)
    if not root.is_dir():
        raise InputError(f"no callback log directory at {str(root)!r}")
    fd = _lock(root, timeout)
    try:
        moved = files = merged = 0
        for path in journals(root):
            m, f = _move_journal(root, path)
            moved, files = moved + m, files + f
        if merge:
            for kind in KINDS:
                for day_dir in sorted((root / kind).glob("day=*")):
                    n = _merge(day_dir, kind, max_small_files, small_file_bytes)
                    merged += n
                    files += bool(n)
        return CompactionStats(moved=moved, files_written=files, files_merged=merged)
    finally:
        _unlock(fd)
        os.close(fd)


def _read_dataset(kind_dir: Path, schema: pa.Schema) -> pa.Table:
    error: OSError | None = None
    for _ in range(20):
        files = sorted(str(p) for p in kind_dir.glob("day=*/part-*.parquet"))
        if not files:
            return schema.empty_table()
        try:
            return ds.dataset(files, schema=schema, format="parquet").to_table()
        except OSError as exc:  # a merge replaced files between listing and reading
            error = exc
            time.sleep(0.05)
    assert error is not None
    raise error


_PANDAS_TYPES = {pa.int64(): pd.Int64Dtype(), pa.string(): pd.StringDtype("pyarrow")}


def read_callbacks(
    logdir: str | os.PathLike[str], kind: str = "status", *, tz: str = "America/Caracas"
) -> pd.DataFrame:
    """Read the callbacks a receiver stored, as a typed DataFrame, repeats dropped.

    Reads the parquet dataset plus the events not yet compacted, so an event is visible
    as soon as it was acknowledged. Works while the receiver runs, from any process.

    Parameters
    ----------
    logdir : path
        The receiver's log directory (``massiva-frames receive --dir LOGDIR``).
    kind : {"status", "inbound"}
        Final-status callbacks (docs/protocol.md §2) or inbound SMS (docs/protocol.md §3).
    tz : str
        The zone of ``fecha_actualizacion``, which the provider sends without one
        (docs/protocol.md §5: America/Caracas).

    Returns
    -------
    DataFrame
        status: ``message_id`` (Int64), ``status`` (category: delivered, failed),
        ``updated_at`` (tz-aware in ``tz``), ``user``, ``detail``, ``line`` (the line
        that dispatched it, digits only, when delivered), ``received_at`` (UTC).
        inbound: ``text``, ``phone``, ``line``, ``email``, ``received_at`` (UTC).
        Strings are ``string`` dtype. Sorted by ``received_at``; a repeated callback
        (same parameters) appears once, at its first arrival.

    Examples
    --------
    >>> import massiva_frames as mf
    >>> status = mf.read_callbacks("callback-logs", kind="status")  # doctest: +SKIP
    >>> status.groupby("status", observed=True).size()  # doctest: +SKIP
    """
    _check_kind(kind)
    try:
        zone = zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise InputError(f"unknown time zone {tz!r}") from exc
    root = Path(logdir)
    if not root.is_dir():
        raise InputError(f"no callback log directory at {str(root)!r}")
    # The journal first, then parquet: a row leaves the journal only after it is in
    # parquet, so an event compacted in between is read twice (then deduped), never missed.
    pending = rows_to_table(kind, read_journal(root, kind))
    table = pa.concat_tables([pending, _read_dataset(root / kind, SCHEMAS[kind])])
    table = _dedupe(table)
    frame = table.to_pandas(types_mapper=_PANDAS_TYPES.get)
    if kind == "status":
        frame["status"] = frame["status"].astype(pd.CategoricalDtype(list(STATUS_NAMES.values())))
        frame["updated_at"] = frame["updated_at"].dt.tz_localize(
            zone, ambiguous="NaT", nonexistent="shift_forward"
        )
    result: pd.DataFrame = frame[FRAME_COLUMNS[kind]].reset_index(drop=True)
    return result
