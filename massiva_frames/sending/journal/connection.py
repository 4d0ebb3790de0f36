"""A journal's SQLite connection: opening the file, its schema version, the lock, commits.

Opening sets the pragmas (WAL, ``synchronous=FULL``, the page size of a new file),
creates the tables (:mod:`.schema`) and checks the journal's schema version. Then: the
advisory lock that lets one process send at a time, re-entrant transactions, in-memory
snapshots, the ``meta`` table and the two ways queries are read (a frame, or object
arrays by column). The outbox (:mod:`.outbox`) and the journal itself (:mod:`.sqlite`)
build on it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any, Self
from urllib.parse import quote

import numpy as np
import pandas as pd

from ...errors import InputError, JournalBusyError
from . import writes as writes
from .schema import SCHEMA

# Internal to the SQLite journal (massiva_frames.sending.journal.sqlite).
__all__ = ["SCHEMA_VERSION", "SQLiteConnection"]

#: 1: massiva-frames 0.1.0 (the messages of a batch in flight carried 'inflight');
#: 2: the batch row alone records a request under way. Version 1 journals are read as
#: they are and marked 2 when opened for writing; a newer journal is refused.
SCHEMA_VERSION = 2


class SQLiteConnection:
    """An open journal file (or an in-memory one): see :class:`.sqlite.Journal`."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        readonly: bool = False,
        page_size: int = 32768,
    ) -> None:
        self.path = None if path is None else os.fspath(path)
        self._lock_file: IO[bytes] | None = None
        self._depth = 0
        if self.path is None:
            self.conn = sqlite3.connect(":memory:", isolation_level=None)
        elif readonly:
            if not os.path.exists(self.path):
                raise InputError(f"journal not found: {self.path}")
            uri = "file:" + quote(os.path.abspath(self.path)) + "?mode=ro"
            self.conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        else:
            self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            if not readonly:
                # 32 KiB pages for a new database (an existing file keeps its own): a send
                # writes and checkpoints 8x fewer WAL frames (measured ~70 ms less CPU per
                # 50,000 rows). Before WAL mode, which fixes the page size.
                self.conn.execute(f"PRAGMA page_size={int(page_size)}")
            if self.path is not None and not readonly:
                self.conn.execute("PRAGMA journal_mode=WAL")
                # Checkpoint every 64 MiB of WAL, not every 4 MiB: a send of 100k rows
                # writes no checkpoint between its requests; the last close does it anyway.
                size = int(self.conn.execute("PRAGMA page_size").fetchone()[0])
                self.conn.execute(f"PRAGMA wal_autocheckpoint={64 * 2**20 // size}")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA cache_size=-65536")  # 64 MiB: big sends stay in memory
            if not readonly:
                self.conn.executescript(SCHEMA)
                writes.prepare(self.conn)
            version = self.get_meta("schema_version")
            if readonly and not isinstance(version, int):
                raise sqlite3.DatabaseError("no schema version")
        except sqlite3.DatabaseError:
            self.conn.close()
            raise InputError(f"not a massiva-frames journal: {self.path}") from None
        if isinstance(version, int) and version > SCHEMA_VERSION:
            self.conn.close()
            raise InputError(
                f"journal {self.path} was written by a newer massiva-frames (journal "
                f"version {version}; this version reads up to {SCHEMA_VERSION}): upgrade "
                "massiva-frames to use it"
            )
        if not readonly and version != SCHEMA_VERSION:
            self.set_meta({"schema_version": SCHEMA_VERSION})

    # -- lifecycle --

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and release the lock."""
        self.conn.close()
        if self._lock_file is not None:
            self._lock_file.close()  # closing the descriptor releases the flock
            self._lock_file = None

    def lock(self) -> None:
        """Take the journal's advisory lock, or raise :class:`JournalBusyError`.

        The lock dies with the process (even ``SIGKILL``), so a crashed run never blocks
        the next one.
        """
        if self.path is None or self._lock_file is not None:
            return
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no flock; single-process use
            return
        handle = open(self.path + ".lock", "ab")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise JournalBusyError(
                f"journal {self.path} is in use by another send or dispatch; wait for it to finish"
            ) from None
        self._lock_file = handle

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One committed transaction (durable when it returns: ``synchronous=FULL``).

        Re-entrant: nested uses join the outer transaction, so a caller can group several
        writes into one commit (one fsync).
        """
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.conn
        except BaseException:
            self._depth = 0
            self.conn.execute("ROLLBACK")
            raise
        self._depth = 0
        self.conn.execute("COMMIT")

    def snapshot(self) -> Self:
        """An in-memory copy of this journal (a dry run plans on it and throws it away)."""
        # A backup into memory needs the source's page size.
        size = int(self.conn.execute("PRAGMA page_size").fetchone()[0])
        copy = type(self)(None, page_size=size)
        self.conn.backup(copy.conn)
        return copy

    # -- meta --

    def get_meta(self, key: str) -> Any:
        """The JSON value stored under ``key``, or None."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, values: dict[str, Any]) -> None:
        """Store JSON values (never credentials)."""
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [(k, json.dumps(v, sort_keys=True, default=str)) for k, v in values.items()],
            )

    # -- queries --

    def _frame(self, sql: str, params: Sequence[Any]) -> pd.DataFrame:
        """A query's result as a frame (pandas infers each column's type)."""
        cur = self.conn.execute(sql, params)
        columns = [d[0] for d in cur.description]
        return pd.DataFrame.from_records(cur.fetchall(), columns=columns)

    def _columns(self, sql: str, params: Sequence[Any] = ()) -> dict[str, np.ndarray[Any, Any]]:
        """A query's result as object arrays by column (no per-cell type inference)."""
        cur = self.conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
        table = np.empty((len(rows), len(names)), dtype=object)
        if rows:
            table[:] = rows  # one C-level pass; columns are views of it
        return {name: table[:, i] for i, name in enumerate(names)}
