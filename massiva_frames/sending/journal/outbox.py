"""The outbox on SQLite: the rows and messages of a send, what is pending, the results.

Before any request, a send replaces the input rows and adds its messages (one
transaction, :meth:`Outbox.replace_rows` and :meth:`Outbox.insert_messages`, which
checks that no message it added was already there: :func:`.checks.check_added`); the
messages not due or not affordable wait ``pending`` with a reason; the results frame and
a send's own outcomes are read back from the rows and messages alone (the SQL is in
:mod:`.schema`). The request loop's writes and the recovery of a dead process's
requests are the journal's own (:mod:`.sqlite`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ...errors import JournalError
from ..results import ENCODINGS, decode_codes, range_index, rebuild_index, results_frame
from . import checks
from .backend import now_us
from .connection import SQLiteConnection
from .failures import corrupt
from .schema import FLYING_IDS, OUTCOMES_SQL, effective_state, multi_sql, results_sql

# Internal to the SQLite journal (massiva_frames.sending.journal.sqlite).
__all__ = ["Outbox"]

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


class Outbox(SQLiteConnection):
    """The rows and messages of an open journal: see :class:`.sqlite.Journal`."""

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
            first = int(conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM messages").fetchone()[0])
            before = conn.total_changes
            self._insert_many(
                "INSERT OR IGNORE INTO messages", _MESSAGE_COLUMNS, messages, constants
            )
            added = conn.total_changes - before
            if added:
                checks.check_added(conn, self.label, first)
            return added

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
        keys, parts = list(row_key), list(part)
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
                    keys,
                    phone,
                    text,
                    itertools.repeat(campaign),
                    *(() if one_part else (parts,)),
                ),
            )
            added = conn.total_changes - before
            if added:
                # Before the commit: a key the index missed rolls the whole call back.
                new: Iterable[tuple[str, int]]
                if added == len(keys):
                    new = zip(keys, parts, strict=True)
                else:  # the ids of those added say which they are
                    ids = conn.execute("SELECT id FROM messages WHERE id >= ?", (first,))
                    new = ((keys[i - first], parts[i - first]) for (i,) in ids)
                checks.check_added(conn, self.label, first, new, self.key_prints)
            return first, added

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

    def add_attempts(self, messages: Iterable[Sequence[Any]]) -> int:
        """Add follow-up attempts not yet in the outbox (an existing ``(row_key, part)`` is
        left untouched: a second follow-up adds nothing); they start ``pending``.

        Each is ``(row_key, part, phone, text, campaign, attempt, first_key)``. Returns how
        many were added.
        """
        constants = {"state": "pending", "created_at": now_us()}
        columns = ("row_key", "part", "phone", "text", "campaign", "attempt", "first_key")
        with self.transaction() as conn:
            first = int(conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM messages").fetchone()[0])
            before = conn.total_changes
            self._insert_many("INSERT OR IGNORE INTO messages", columns, messages, constants)
            added = conn.total_changes - before
            if added:
                checks.check_added(conn, self.label, first)
            return added

    def attempt_messages(self, campaign: str | None) -> pd.DataFrame:
        """Every message (of ``campaign``, or all), for a follow-up send to choose from.

        Columns: ``row_key, part, phone, text, campaign, state`` (``inflight`` while its
        batch is), ``message_id, sent_at`` (µs), ``attempt`` and ``first_key`` (the row's
        first key: its own for a first attempt).
        """
        where, params = ("WHERE m.campaign = ?", (campaign,)) if campaign is not None else ("", ())
        return self._frame(
            "SELECT m.row_key, m.part, m.phone, m.text, m.campaign, "
            f"{effective_state('m')} AS state, m.message_id, m.sent_at, m.attempt, "
            "COALESCE(m.first_key, m.row_key) AS first_key "
            f"FROM messages AS m {where} ORDER BY m.id",
            params,
        )

    def campaigns(self) -> list[str]:
        """The campaigns of the messages in the outbox, sorted."""
        rows = self.conn.execute("SELECT DISTINCT campaign FROM messages ORDER BY campaign")
        return [str(c) for (c,) in rows]

    def pending_counts(self, row_keys: Sequence[str]) -> dict[str, int]:
        """Of ``row_keys``, those already in the outbox, each with its number of pending
        messages (0: every part was sent or settled). A streamed send asks this of each
        chunk: a key already there was journalled by an earlier chunk or run."""
        found: dict[str, int] = {}
        keys = list(row_keys)
        for start in range(0, len(keys), 500):  # bounded bound-parameter lists
            some = keys[start : start + 500]
            marks = ",".join("?" for _ in some)
            found.update(
                self.conn.execute(
                    "SELECT row_key, SUM(state = 'pending') FROM messages "
                    f"WHERE row_key IN ({marks}) GROUP BY row_key",
                    some,
                ).fetchall()
            )
        return {k: int(v) for k, v in found.items()}

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

    # -- reading back --

    def counts(self) -> dict[str, int]:
        """Messages per journal state."""
        rows = self.conn.execute(
            f"SELECT {effective_state('m')} AS s, COUNT(*) FROM messages AS m GROUP BY s"
        )
        return {str(state): int(n) for state, n in rows}

    def results(self, *, index: pd.Index | None = None) -> pd.DataFrame:
        """The results frame of the latest call, built from the journal alone.

        ``index`` replaces the labels decoded from the journal (``send`` passes the
        input's own index). Rows that cannot be decoded (damage SQLite cannot see: a
        label or index description that no longer parses) raise
        :class:`~massiva_frames.errors.JournalCorruptError`.
        """
        try:
            return self._results(index)
        except JournalError:
            raise
        except ValueError as exc:  # JSON, UTF-8, labels that do not match the rows
            raise corrupt(self.label, f"its rows cannot be read back: {exc}") from exc

    def _results(self, index: pd.Index | None) -> pd.DataFrame:
        columns = self._columns(results_sql(self.has_attempts))
        n = len(columns["segments"])
        codes, other = columns.pop("encoding"), columns.pop("encoding_other")
        columns["encoding"] = decode_codes(codes, other, ENCODINGS)
        first, last, count = self.conn.execute(
            "SELECT MIN(position), MAX(position), COUNT(*) FROM rows"
        ).fetchone()
        multi = self._columns(multi_sql(self.has_attempts))
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
