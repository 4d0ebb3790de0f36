"""The send journal: an SQLite outbox that makes sends idempotent, resumable and scheduled.

A journal is one SQLite file (WAL, ``synchronous=FULL``) with these tables:

``meta``
    The latest call's settings (validation options, template, method, window, the
    input's index shape). Never credentials: neither the password nor the login.
``rows``
    The input frame of the latest call, one row per input row: its position, its index
    label (JSON-encoded, so any index dtype survives), its validation state and reason,
    encoding, segments and parts, and the stable ``row_key`` of the message(s) it sends
    (``NULL`` for invalid and suppressed rows). Phone and text are kept here only when
    no message holds them (invalid rows, split rows' full text).
``messages``
    The outbox, one row per message (``row_key``, ``part``): its state
    (``pending`` | ``accepted`` | ``rejected`` | ``unknown``), when it is due
    (``send_at``), its batch and the provider's answer. A message survives every
    re-run: it is what stops a phone from being texted twice. While its request is
    under way a message reads ``inflight`` (its batch says so: the row itself is
    written once, with the outcome; journals written by 0.1.0 stored ``inflight`` in
    the row, and it is still read and recovered).
``batches``
    One row per request, with its message ids in request order: ``inflight`` is
    committed *before* the request, ``done``/``unknown``/``not_sent``/``refused`` right
    after its outcome. A batch found ``inflight`` when a journal is opened for sending
    belongs to a process that died mid-request: its messages become ``unknown`` and are
    never resent automatically.
``runs``
    One row per send, dry run or dispatch, with its figures.

The rows and their messages are written in one transaction before any request. Only
one process sends from a journal at a time (an advisory lock on ``PATH.lock``,
released by the operating system when the process dies, even by ``SIGKILL``).

The SQL lives in :mod:`massiva_frames.sending.journal.schema`; the request loop's writes (batches
in flight, outcomes, one statement per write) in :mod:`massiva_frames.sending.journal.writes`.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from ...errors import InputError, JournalBusyError
from ..results import (
    ENCODINGS,
    REASON_PROCESS_STOPPED,
    decode_codes,
    range_index,
    rebuild_index,
    results_frame,
)
from . import writes as writes
from .schema import (
    FLYING_IDS,
    MULTI_SQL,
    OUTCOMES_SQL,
    RESULTS_SQL,
    SCHEMA,
    effective_state,
)
from .writes import Answered, Fate

# The helpers below are the sending layer's own; the public names are these.
__all__ = ["results_from_journal"]

#: 1: massiva-frames 0.1.0 (the messages of a batch in flight carried 'inflight');
#: 2: the batch row alone records a request under way. Version 1 journals are read as
#: they are and marked 2 when opened for writing; a newer journal is refused.
SCHEMA_VERSION = 2

_ROW_COLUMNS = (
    "position",
    "label",
    "row_key",
    "input_state",
    "reason",
    "phone",
    "text",
    "encoding",
    "segments",
    "parts",
)
_MESSAGE_COLUMNS = ("row_key", "part", "phone", "text", "campaign", "send_at")


def now_us() -> int:
    """The current UTC time in integer microseconds since the epoch (the journal's clock)."""
    return time.time_ns() // 1000


# --- the journal -------------------------------------------------------------------------


class Journal:
    """An open send journal.

    Parameters
    ----------
    path : str or path-like, optional
        The SQLite file; created if missing. ``None`` keeps an in-memory journal (a send
        without ``journal=`` still goes through one, so both paths share the code).
    readonly : bool
        Open an existing file without writing to it (``results_from_journal``).
    page_size : int
        The page size of a new database (an existing file keeps its own).

    Examples
    --------
    >>> with Journal(None) as j:
    ...     j.counts()
    {}
    """

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

    def __enter__(self) -> Journal:
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

    def snapshot(self) -> Journal:
        """An in-memory copy of this journal (a dry run plans on it and throws it away)."""
        # A backup into memory needs the source's page size.
        size = int(self.conn.execute("PRAGMA page_size").fetchone()[0])
        copy = Journal(None, page_size=size)
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

    # -- runs --

    def start_run(self, kind: str) -> int:
        """Record the start of a send or dispatch; returns its number."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO runs (kind, started_at) VALUES (?, ?)", (kind, now_us())
            )
        return int(cur.lastrowid or 0)

    def finish_run(self, number: int, summary: dict[str, Any]) -> None:
        """Record the end of a run with its figures."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE runs SET finished_at = ?, summary = ? WHERE number = ?",
                (now_us(), json.dumps(summary, default=str), number),
            )

    # -- recovery --

    def recover(self) -> int:
        """Turn batches left in flight by a dead process into ``unknown``.

        Their requests may have reached the provider (docs/protocol.md §5): their messages become
        ``unknown`` and are never resent automatically. Returns the number of messages.
        """
        api = "the sending process stopped during the request; the messages may have been sent"
        with self.transaction() as conn:
            flying = conn.execute(
                "SELECT number, requested_at, ids FROM batches WHERE state = 'inflight'"
            ).fetchall()
            before = conn.total_changes
            # A message of a batch in flight was not written before its request: it
            # still reads pending (or, in journals written by 0.1.0, inflight).
            conn.executemany(
                "UPDATE messages SET state = 'unknown', reason = ?, api_message = ?, "
                "batch = ?, sent_at = ? WHERE id = ? AND state IN ('pending', 'inflight')",
                (
                    (REASON_PROCESS_STOPPED, api, number, at, i)
                    for number, at, ids in flying
                    for i in json.loads(ids or "[]")
                ),
            )
            conn.execute(
                "UPDATE messages SET state = 'unknown', reason = ?, api_message = ?, sent_at = ("
                "SELECT requested_at FROM batches WHERE batches.number = messages.batch) "
                "WHERE state = 'inflight'",
                (REASON_PROCESS_STOPPED, api),
            )
            recovered = conn.total_changes - before
            conn.execute(
                "UPDATE batches SET state = 'unknown', detail = ? WHERE state = 'inflight'",
                (REASON_PROCESS_STOPPED,),
            )
        return recovered

    # -- rows and messages --

    def replace_rows(
        self,
        rows: Iterable[Sequence[Any]],
        meta: dict[str, Any],
        *,
        sending: Iterable[Sequence[Any]] = (),
    ) -> None:
        """Replace the input rows (one transaction) and store ``meta`` with them.

        Each row is ``(position, label, row_key, input_state, reason, phone, text,
        encoding, segments, parts)``. ``sending`` holds, more compactly, the rows that
        send one message: ``(position, label, row_key, encoding, segments)``, stored as
        ``ready`` without a reason, one part, their phone and text in their message.
        Positions are 0 to n-1 across both.
        """
        payload = [(k, json.dumps(v, sort_keys=True, default=str)) for k, v in meta.items()]
        with self.transaction() as conn:
            conn.execute("DELETE FROM rows")
            # No index on rows.row_key while the rows are written (maintaining it cost
            # every send): pending(), the only query that joins on it (dispatch, a
            # re-run), builds it once when it first needs it.
            conn.execute("DROP INDEX IF EXISTS rows_key")
            # Half the bound values for the common row (measured ~2x faster inserts).
            conn.executemany(
                "INSERT INTO rows (position, label, row_key, input_state, encoding, "
                "segments, parts) VALUES (?, ?, ?, 'ready', ?, ?, 1)",
                sending,
            )
            self._insert_many("INSERT INTO rows", _ROW_COLUMNS, rows)
            conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", payload)

    def add_messages(self, messages: Iterable[Sequence[Any]]) -> int:
        """Add messages not yet in the outbox; existing (row_key, part) are left untouched.

        Each message is ``(row_key, part, phone, text, campaign, send_at)``; it starts
        ``pending``. Returns how many were added.
        """
        constants = {"state": "pending", "created_at": now_us()}
        with self.transaction() as conn:
            before = conn.total_changes
            self._insert_many(
                "INSERT OR IGNORE INTO messages", _MESSAGE_COLUMNS, messages, constants
            )
            return conn.total_changes - before

    def insert_messages(
        self,
        row_key: Iterable[str],
        part: Iterable[int],
        phone: Iterable[str],
        text: Iterable[str],
        *,
        campaign: str,
    ) -> tuple[int, int]:
        """Add messages by column, like :meth:`add_messages` (due now); ids are explicit.

        The i-th message gets id ``first + i`` when it is added (an existing
        ``(row_key, part)`` is left untouched and its id unused). Returns ``(first,
        added)``: when ``added`` is the number of messages given, every one is new,
        pending, and its id is known without reading it back.
        """
        parts = list(part)
        created = int(now_us())
        # Constants as literals, not bound per message: the creation time (an int of
        # ours) and, in the common case, the part number.
        one_part = parts.count(1) == len(parts)
        with self.transaction() as conn:
            first = int(conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM messages").fetchone()[0])
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO messages "
                "(id, row_key, phone, text, campaign, state, created_at, part) "
                f"VALUES (?, ?, ?, ?, ?, 'pending', {created}, {'1' if one_part else '?'})",
                zip(
                    itertools.count(first),
                    row_key,
                    phone,
                    text,
                    itertools.repeat(campaign),
                    *(() if one_part else (parts,)),
                ),
            )
            return first, conn.total_changes - before

    def _insert_many(
        self,
        head: str,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        constants: dict[str, Any] | None = None,
    ) -> None:
        # executemany: for inserts it beats one statement over a JSON array (measured).
        constants = constants or {}
        names = ", ".join([*columns, *constants])
        marks = ", ".join(f"?{i + 1}" for i in range(len(columns) + len(constants)))
        extra = tuple(constants.values())
        self.conn.executemany(f"{head} ({names}) VALUES ({marks})", ((*r, *extra) for r in rows))

    def requeue(self, row_keys: Iterable[str], *, states: Sequence[str]) -> int:
        """Set the messages of ``row_keys`` in one of ``states`` back to ``pending``."""
        marks = ",".join("?" for _ in states)
        with self.transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                "UPDATE messages SET state = 'pending', reason = NULL, batch = NULL, "
                "message_id = NULL, sid = NULL, request_status = NULL, "
                "api_message = NULL, sent_at = NULL "
                f"WHERE row_key = ? AND state IN ({marks})",
                ((k, *states) for k in row_keys),
            )
            return conn.total_changes - before

    def pending(self, row_keys: Iterable[str] | None = None) -> pd.DataFrame:
        """Pending messages (optionally only those of ``row_keys``), in outbox order.

        Columns: ``id, row_key, part, phone, text, send_at`` (µs or None), ``reason``, and
        from the latest input's rows ``position`` (-1 when not in it), ``segments``,
        ``parts``.
        """
        sql = (
            "SELECT m.id, m.row_key, m.part, m.phone, m.text, m.send_at, m.reason, "
            "COALESCE(r.position, -1) AS position, r.segments, COALESCE(r.parts, 1) AS parts "
            "FROM messages m LEFT JOIN rows r ON r.row_key = m.row_key "
            f"WHERE m.state = 'pending' AND m.id NOT IN ({FLYING_IDS}) "
            "ORDER BY position, m.part, m.id"
        )
        # Built once and kept until the next send rewrites the rows: without it SQLite
        # builds an automatic index for every call (measured: 0.7 s -> 0.33 s per
        # 100,000 pending messages, every dispatch run).
        self.conn.execute("CREATE INDEX IF NOT EXISTS rows_key ON rows (row_key)")
        frame = self._frame(sql, ())
        if row_keys is not None:
            wanted = frame["row_key"].isin(pd.Index(list(row_keys)))
            frame = frame[wanted.to_numpy()].reset_index(drop=True)
        return frame

    def pending_messages(self) -> pd.DataFrame:
        """Every pending message: ``id, row_key, part, send_at, reason`` (no join)."""
        cols = self._columns(
            "SELECT id, row_key, part, send_at, reason FROM messages "
            f"WHERE state = 'pending' AND id NOT IN ({FLYING_IDS})"
        )
        return pd.DataFrame(cols)

    def set_pending(
        self,
        ids: Sequence[int],
        *,
        reason: str | None,
        send_at: Sequence[int | None] | None = None,
    ) -> None:
        """Give pending messages a reason (why they wait) and, if given, their ``send_at``."""
        if not len(ids):
            return
        with self.transaction() as conn:
            if send_at is None:
                conn.executemany(
                    "UPDATE messages SET reason = ? WHERE id = ? AND state = 'pending'",
                    ((reason, i) for i in ids),
                )
            else:
                conn.executemany(
                    "UPDATE messages SET reason = ?, send_at = ? "
                    "WHERE id = ? AND state = 'pending'",
                    ((reason, t, i) for i, t in zip(ids, send_at, strict=True)),
                )

    def next_batch_number(self) -> int:
        """One more than the highest batch number ever used in this journal."""
        row = self.conn.execute("SELECT COALESCE(MAX(number), 0) FROM batches").fetchone()
        return int(row[0]) + 1

    # -- the request loop (journal_writes.py) --

    def mark_inflight(
        self,
        number: int,
        ids: Sequence[int],
        *,
        method: str,
        requested_at: int | None = None,
    ) -> None:
        """Commit a batch as in flight, before its request is made (its message ids in
        request order in ``batches.ids``)."""
        at = now_us() if requested_at is None else requested_at
        with self.transaction() as conn:
            writes.mark_inflight(conn, number, ids, method, at)

    def record_fates(
        self,
        number: int,
        fates: Sequence[Fate],
        *,
        batch_state: str,
        request_status: int | None,
        detail: str | None,
        answered_at: int | None = None,
    ) -> None:
        """Commit a batch's outcome right after its request: one :class:`Fate` per group
        of messages that share state, reason, the provider's message and the time.

        A ``pending`` fate is for messages that provably never left: their batch number
        is cleared, so a later run plans them again.
        """
        at = now_us() if answered_at is None else answered_at
        done = Answered(number, list(fates), batch_state, request_status, detail, at)
        with self.transaction() as conn:
            writes.record_answer(conn, done)

    def record_outcome(
        self,
        number: int,
        outcomes: Sequence[tuple[Any, ...]],
        *,
        batch_state: str,
        request_status: int | None,
        detail: str | None,
        answered_at: int | None = None,
    ) -> None:
        """:meth:`record_fates` with one tuple per message: ``(id, state, reason,
        message_id, sid, api_message, sent_at)``."""
        self.record_fates(
            number,
            writes.group_fates(outcomes),
            batch_state=batch_state,
            request_status=request_status,
            detail=detail,
            answered_at=answered_at,
        )

    def write_turn(
        self,
        answered: Sequence[Answered],
        launched: Sequence[tuple[int, Sequence[int], str, int]],
    ) -> None:
        """Commit one turn of the request loop: the outcomes of the batches whose request
        ended, then ``(number, ids, method, requested_at)`` of the batches about to start
        (in flight before their requests). One statement when SQLite allows (its own
        transaction, or part of the caller's).
        """
        if not answered and not launched:
            return
        if writes.one_statement():
            writes.write_turn(self.conn, answered, launched)
        else:
            with self.transaction() as conn:
                writes.write_turn_statements(conn, answered, launched)

    # -- reading --

    def counts(self) -> dict[str, int]:
        """Messages per journal state."""
        rows = self.conn.execute(
            f"SELECT {effective_state('m')} AS s, COUNT(*) FROM messages AS m GROUP BY s"
        )
        return {str(state): int(n) for state, n in rows}

    def _frame(self, sql: str, params: Sequence[Any]) -> pd.DataFrame:
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

    def results(self, *, index: pd.Index | None = None) -> pd.DataFrame:
        """The results frame of the latest call (DESIGN.md), built from the journal alone.

        ``index`` replaces the labels decoded from the journal (``send`` passes the
        input's own index).
        """
        columns = self._columns(RESULTS_SQL)
        n = len(columns["segments"])
        codes, other = columns.pop("encoding"), columns.pop("encoding_other")
        columns["encoding"] = decode_codes(codes, other, ENCODINGS)
        first, last, count = self.conn.execute(
            "SELECT MIN(position), MAX(position), COUNT(*) FROM rows"
        ).fetchone()
        multi = self._columns(MULTI_SQL)
        row = multi.pop("position").astype(np.int64)
        if count and (first, last) != (0, count - 1):  # positions not 0..n-1: map them
            positions = self._columns("SELECT position FROM rows ORDER BY position")["position"]
            row = np.searchsorted(positions.astype(np.int64), row)
        if index is None:
            meta = self.get_meta("index") or {"kind": "index", "names": [None]}
            index = range_index(meta, n)
            if index is None:  # labels are read only when the index is not a range
                labels = self._columns("SELECT label FROM rows ORDER BY position")["label"]
                index = rebuild_index(meta, labels.tolist())
        return results_frame(columns, index, {"row": row, **multi})

    def message_outcomes(self, first: int, last: int) -> dict[str, np.ndarray[Any, Any]]:
        """The result columns of the messages with ids ``first`` to ``last``, by id.

        ``m_state`` (the state as a code, as in :meth:`results`), ``reason``, ``batch``,
        ``message_id``, ``sid``, ``request_status``, ``api_message``, ``sent_at``.
        """
        return self._columns(OUTCOMES_SQL, (first, last))


def results_from_journal(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Rebuild the results frame of the latest send from its journal alone.

    The frame is the one ``send`` returned (same index labels and dtypes), updated with
    everything sent since (by a re-run or ``dispatch``). Messages whose process died
    mid-request read as ``unknown``. The journal is opened read-only.

    Examples
    --------
    >>> results = results_from_journal("sends.db")  # doctest: +SKIP
    >>> results["state"].value_counts()  # doctest: +SKIP
    """
    with Journal(path, readonly=True) as journal:
        return journal.results()
