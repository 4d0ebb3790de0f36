"""The send journal: an SQLite outbox that makes sends idempotent, resumable and scheduled.

A journal is one SQLite file (WAL, ``synchronous=FULL``) with four tables:

``meta``
    The campaign's settings (validation options, template, method, window, the input's
    index shape). Never credentials: neither the password nor the login is stored.
``rows``
    The input frame of the latest call, one row per input row: its position, its index
    label (JSON-encoded, so any index dtype survives), the validated phone and text, its
    validation state and reason, encoding and segments, and the stable ``row_key`` of
    the message(s) it sends (``NULL`` for invalid and suppressed rows).
``messages``
    The outbox, one row per message (``row_key``, ``part``): its state
    (``pending`` | ``inflight`` | ``accepted`` | ``rejected`` | ``unknown``), when it is
    due (``send_at``), its batch and the provider's answer. A message's row survives
    every re-run: it is what stops a phone from being texted twice.
``batches``
    One row per request: ``inflight`` is committed *before* the request, ``done`` or
    ``unknown`` right after its outcome. A batch found ``inflight`` when a journal is
    opened for sending belongs to a process that died mid-request: its messages become
    ``unknown`` and are never resent automatically.

Only one process sends from a journal at a time (an advisory lock on ``PATH.lock``,
released by the operating system when the process dies, even by ``SIGKILL``).
"""

from __future__ import annotations

import hashlib
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

from .errors import InputError
from .results import REASON_PROCESS_STOPPED, encode_label, rebuild_index, results_frame
from .scheduling import resolve_send_at

__all__ = [
    "Journal",
    "JournalBusyError",
    "now_us",
    "prepare_rows",
    "row_records",
    "results_from_journal",
    "row_key",
    "split_texts",
    "user_row_key",
]

