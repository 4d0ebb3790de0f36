"""A journal's SQLite connection: opening the file, its schema version, the lock, commits.

Opening tells a journal from a new file, a damaged journal or another program's
database (:mod:`.checks`), sets the pragmas (WAL, ``synchronous=FULL``, the page size of
a new file), creates the tables (:mod:`.schema`) and checks the journal's schema version.
Then: the advisory lock that lets one process send at a time, the check before writing,
re-entrant transactions, in-memory snapshots, the ``meta`` table and the two ways
queries are read (a frame, or object arrays by column). Every ``sqlite3`` error leaves
as the :class:`~massiva_frames.errors.JournalError` that says its cause
(:mod:`.failures`). The outbox (:mod:`.outbox`) and the journal itself (:mod:`.sqlite`)
build on it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import IO, Any, Self
from urllib.parse import quote

import numpy as np
import pandas as pd

from ...errors import InputError, JournalVersionError
from . import checks, writes
from .failures import busy, corrupt, journal_error, not_a_journal
from .schema import ATTEMPTS_INDEX, SCHEMA

# Internal to the SQLite journal (massiva_frames.sending.journal.sqlite).
__all__ = ["SCHEMA_VERSION", "SQLiteConnection", "migrate_attempts"]

#: 1: massiva-frames 0.1.0 (the messages of a batch in flight carried 'inflight');
#: 2: the batch row alone records a request under way;
#: 3: messages carry their ``attempt`` and, from the second on, ``first_key`` (follow-up
#: sends). Older journals are read as they are and migrated forward when opened for
#: writing; a newer journal is refused.
SCHEMA_VERSION = 3


def migrate_attempts(conn: sqlite3.Connection) -> None:
    """Give the messages of a journal written before version 3 their ``attempt`` (1: every
    message so far is a first attempt) and ``first_key`` columns, and the attempts index.

    Each step is its own statement and is skipped when already done, so a process that
    stops half-way leaves a journal the next open finishes.
    """
    have = {str(row[1]) for row in conn.execute("PRAGMA table_info(messages)")}
    if "attempt" not in have:
        conn.execute("ALTER TABLE messages ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1")
    if "first_key" not in have:
        conn.execute("ALTER TABLE messages ADD COLUMN first_key TEXT")
    conn.execute(ATTEMPTS_INDEX)


class SQLiteConnection:
    """An open journal file (or an in-memory one): see :class:`.sqlite.Journal`.

    Used as a context manager it is closed on exit, and a ``sqlite3`` error raised inside
    leaves as the :class:`~massiva_frames.errors.JournalError` that says its cause
    (:mod:`.failures`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        readonly: bool = False,
        page_size: int = 32768,
    ) -> None:
        self.path = None if path is None else os.fspath(path)
        #: the path its errors name (a snapshot names the journal it was copied from)
        self.label = self.path
        self._lock_file: IO[bytes] | None = None
        self._depth = 0
        #: fingerprints of the messages' keys, for a writer that adds messages many
        #: times (a streamed send): each addition is then checked without reading every
        #: older message again (:class:`.checks.KeyPrints`); None: read them each time
        self.key_prints: checks.KeyPrints | None = None
        if self.path is not None and readonly and not os.path.exists(self.path):
            raise InputError(f"journal not found: {self.path}")
        try:
            self.conn = self._connect(readonly)
        except sqlite3.Error as exc:
            raise journal_error(exc, self.path) from exc
        try:
            self._open(readonly, page_size)
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            # UnicodeDecodeError: SQLite's message names a damaged schema entry, and
            # the sqlite3 module cannot decode it.
            self.conn.close()
            raise journal_error(exc, self.path) from exc
        except BaseException:
            self.conn.close()
            raise

    def _connect(self, readonly: bool, *, immutable: bool = False) -> sqlite3.Connection:
        if self.path is None:
            return sqlite3.connect(":memory:", isolation_level=None)
        if readonly:
            mode = "immutable=1" if immutable else "mode=ro"
            uri = "file:" + quote(os.path.abspath(self.path)) + "?" + mode
            return sqlite3.connect(uri, uri=True, isolation_level=None)
        return sqlite3.connect(self.path, isolation_level=None, timeout=30)

    def _classify(self, readonly: bool) -> str:
        """:func:`.checks.classify`; a read-only journal on a medium where SQLite cannot
        keep its -shm file (a read-only folder or file system) is read as immutable."""
        try:
            return checks.classify(self.conn, self.path)
        except sqlite3.OperationalError as exc:
            wal = "" if self.path is None else self.path + "-wal"
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            unwritable = code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY)
            if not (readonly and unwritable) or (os.path.exists(wal) and os.path.getsize(wal)):
                raise
            self.conn.close()
            self.conn = self._connect(readonly, immutable=True)
            return checks.classify(self.conn, self.path)

    def _open(self, readonly: bool, page_size: int) -> None:
        kind = self._classify(readonly)
        if readonly and kind == "new":
            raise not_a_journal(self.path, "an empty database")
        version = self.get_meta("schema_version") if kind == "journal" else None
        if kind == "journal" and not isinstance(version, int):
            if version is not None or self.conn.execute("SELECT 1 FROM messages").fetchone():
                raise corrupt(self.label, "its version record is missing or unreadable")
            if readonly:
                raise not_a_journal(self.path, "a journal that was never written")
        if isinstance(version, int) and version > SCHEMA_VERSION:  # refused before any write
            raise JournalVersionError(
                f"journal {self.path} was written by a newer massiva-frames (journal "
                f"version {version}; this version reads up to {SCHEMA_VERSION}): upgrade "
                "massiva-frames to use it",
                path=self.path,
            )
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
            migrate_attempts(self.conn)
            writes.prepare(self.conn)
            if version != SCHEMA_VERSION:
                self.set_meta({"schema_version": SCHEMA_VERSION})
        #: whether the messages carry their attempt (False: a journal written before
        #: version 3, read as it is: every message is a first attempt)
        self.has_attempts = any(
            row[1] == "attempt" for row in self.conn.execute("PRAGMA table_info(messages)")
        )

    # -- lifecycle --

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        # Read the cause before closing: closing checkpoints, and the -wal file that
        # hit the file size limit is gone after it.
        error = journal_error(exc, self.label) if isinstance(exc, sqlite3.Error) else None
        self.close()
        if error is not None:
            raise error from exc

    def close(self) -> None:
        """Close the connection and release the lock."""
        self.conn.close()
        if self._lock_file is not None:
            self._lock_file.close()  # closing the descriptor releases the flock
            self._lock_file = None

    def lock(self) -> None:
        """Take the journal's advisory lock, or raise :class:`JournalBusyError`.

        The lock is a ``.lock`` file beside the journal's real path (symbolic links
        resolved), so every path to the same journal takes the same lock. It dies with
        the process (even ``SIGKILL``), so a crashed run never blocks the next one.
        """
        if self.path is None or self._lock_file is not None:
            return
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no flock; single-process use
            return
        try:
            handle = open(os.path.realpath(self.path) + ".lock", "ab")  # noqa: SIM115
        except OSError as exc:  # held until close()
            raise journal_error(exc, self.path) from exc
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise busy(self.path) from None
        self._lock_file = handle

    def verify(self) -> None:
        """Check that the journal can say which messages were sent, before writing to it.

        Raises :class:`~massiva_frames.errors.JournalCorruptError` when it cannot (see
        :func:`.checks.verify`); an in-memory journal is new and always can.
        """
        if self.path is not None:
            checks.verify(self.conn, self.label)

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
            # SQLite may have rolled back already (a full disk, an I/O error): then
            # ROLLBACK fails, and the error that matters is the one being raised.
            if self.conn.in_transaction:
                with suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            raise
        self._depth = 0
        self.conn.execute("COMMIT")

    def snapshot(self) -> Self:
        """An in-memory copy of this journal (a dry run plans on it and throws it away)."""
        # A backup into memory needs the source's page size.
        size = int(self.conn.execute("PRAGMA page_size").fetchone()[0])
        copy = type(self)(None, page_size=size)
        copy.label = self.label
        self.conn.backup(copy.conn)
        migrate_attempts(copy.conn)  # a copy of a journal read as an older version wrote it
        copy.has_attempts = True
        return copy

    # -- meta --

    def get_meta(self, key: str) -> Any:
        """The JSON value stored under ``key``, or None."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return json.loads(row[0])
        except (TypeError, ValueError):
            raise corrupt(self.label, f"its record {key!r} cannot be read") from None

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
