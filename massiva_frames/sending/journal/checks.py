"""Checks that a SQLite journal can be trusted with the question "already sent?".

A message is keyed by ``(row_key, part)``; adding it again leaves it untouched because
the unique index of those keys finds it. A damaged index (a bad sector, a bad copy, a
sync tool) would let a re-run add a message already sent, and send it again. So:

- :func:`classify`, on opening: the file is a new database, a journal (every table and
  the key index present), a damaged journal, or another program's database;
- :func:`verify`, before a send or dispatch writes anything: SQLite's own check of the
  messages' pages (``PRAGMA quick_check(messages)``), the key index holds as many
  entries as there are messages, and the batches that say which requests were under
  way can be read. Cheap enough for every run: it reads the pages once, in order, and
  never looks a key up (measured at 1M messages, ``benchmarks/bench_journal_check.py``:
  0.6 s of CPU, against 7 s for ``PRAGMA integrity_check(messages)``, which looks
  every key up, and 16 s for what a send of those rows writes before its first
  request);
- :func:`check_added`, after messages are added and before they commit: none of them
  has the key of a message that was already in the journal. This is the decision
  itself checked without the index (a scan of the older messages against the new keys,
  3.4 s of CPU for 1M new messages beside 1M older ones, nothing when either is
  empty), so an index that no longer finds a key is caught before anything is sent.

Each failure raises :class:`~massiva_frames.errors.JournalCorruptError` (or, for a file
that is not a journal, :class:`~massiva_frames.errors.NotAJournalError`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

import numpy as np

from .failures import JOURNAL_SIGNATURE, corrupt, not_a_journal

# Internal to the SQLite journal (its connection and outbox).
__all__ = [
    "BATCH_STATES",
    "REQUIRED",
    "KeyPrints",
    "check_added",
    "classify",
    "key_index",
    "verify",
    "verify_batches",
    "verify_index",
    "verify_pages",
]

#: The tables and the columns that every journal version has and sending relies on.
REQUIRED: dict[str, tuple[str, ...]] = {
    "meta": ("key", "value"),
    "rows": ("position", "label", "row_key", "input_state"),
    "messages": ("id", "row_key", "part", "state", "batch"),
    "batches": ("number", "state", "ids"),
    "runs": ("number", "kind"),
}

#: The states a batch is recorded in (the request loop's outcomes, docs/protocol.md §5).
BATCH_STATES = ("inflight", "done", "refused", "not_sent", "unknown")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _one(conn: sqlite3.Connection, sql: str, params: tuple[object, ...] = ()) -> int:
    return int(conn.execute(sql, params).fetchone()[0] or 0)


def key_index(conn: sqlite3.Connection, path: str | None) -> str:
    """The name of the unique index of the messages' ``(row_key, part)``."""
    for row in conn.execute("PRAGMA index_list(messages)").fetchall():
        name, unique = str(row[1]), bool(row[2])
        columns = [r[2] for r in conn.execute(f"PRAGMA index_info({_quote(name)})")]
        if unique and columns == ["row_key", "part"]:
            return name
    raise corrupt(path, "the index of its message keys is missing")


def classify(conn: sqlite3.Connection, path: str | None) -> str:
    """``"new"`` (an empty database: the journal is to be created) or ``"journal"``.

    Raises :class:`NotAJournalError` for another program's database, and
    :class:`JournalCorruptError` for a journal with tables, columns or its key index
    missing (creating them again, empty, would send every row again).
    """
    schema = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    tables = {str(name) for name, _ in schema}
    if not tables:
        return "new"
    ours = tables & set(REQUIRED)
    signed = any(JOURNAL_SIGNATURE.decode() in str(sql or "") for _, sql in schema)
    if not ours and not signed:
        shown = ", ".join(sorted(tables)[:5])
        raise not_a_journal(path, f"an SQLite database with other tables: {shown}")
    missing = sorted(set(REQUIRED) - tables)
    if missing:
        raise corrupt(path, f"its table(s) {', '.join(missing)} are missing")
    for table, columns in REQUIRED.items():
        have = {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}
        lost = [c for c in columns if c not in have]
        if lost:
            raise corrupt(path, f"the column(s) {', '.join(lost)} of its table {table} are missing")
    key_index(conn, path)
    return "journal"


def verify(conn: sqlite3.Connection, path: str | None) -> None:
    """Raise :class:`JournalCorruptError` unless the journal can say what was sent.

    Reads every page of the messages and their key index once, in order (no lookups):
    :func:`verify_pages`, :func:`verify_index`, :func:`verify_batches`.
    """
    verify_pages(conn, path)
    verify_index(conn, path)
    verify_batches(conn, path)


def verify_pages(conn: sqlite3.Connection, path: str | None) -> None:
    """SQLite's own check of the pages of the messages and their indexes.

    ``PRAGMA quick_check(messages)``: the structure of every page, not whether the
    index agrees with the rows (:func:`check_added` checks what matters of that).
    """
    problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check(messages)")]
    if problems != ["ok"]:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise corrupt(path, f"SQLite's check of its messages: {problems[0]}{more}")


def verify_index(conn: sqlite3.Connection, path: str | None) -> None:
    """The key index holds one entry per message (both counted, neither looked up)."""
    index = key_index(conn, path)
    in_table = _one(conn, "SELECT count(*) FROM messages NOT INDEXED")
    in_index = _one(conn, f"SELECT count(*) FROM messages INDEXED BY {_quote(index)}")
    if in_table != in_index:
        raise corrupt(
            path,
            f"the index of its message keys has {in_index:,} entries for {in_table:,} messages",
        )