SCHEMA_VERSION = 1


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rows (
    position INTEGER PRIMARY KEY,
    label TEXT NOT NULL,
    row_key TEXT,
    input_state TEXT NOT NULL,
    reason TEXT,
    phone TEXT,
    text TEXT,
    encoding TEXT,
    segments INTEGER,
    parts INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS messages (
    row_key TEXT NOT NULL,
    part INTEGER NOT NULL,
    phone TEXT NOT NULL,
    text TEXT NOT NULL,
    campaign TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    send_at INTEGER,
    batch INTEGER,
    batch_pos INTEGER,
    message_id INTEGER,
    sid TEXT,
    request_status INTEGER,
    api_message TEXT,
    sent_at INTEGER,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (row_key, part)
);
CREATE INDEX IF NOT EXISTS rows_key ON rows (row_key);
CREATE INDEX IF NOT EXISTS messages_state ON messages (state, send_at);
CREATE INDEX IF NOT EXISTS messages_batch ON messages (batch);
CREATE TABLE IF NOT EXISTS batches (
    number INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    n_messages INTEGER NOT NULL,
    method TEXT,
    requested_at INTEGER NOT NULL,
    answered_at INTEGER,
    request_status INTEGER,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    summary TEXT
);
"""


class JournalBusyError(InputError):
    """Another process is sending from the same journal right now."""


def now_us() -> int:
    """The current UTC time in integer microseconds since the epoch (the journal's clock)."""
    return time.time_ns() // 1000


def row_key(campaign: str, phone: str, text: str, occurrence: int = 0) -> str:
    """The stable key of a row: sha256 of campaign, phone, text and occurrence.

    ``occurrence`` tells apart identical (phone, text) rows kept on purpose (validation
    with ``dedupe=None``): the n-th copy in input order gets ``n``.

    Examples
    --------
    >>> row_key("promo", "584141234567", "Hola")[:12]
    'f0fda866a3eb'
    """
    # JSON, not a separator: no campaign, phone or text can forge another row's key.
    material = json.dumps(["v1", campaign, phone, text, occurrence], ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def user_row_key(campaign: str, value: str) -> str:
    """The stable key of a row from the user's own key column."""
    material = json.dumps(["v1-key", campaign, value], ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


# --- rows and messages of one input ----------------------------------------------------


def split_texts(text: str, parts: int) -> list[str]:
    """The texts of a row split into ``parts`` messages (validation's own splitter)."""
    from . import texts as texts_module

    split = texts_module.split_text
    pieces = list(split(text))
    if len(pieces) != parts:
        raise InputError(f"split gave {len(pieces)} parts where validation counted {parts}")
    return pieces


def prepare_rows(
    df: pd.DataFrame,
    validated: pd.DataFrame,
    *,
    campaign: str,
    key: str | None,
    send_at: Any,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows (one per input row, by position) and messages (one per part) to journal.

    Rows that validation marked ``ready`` get their stable key; a bad ``send_at`` makes a
    row ``invalid`` (``send_at_invalid``); with a ``key`` column, a missing key makes it
    ``invalid`` (``key_missing``) and a repeated one ``suppressed`` (``duplicate_key``).
    """
    n = len(df)
    times, bad_times = resolve_send_at(df, send_at)
    state = validated["state"].astype(object).to_numpy(copy=True)
    reason = validated["reason"].astype(object).to_numpy(copy=True)
    phone = validated["phone"].astype(object).to_numpy()
    text = validated["text"].astype(object).to_numpy()
    ready = state == "ready"
    bad = ready & bad_times.to_numpy()
    state[bad], reason[bad] = "invalid", "send_at_invalid"
    ready &= ~bad
    keys = np.full(n, None, dtype=object)
    if key is not None:
        if key not in df.columns:
            raise InputError(f"key column {key!r} not found in the frame")
        values = df[key]
        missing = ready & values.isna().to_numpy()
        state[missing], reason[missing] = "invalid", "key_missing"
        ready &= ~missing
        as_text = values.astype(str).to_numpy()
        dup = ready & pd.Series(as_text).where(ready).duplicated().to_numpy() & ready
        state[dup], reason[dup] = "suppressed", "duplicate_key"
        ready &= ~dup
        for i in np.flatnonzero(ready):
            keys[i] = user_row_key(campaign, as_text[i])
    else:
        # Identical (phone, text) rows kept on purpose (dedupe=None) get distinct keys.
        pairs = pd.DataFrame({"p": phone, "t": text})[ready]
        occurrence = pairs.groupby(["p", "t"], sort=False).cumcount().to_numpy()
        for j, i in enumerate(np.flatnonzero(ready)):
            keys[i] = row_key(campaign, phone[i], text[i], int(occurrence[j]))
    parts_col = validated["parts"] if "parts" in validated else pd.Series(1, index=validated.index)
    parts = parts_col.fillna(1).astype(int).to_numpy()
    rows = pd.DataFrame(
        {
            "position": np.arange(n),
            "row_key": keys,
            "input_state": state,
            "reason": reason,
            "phone": phone,
            "text": text,
            "encoding": validated["encoding"].astype(object).to_numpy(),
            "segments": validated["segments"].astype(object).to_numpy(),
            "parts": np.where(ready, parts, 1),
            "send_at": times.to_numpy(),
        }
    )
    rows["segments"] = rows["segments"].where(rows["segments"].notna(), None)
    sending = rows[ready]
    records: list[tuple[Any, ...]] = []
    for r in sending.itertuples(index=False):
        if r.parts > 1:
            for part, piece in enumerate(split_texts(r.text, r.parts), start=1):
                records.append((r.row_key, part, r.phone, piece, r.position))
        else:
            records.append((r.row_key, 1, r.phone, r.text, r.position))
    messages = pd.DataFrame.from_records(
        records, columns=["row_key", "part", "phone", "text", "position"]
    )
    return rows, messages


def row_records(rows: pd.DataFrame, index: pd.Index) -> list[tuple[Any, ...]]:
    """The ``rows`` table records of :func:`prepare_rows` output, labels JSON-encoded."""
    if isinstance(index, pd.RangeIndex):
        labels: list[str] = [""] * len(index)  # rebuilt from start/stop/step
    else:
        labels = [encode_label(label) for label in index]

    def clean(value: Any) -> Any:
        if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
            return None
        return value.item() if isinstance(value, np.generic) else value

    columns = ["position", "row_key", "input_state", "reason", "phone", "text", "encoding"]
    out = []
    for position, key, state, reason, phone, text, encoding, segments, parts in zip(
        *(rows[c].tolist() for c in [*columns, "segments", "parts"]), strict=True
    ):
        seg = clean(segments)
        out.append(
            (
                int(position),
                labels[int(position)],
                key,
                str(state),
                clean(reason),
                clean(phone),
                clean(text),
                clean(encoding),
                None if seg is None else int(seg),
                int(parts),
            )
        )
    return out


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

    Examples
    --------
    >>> with Journal(None) as j:
    ...     j.counts()
    {}
    """

    def __init__(self, path: str | os.PathLike[str] | None, *, readonly: bool = False) -> None:
        self.path = None if path is None else os.fspath(path)
        self._lock_file: IO[bytes] | None = None
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
            if self.path is not None and not readonly:
                self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            if not readonly:
                self.conn.executescript(_SCHEMA)
                if self.get_meta("schema_version") is None:
                    self.set_meta({"schema_version": SCHEMA_VERSION})
            elif self.get_meta("schema_version") is None:
                raise sqlite3.DatabaseError("no schema version")
        except sqlite3.DatabaseError:
            self.conn.close()
            raise InputError(f"not a massiva-frames journal: {self.path}") from None

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
        """One committed transaction (durable when it returns: ``synchronous=FULL``)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def snapshot(self) -> Journal:
        """An in-memory copy of this journal (a dry run plans on it and throws it away)."""
        copy = Journal(None)
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

        Their requests may have reached the provider (API.md §5): their messages become
        ``unknown`` and are never resent automatically. Returns the number of messages.
        """
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE messages SET state = 'unknown', reason = ?, "
                "api_message = 'the sending process stopped during the request; "
                "the messages may have been sent', sent_at = ("
                "SELECT requested_at FROM batches WHERE batches.number = messages.batch) "
                "WHERE state = 'inflight'",
                (REASON_PROCESS_STOPPED,),
            )
            conn.execute(
                "UPDATE batches SET state = 'unknown', detail = ? WHERE state = 'inflight'",
                (REASON_PROCESS_STOPPED,),
            )
        return cur.rowcount

    # -- rows and messages --

    def replace_rows(self, rows: Iterable[Sequence[Any]], meta: dict[str, Any]) -> None:
        """Replace the input rows (one transaction) and store ``meta`` with them.

        Each row is ``(position, label, row_key, input_state, reason, phone, text,
        encoding, segments, parts)``.
        """
        payload = [(k, json.dumps(v, sort_keys=True, default=str)) for k, v in meta.items()]
        with self.transaction() as conn:
            conn.execute("DELETE FROM rows")
            conn.executemany("INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", payload)

    def add_messages(self, messages: Iterable[Sequence[Any]]) -> int:
        """Add messages not yet in the outbox; existing keys are left untouched.

        Each message is ``(row_key, part, phone, text, campaign, send_at)``; it starts
        ``pending``. Returns how many were added.
        """
        created = now_us()
        with self.transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO messages (row_key, part, phone, text, campaign, "
                "state, send_at, created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                ((*m, created) for m in messages),
            )
            return conn.total_changes - before

    def requeue(self, keys: Iterable[tuple[str, int]], *, states: Sequence[str]) -> int:
        """Set messages in one of ``states`` back to ``pending`` (``resend_unknown``)."""
        marks = ",".join("?" for _ in states)
        with self.transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                "UPDATE messages SET state = 'pending', reason = NULL, batch = NULL, "
                "batch_pos = NULL, message_id = NULL, sid = NULL, request_status = NULL, "
                "api_message = NULL, sent_at = NULL "
                f"WHERE row_key = ? AND part = ? AND state IN ({marks})",
                ((k, p, *states) for k, p in keys),
            )
            return conn.total_changes - before

    def pending(self, row_keys: Iterable[str] | None = None) -> pd.DataFrame:
        """Pending messages (optionally only those of ``row_keys``), in outbox order.

        Columns: ``row_key, part, phone, text, send_at`` (µs or None), and from the
        latest input's rows ``position`` (-1 when not in it), ``segments``, ``parts``.
        """
        sql = (
            "SELECT m.row_key, m.part, m.phone, m.text, m.send_at, "
            "COALESCE(r.position, -1) AS position, r.segments, COALESCE(r.parts, 1) AS parts "
            "FROM messages m "
            "LEFT JOIN rows r ON r.row_key = m.row_key WHERE m.state = 'pending'"
        )
        frame = self._frame(sql, ())
        if row_keys is not None:
            wanted = pd.Index(list(row_keys))
            frame = frame[frame["row_key"].isin(wanted)]
        frame = frame.sort_values(["position", "part"], kind="stable")
        return frame.reset_index(drop=True)

    def set_pending(
        self,
        keys: Iterable[tuple[str, int]],
        *,
        reason: str | None,
        send_at: int | None | Sequence[int | None] = None,
        update_send_at: bool = False,
    ) -> None:
        """Give pending messages a reason (why they wait) and optionally a new ``send_at``."""
        keys = list(keys)
        if update_send_at:
            times = send_at if isinstance(send_at, Sequence) else [send_at] * len(keys)
            params = [(reason, t, k, p) for (k, p), t in zip(keys, times, strict=True)]
            sql = "UPDATE messages SET reason = ?, send_at = ? "
        else:
            params = [(reason, k, p) for k, p in keys]  # type: ignore[misc]
            sql = "UPDATE messages SET reason = ? "
        with self.transaction() as conn:
            conn.executemany(sql + "WHERE row_key = ? AND part = ? AND state = 'pending'", params)

    def next_batch_number(self) -> int:
        """One more than the highest batch number ever used in this journal."""
        row = self.conn.execute("SELECT COALESCE(MAX(number), 0) FROM batches").fetchone()
        return int(row[0]) + 1

    def mark_inflight(
        self,
        number: int,
        keys: Sequence[tuple[str, int]],
        *,
        method: str,
        requested_at: int | None = None,
    ) -> None:
        """Commit a batch as in flight, before its request is made."""
        at = now_us() if requested_at is None else requested_at
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO batches (number, state, n_messages, method, requested_at) "
                "VALUES (?, 'inflight', ?, ?, ?)",
                (number, len(keys), method, at),
            )
            conn.executemany(
                "UPDATE messages SET state = 'inflight', reason = NULL, batch = ?, "
                "batch_pos = ? WHERE row_key = ? AND part = ?",
                ((number, pos, k, p) for pos, (k, p) in enumerate(keys)),
            )

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
        """Commit a batch's outcome right after its request.

        Each outcome is ``(row_key, part, state, reason, message_id, sid, api_message,
        sent_at)``; ``state`` may be ``pending`` for messages that provably never left
        (their batch number is cleared, so a later run plans them again).
        """
        at = now_us() if answered_at is None else answered_at
        with self.transaction() as conn:
            conn.execute(
                "UPDATE batches SET state = ?, answered_at = ?, request_status = ?, "
                "detail = ? WHERE number = ?",
                (batch_state, at, request_status, detail, number),
            )
            conn.executemany(
                "UPDATE messages SET state = ?1, reason = ?2, message_id = ?3, sid = ?4, "
                "api_message = ?5, sent_at = ?6, request_status = ?7, "
                "batch = CASE WHEN ?1 = 'pending' THEN NULL ELSE batch END, "
                "batch_pos = CASE WHEN ?1 = 'pending' THEN NULL ELSE batch_pos END "
                "WHERE row_key = ?8 AND part = ?9",
                (
                    (state, reason, mid, sid, api, sent, request_status, k, p)
                    for (k, p, state, reason, mid, sid, api, sent) in outcomes
                ),
            )

    # -- reading --

    def counts(self) -> dict[str, int]:
        """Messages per journal state."""
        rows = self.conn.execute("SELECT state, COUNT(*) FROM messages GROUP BY state")
        return {str(state): int(n) for state, n in rows}

    def _frame(self, sql: str, params: Sequence[Any]) -> pd.DataFrame:
        cur = self.conn.execute(sql, params)
        columns = [d[0] for d in cur.description]
        return pd.DataFrame.from_records(cur.fetchall(), columns=columns)

    def results(self, *, index: pd.Index | None = None) -> pd.DataFrame:
        """The results frame of the latest call (DESIGN.md), built from the journal alone.

        ``index`` replaces the labels decoded from the journal (``send`` passes the
        input's own index).
        """
        frame = self._frame(_RESULTS_SQL, ())
        if index is None:
            meta = self.get_meta("index") or {"kind": "index", "names": [None]}
            index = rebuild_index(meta, frame["label"].tolist())
        return results_frame(frame, index)


_RESULTS_SQL = """
WITH multi AS (
    SELECT m.row_key AS row_key,
           COUNT(*) AS n,
           SUM(m.state = 'accepted') AS n_accepted,
           SUM(m.state = 'rejected') AS n_rejected,
           SUM(m.state IN ('unknown', 'inflight')) AS n_unknown
    FROM messages m JOIN rows r ON r.row_key = m.row_key AND r.parts > 1
    GROUP BY m.row_key
)
SELECT r.position, r.label, r.input_state, r.reason AS input_reason, r.phone, r.text,
       r.encoding, r.segments, r.parts,
       m.state AS m_state, m.reason AS m_reason, m.batch, m.message_id, m.sid,
       m.request_status, m.api_message, m.sent_at,
       multi.n, multi.n_accepted, multi.n_rejected, multi.n_unknown
FROM rows r
LEFT JOIN messages m ON m.row_key = r.row_key AND m.part = 1
LEFT JOIN multi ON multi.row_key = r.row_key
ORDER BY r.position
"""


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
