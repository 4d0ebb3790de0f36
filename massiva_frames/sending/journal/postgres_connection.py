"""A PostgreSQL journal's connection: opening it, its schema version, transactions, and
getting the connection back when the database goes away for a moment.

Opening connects (psycopg 3, autocommit: every transaction is explicit), selects the
journal's schema (``search_path``) and brings its tables to this package's version
(:mod:`.postgres_schema`), or refuses a journal written by a newer one. Then: re-entrant
transactions; :meth:`PostgresConnection._run`, the one way the journal writes, which
reconnects and runs a write again when the connection was lost (every write is written
so that running it twice changes nothing) until the URL's ``reconnect`` seconds are
spent, then raises :class:`~massiva_frames.errors.JournalUnavailableError`; the ``meta``
table; and the two ways queries are read (a frame, or object arrays by column).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Self, TypeVar

import numpy as np
import pandas as pd

from ...errors import InputError, JournalUnavailableError
from .backend import now_us
from .postgres_schema import MIGRATIONS, SCHEMA_VERSION, VERSION_TABLE
from .postgres_url import Location, psycopg_module

if TYPE_CHECKING:
    import psycopg

# Internal to the PostgreSQL journal (massiva_frames.sending.journal.postgres).
__all__ = ["LOCK_BATCHES", "LOCK_OUTBOX", "PostgresConnection"]

T = TypeVar("T")

#: Advisory lock classes (the first key; the second is the schema's hash): creating or
#: migrating the tables, writing a send's rows and messages, reserving batch numbers.
LOCK_SETUP, LOCK_OUTBOX, LOCK_BATCHES = 0x4D460001, 0x4D460002, 0x4D460003


class PostgresConnection:
    """An open PostgreSQL journal: see :class:`.postgres.PostgresJournal`."""

    def __init__(self, journal: str, *, readonly: bool = False) -> None:
        self.location = Location.parse(journal)
        #: what messages call the journal (never the password)
        self.path = self.location.name
        self.readonly = readonly
        self._pg = psycopg_module()
        self._depth = 0
        #: False when a read-only open found no journal in the schema
        self.exists = True
        self.conn = self._open_connection()
        try:
            self._setup()
        except BaseException:
            self._close_quietly(self.conn)
            raise

    # -- connecting --

    def _open_connection(self) -> psycopg.Connection[Any]:
        """A new connection on the journal's schema, or :class:`JournalUnavailableError`."""
        pg = self._pg
        options: dict[str, Any] = {"autocommit": True}
        given = pg.conninfo.conninfo_to_dict(self.location.conninfo)
        if "connect_timeout" not in given:
            options["connect_timeout"] = 10
        if "application_name" not in given:
            options["application_name"] = "massiva-frames"
        try:
            conn: psycopg.Connection[Any] = pg.connect(self.location.conninfo, **options)
            conn.execute(
                pg.sql.SQL("SET search_path TO {}").format(pg.sql.Identifier(self.location.schema))
            )
            if self.readonly:
                conn.execute("SET default_transaction_read_only = on")
        except pg.Error as exc:  # libpq's text names host and user; masked all the same
            raise self.location.unavailable(exc, "connecting") from None
        return conn

    def _setup(self) -> None:
        """Create or migrate the tables (or, read-only, check them)."""
        version = self._version()
        #: whether the messages carry their attempt (False: a version 1 journal read as
        #: it is, every message a first attempt)
        self.has_attempts = not self.readonly or version is None or version >= 2
        if version is not None and version > SCHEMA_VERSION:
            raise InputError(
                f"journal {self.path} was written by a newer massiva-frames (journal version "
                f"{version}; this version reads up to {SCHEMA_VERSION}): upgrade "
                "massiva-frames to use it"
            )
        if version == SCHEMA_VERSION:
            return
        if self.readonly:
            if version is None:
                self.exists = False
            return
        pg = self._pg

        def migrate(conn: psycopg.Connection[Any]) -> None:
            self._advisory(LOCK_SETUP)
            conn.execute(
                pg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    pg.sql.Identifier(self.location.schema)
                )
            )
            conn.execute(VERSION_TABLE)
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM journal_version").fetchone()
            current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:  # another worker, newer than us, got there first
                raise InputError(f"journal {self.path} was written by a newer massiva-frames")
            for step in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step]:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO journal_version (version, applied_at) VALUES (%s, %s)",
                    (step, now_us()),
                )

        try:
            self._run(migrate, doing="creating its tables")
        except self._pg.errors.InsufficientPrivilege as exc:
            raise InputError(
                f"journal {self.path}: no right to create its tables "
                f"({self.location.describe(exc)}); choose a schema you own with ?schema=NAME"
            ) from None

    def _version(self) -> int | None:
        """The journal's version in this schema (None: no journal here)."""

        def read(conn: psycopg.Connection[Any]) -> int | None:
            found = conn.execute("SELECT to_regclass('journal_version')").fetchone()
            if found is None or found[0] is None:
                return None
            row = conn.execute("SELECT MAX(version) FROM journal_version").fetchone()
            return None if row is None or row[0] is None else int(row[0])

        return self._run(read, doing="reading its version")

    def _advisory(self, kind: int) -> None:
        """Take one of the journal's advisory locks until the transaction ends."""
        self.conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (kind, self.location.schema)
        )

    def _reconnect(self, deadline: float, cause: BaseException) -> None:
        """Replace a lost connection, retrying until ``deadline`` (monotonic seconds)."""
        self._close_quietly(self.conn)
        delay = 0.1
        while True:
            try:
                self.conn = self._open_connection()
                return
            except JournalUnavailableError:
                if time.monotonic() + delay > deadline:
                    raise self.location.unavailable(
                        cause, f"lost, not back after {self.location.reconnect:g} s"
                    ) from None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _lost(self) -> bool:
        return bool(self.conn.closed or self.conn.broken)

    @staticmethod
    def _close_quietly(conn: psycopg.Connection[Any]) -> None:
        try:
            conn.close()
        except Exception:  # noqa: S110 - closing a broken connection: nothing to report
            pass

    # -- lifecycle --

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (quietly: the database may be gone)."""
        self._close_quietly(self.conn)

    def lock(self) -> None:
        """Nothing to take here: see :meth:`.postgres_claims.Claims.lock`."""

    # -- transactions --

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN")
        self._depth = 1
        try:
            yield self.conn
        except BaseException:
            self._depth = 0
            if not self._lost():
                try:
                    self.conn.execute("ROLLBACK")
                except self._pg.OperationalError:
                    pass
            raise
        self._depth = 0
        self.conn.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """One committed transaction for every write inside it (re-entrant).

        A connection lost inside it raises :class:`JournalUnavailableError`: the
        transaction is rolled back by the server, and nothing in it was written.
        """
        try:
            with self._transaction() as conn:
                yield conn
        except self._pg.OperationalError as exc:
            if not self._lost():
                raise
            raise self.location.unavailable(exc) from None

    def _run(
        self,
        work: Callable[[psycopg.Connection[Any]], T],
        *,
        retry: bool = True,
        doing: str = "",
        one_statement: bool = False,
    ) -> T:
        """Run ``work`` in a transaction of its own (or the caller's, when one is open).

        ``one_statement``: ``work`` writes with one statement, which is its own
        transaction (no BEGIN and COMMIT around it: one round trip to the server instead
        of three). When the connection is lost, ``work`` runs again on a new one (every
        write of the journal is idempotent), for at most the URL's ``reconnect``
        seconds; inside the caller's transaction, or with ``retry=False``, it raises at
        once.
        """
        pg = self._pg
        if self._depth:
            try:
                return work(self.conn)
            except pg.OperationalError as exc:
                if not self._lost():
                    raise
                raise self.location.unavailable(exc, doing) from None
        deadline: float | None = None
        while True:
            try:
                if one_statement:
                    return work(self.conn)
                with self._transaction() as conn:
                    return work(conn)
            except pg.OperationalError as exc:
                if not self._lost():
                    raise
                if not retry:
                    raise self.location.unavailable(exc, doing) from None
                if deadline is None:
                    deadline = time.monotonic() + self.location.reconnect
                self._reconnect(deadline, exc)

    # -- meta --

    def get_meta(self, key: str) -> Any:
        """The JSON value stored under ``key``, or None."""
        if not self.exists:
            return None
        row = self._run(
            lambda c: c.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        )
        return None if row is None else json.loads(row[0])

    def set_meta(self, values: dict[str, Any]) -> None:
        """Store JSON values (never credentials)."""
        rows = [(k, json.dumps(v, sort_keys=True, default=str)) for k, v in values.items()]
        self._run(lambda c: self._put_meta(c, rows))

    @staticmethod
    def _put_meta(conn: psycopg.Connection[Any], rows: list[tuple[str, str]]) -> None:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO meta (key, value) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                rows,
            )

    # -- queries --

    def _fetch(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> tuple[list[str], list[Any]]:
        def read(conn: psycopg.Connection[Any]) -> tuple[list[str], list[Any]]:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                names = [d.name for d in cur.description or ()]
                return names, cur.fetchall()

        return self._run(read)

    def _frame(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> pd.DataFrame:
        """A query's result as a frame (pandas infers each column's type)."""
        names, rows = self._fetch(sql, params)
        return pd.DataFrame.from_records(rows, columns=names)

    def _columns(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> dict[str, np.ndarray[Any, Any]]:
        """A query's result as object arrays by column (no per-cell type inference)."""
        names, rows = self._fetch(sql, params)
        table = np.empty((len(rows), len(names)), dtype=object)
        if rows:
            table[:] = rows
        return {name: table[:, i] for i, name in enumerate(names)}