def verify_batches(conn: sqlite3.Connection, path: str | None) -> None:
    """Every batch has a known state, and those in flight list their message ids.

    A batch in flight is what keeps its messages from being sent again after a crash
    (they read ``unknown``): one that cannot be read would let them go out again.
    """
    states = ", ".join(f"'{s}'" for s in BATCH_STATES)
    bad = _one(
        conn,
        f"SELECT count(*) FROM batches WHERE state IS NULL OR state NOT IN ({states}) OR CASE "
        "WHEN ids IS NULL THEN 0 WHEN json_valid(ids) THEN json_type(ids) <> 'array' ELSE 1 END",
    )
    if not bad:
        bad = _one(
            conn,
            "SELECT count(*) FROM batches AS b, json_each(b.ids) AS x "
            "WHERE b.state = 'inflight' AND x.type <> 'integer'",
        )
    if bad:
        raise corrupt(path, f"{bad:,} record(s) of its requests cannot be read")


class KeyPrints:
    """Fingerprints of the keys of a journal's messages with ids up to :attr:`upto`.

    For a writer that adds messages again and again to one journal it holds locked (a
    streamed send, chunk after chunk): :func:`check_added` reads the older messages
    from the table once, fingerprints their ``(row_key, part)`` (64-bit hashes, kept
    sorted: 8 bytes a message), and afterwards compares new keys with the fingerprints,
    reading the table again only for a key whose fingerprint is already there. Without
    it every addition reads every older message: quadratic over a long stream.
    """

    def __init__(self) -> None:
        #: the highest message id covered; 0: nothing read yet (rebuilt when it is not
        #: the id just before the first one added: another writer, a rolled-back add)
        self.upto = 0
        self._runs: list[np.ndarray[Any, Any]] = []

    def reset(self) -> None:
        """Forget every fingerprint (the next check reads the table)."""
        self.upto, self._runs = 0, []

    @staticmethod
    def _of(keys: Iterable[tuple[str, int]]) -> np.ndarray[Any, Any]:
        values = np.fromiter((hash((str(k), int(p))) for k, p in keys), dtype=np.int64)
        values.sort()
        return values

    def add(self, keys: Iterable[tuple[str, int]], upto: int) -> None:
        """Fingerprint ``keys``; they cover the messages up to id ``upto`` (0: unchanged)."""
        values = self._of(keys)
        if len(values):
            self._runs.append(values)
        if len(self._runs) > 8:  # few sorted runs to search: merge them now and then
            merged = np.concatenate(self._runs)
            merged.sort(kind="stable")
            self._runs = [merged]
        if upto:
            self.upto = upto

    def shared(self, keys: set[tuple[str, int]]) -> set[tuple[str, int]]:
        """The keys whose fingerprint an older message has (maybe the same key)."""
        listed = list(keys)
        values = np.fromiter((hash((str(k), int(p))) for k, p in listed), dtype=np.int64)
        hit = np.zeros(len(values), dtype=bool)
        for run in self._runs:
            at = np.searchsorted(run, values).clip(max=len(run) - 1)
            hit |= run[at] == values
        return {listed[i] for i in np.flatnonzero(hit).tolist()}


def check_added(
    conn: sqlite3.Connection,
    path: str | None,
    first: int,
    keys: Iterable[tuple[str, int]] | None = None,
    prints: KeyPrints | None = None,
) -> None:
    """After messages with ids ``first`` and up were added: none repeats an older key.

    The older messages are read from the table, not the key index, and matched against
    the new keys (``keys``, the ``(row_key, part)`` of the messages added, or read
    back): a match is a message already in the journal that the index did not find,
    and it would be sent again. Costs nothing when nothing was there before; otherwise
    one pass over the older messages (measured in ``benchmarks/bench_journal_check.py``:
    a set lookup per message in Python is ~3x cheaper than SQLite's ``IN`` over an
    ephemeral index of the new keys). With ``prints`` (:class:`KeyPrints`) that pass
    happens once; later additions are checked against its fingerprints.
    """
    older = conn.execute("SELECT 1 FROM messages NOT INDEXED WHERE id < ? LIMIT 1", (first,))
    if older.fetchone() is None and prints is None:
        return
    if keys is None:
        keys = conn.execute(
            "SELECT row_key, part FROM messages NOT INDEXED WHERE id >= ?", (first,)
        ).fetchall()
    new = set(keys)
    if prints is not None and prints.upto == first - 1 and prints.upto > 0:
        # The older messages are the ones fingerprinted: only a fingerprint they share
        # with a new key needs the table read again (never, unless a key repeats).
        shared = prints.shared(new)
        if shared:
            _check_older(conn, path, first, shared)
    else:
        _check_older(conn, path, first, new, prints)
    if prints is not None:
        prints.add(new, int(conn.execute("SELECT MAX(id) FROM messages").fetchone()[0]))


def _check_older(
    conn: sqlite3.Connection,
    path: str | None,
    first: int,
    new: set[tuple[str, int]],
    prints: KeyPrints | None = None,
) -> None:
    """Raise when an older message (id below ``first``, read from the table) has one of
    the ``new`` keys; with ``prints``, fingerprint every older message on the way."""
    if prints is not None:
        prints.reset()
    cursor = conn.execute("SELECT row_key, part FROM messages NOT INDEXED WHERE id < ?", (first,))
    repeated = 0
    while chunk := cursor.fetchmany(65536):
        repeated += len(new.intersection(chunk))
        if prints is not None:
            prints.add(chunk, 0)
    if prints is not None:
        prints.upto = first - 1
    if repeated:
        raise corrupt(
            path,
            f"{repeated:,} message(s) already in it were not found by the index of its "
            "keys and would have been sent again",
        )
