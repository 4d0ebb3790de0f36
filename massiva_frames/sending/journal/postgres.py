"""The send journal on PostgreSQL: one outbox for many workers (``postgresql://`` URLs).

:class:`PostgresJournal` is the server backend of :class:`~.backend.JournalBackend`, for
journals that several processes or hosts share (Airflow or Kubernetes tasks on
ephemeral workers, two cron hosts, one database for every campaign's state). It keeps
the SQLite journal's tables and guarantees (see :mod:`.sqlite`): the rows and messages
of a send are written in one transaction before any request (``COPY``), a batch is
committed in flight before its request and its outcome right after, a message is keyed
by ``(row_key, part)`` across every run. What sharing adds (claims, leases, recovery of
a dead worker's batches) is :mod:`.postgres_claims`; connecting, versions and getting
the connection back are :mod:`.postgres_connection`; the SQL is :mod:`.postgres_schema`;
the URL and its parameters (``schema``, ``lease``, ``reconnect``) are
:mod:`.postgres_url`. :func:`copy_journal` copies a journal between a SQLite file and a
PostgreSQL URL, either way (the tables: :mod:`.transfer`).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ...errors import InputError
from ..results import ENCODINGS, decode_codes, range_index, rebuild_index, results_frame
from . import writes as writes
from .backend import JournalBackend, now_us
from .postgres_claims import Claims, bigints, texts
from .postgres_connection import LOCK_OUTBOX
from .postgres_schema import FLYING_IDS, MULTI_SQL, OUTCOMES_SQL, RESULTS_SQL, effective_state
from .postgres_url import is_postgres_url
from .sqlite import Journal
from .transfer import TABLES, copy_tables
from .writes import Answered, Fate

if TYPE_CHECKING:
    import psycopg

# Internal to the sending layer: ``send``/``dispatch`` open it from a URL.
__all__ = ["PostgresJournal", "copy_journal", "open_postgres", "postgres_results"]

logger = logging.getLogger("massiva_frames.sending.campaign")

_ROW_COLUMNS = (
    "position, label, row_key, input_state, reason, phone, text, encoding, segments, parts"
)

# The messages of a re-run go through a temporary table: COPY there, then one INSERT that
# leaves the (row_key, part) already in the outbox untouched.
_NEW_MESSAGES = """
CREATE TEMP TABLE IF NOT EXISTS new_messages (
    id bigint, row_key text, part bigint, phone text, text text, campaign text, send_at bigint,
    state text, created_at bigint, claimed_by text
) ON COMMIT DELETE ROWS
"""

# A turn's outcomes in one statement: the batches' records and the fates (what a group
# of a batch's messages share) as JSON, the messages as arrays (id, fate, provider's id
# and sid), all inline (a client-side cursor): constants the planner sees, each parsed
# once (as parameters of a prepared statement, the server's generic plan read the whole
# outbox for every batch: 0.9 s instead of 10 ms; psycopg adapts a Python list element
# by element: 60 ms a batch of 500 to 1 ms for a literal). A message is written while
# its batch is in flight (it still reads pending), or after a recovery made it unknown
# (the answer came later); a second run rewrites the same values. Its claim ends.
_ANSWER = """
WITH done AS (
    UPDATE batches AS b
    SET state = u.state, answered_at = u.at, request_status = u.status, detail = u.detail
    FROM jsonb_to_recordset(%(done)s::jsonb)
         AS u(number bigint, state text, at bigint, status bigint, detail text)
    WHERE b.number = u.number
    RETURNING b.number
), f AS (
    SELECT * FROM jsonb_to_recordset(%(fates)s::jsonb)
    AS f(k int, state text, reason text, api text, sent_at bigint, status bigint, number bigint)
)
UPDATE messages AS m
SET state = f.state, reason = f.reason, api_message = f.api, sent_at = f.sent_at,
    request_status = f.status, message_id = t.mid, sid = t.sid, claimed_by = NULL,
    batch = CASE WHEN f.state = 'pending' THEN NULL ELSE f.number END
FROM unnest(%(ids)s::bigint[], %(fk)s::int[], %(mids)s::bigint[], %(sids)s::text[])
         AS t(id, k, mid, sid)
     JOIN f ON f.k = t.k
     JOIN batches AS b ON b.number = f.number
WHERE m.id = t.id AND m.id = ANY(%(ids)s::bigint[])
  AND ((m.state = 'pending' AND b.state = 'inflight')
       OR (m.state IN ('unknown', 'inflight') AND m.batch = f.number))
"""


def _text(value: str | None) -> str | None:
    """A string PostgreSQL's ``text`` can hold (no NUL)."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def _utf8(value: Any) -> bytes | None:
    """A row's phone or text as stored (``bytea``, UTF-8)."""
    if value is None:
        return None
    return str(value).encode("utf-8", "replace")


def _unutf8(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    out = np.empty(len(values), dtype=object)
    out[:] = [None if v is None else bytes(v).decode("utf-8") for v in values.tolist()]
    return out


def _copy(conn: psycopg.Connection[Any], head: str, rows: Iterable[Sequence[Any]]) -> None:
    """``COPY head FROM STDIN`` of ``rows`` (psycopg formats each row in C)."""
    with conn.cursor() as cur, cur.copy(f"COPY {head} FROM STDIN") as cp:
        for row in rows:
            cp.write_row(row)


class PostgresJournal(Claims):
    """An open send journal on PostgreSQL (the shared :class:`~.backend.JournalBackend`).

    Parameters
    ----------
    journal : str
        A ``postgresql://`` URL (see :mod:`.postgres_url` for ``schema``, ``lease`` and
        ``reconnect``). The schema and its tables are created when missing.
    readonly : bool
        Read an existing journal without writing to it (``results_from_journal``, dry
        runs); :attr:`exists` says whether the schema holds one.
    """

    # -- runs --

    def start_run(self, kind: str) -> int:
        """Record the start of a send, dry run or dispatch; returns its number."""
        row = self._run(
            lambda c: c.execute(
                "INSERT INTO runs (kind, started_at, worker) VALUES (%s, %s, %s) RETURNING number",
                (kind, now_us(), self.worker),
            ).fetchone(),
            retry=False,  # not idempotent: a lost connection stops the run
        )
        return int(row[0]) if row else 0

    def finish_run(self, number: int, summary: dict[str, Any]) -> None:
        """Record the end of a run with its figures."""
        text = _text(json.dumps(summary, default=str))
        self._run(
            lambda c: c.execute(
                "UPDATE runs SET finished_at = %s, summary = %s WHERE number = %s",
                (now_us(), text, number),
            )
        )

    # -- rows and messages, before any request --

    def replace_rows(
        self,
        rows: Iterable[Sequence[Any]],
        meta: dict[str, Any],
        *,
        sending: Iterable[Sequence[Any]] = (),
    ) -> None:
        """Replace the input rows (COPY) and store ``meta`` with them (one transaction,
        under the journal's outbox lock: two sends write their rows one after the other).

        Rows as in :meth:`.sqlite.Journal.replace_rows`.
        """
        payload = [(k, json.dumps(v, sort_keys=True, default=str)) for k, v in meta.items()]

        def work(conn: psycopg.Connection[Any]) -> None:
            self._advisory(LOCK_OUTBOX)
            conn.execute("DELETE FROM rows")
            ready = (
                (position, label, key, "ready", None, None, None, encoding, segments, 1)
                for position, label, key, encoding, segments in sending
            )
            others = (
                (p, lab, key, state, _text(reason), _utf8(phone), _utf8(text), enc, seg, parts)
                for p, lab, key, state, reason, phone, text, enc, seg, parts in rows
            )
            _copy(conn, f"rows ({_ROW_COLUMNS})", itertools.chain(ready, others))
            self._put_meta(conn, payload)

        self._run(work, retry=False, doing="writing the rows")

    def insert_messages(
        self,
        row_key: Iterable[str],
        part: Iterable[int],
        phone: Iterable[str],
        text: Iterable[str],
        *,
        campaign: str,
    ) -> tuple[int, int]:
        """Add the messages not yet in the outbox, claimed by this worker; ``(first,
        added)`` as in :meth:`.sqlite.Journal.insert_messages` (the i-th message given
        gets id ``first + i`` when it is added)."""
        if "\x00" in campaign:
            raise InputError("campaign must not contain a NUL character")
        created = now_us()
        keys, parts, phones, texts = list(row_key), list(part), list(phone), list(text)

        def work(conn: psycopg.Connection[Any]) -> tuple[int, int]:
            self._advisory(LOCK_OUTBOX)
            row = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM messages").fetchone()
            first = int(row[0]) if row else 1
            records = (
                (first + i, k, n, p, t, campaign, None)
                for i, (k, n, p, t) in enumerate(zip(keys, parts, phones, texts, strict=True))
            )
            return first, self._copy_messages(conn, records, created)

        return self._run(work, retry=False, doing="writing the messages")

    def add_messages(self, messages: Iterable[Sequence[Any]]) -> int:
        """Add ``(row_key, part, phone, text, campaign, send_at)`` messages not yet in the
        outbox (pending); returns how many were added."""
        created = now_us()

        def work(conn: psycopg.Connection[Any]) -> int:
            self._advisory(LOCK_OUTBOX)
            row = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM messages").fetchone()
            first = int(row[0]) if row else 1
            numbered = ((first + i, *m) for i, m in enumerate(messages))
            return self._copy_messages(conn, numbered, created)

        return self._run(work, retry=False, doing="writing the messages")

    def _copy_messages(
        self, conn: psycopg.Connection[Any], records: Iterable[Sequence[Any]], created: int
    ) -> int:
        """COPY new messages into the outbox, leaving every ``(row_key, part)`` already
        there untouched; returns how many were added (the caller holds the outbox lock).

        When none of them is there yet (the common case: a first send, or new rows), one
        COPY straight into the outbox; otherwise (a re-run) through a temporary table and
        ``INSERT ... ON CONFLICT DO NOTHING`` (measured: ~40% less time for new messages).
        """
        given = [(*r, "pending", created, self.worker) for r in records]
        columns = "id, row_key, part, phone, text, campaign, send_at, state, created_at, claimed_by"
        probe = [(r[1], r[2]) for r in given[:: max(1, len(given) // 64)]]
        seen = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM messages AS m JOIN unnest(%s::text[], %s::bigint[]) "
            "AS p(k, n) ON m.row_key = p.k AND m.part = p.n)",
            ([k for k, _ in probe], [n for _, n in probe]),
        ).fetchone()
        if given and not (seen and seen[0]):
            try:
                with conn.transaction():  # a savepoint: a key already there undoes the COPY
                    _copy(conn, f"messages ({columns})", given)
                added = len(given)
            except self._pg.errors.UniqueViolation:
                added = -1
            if added >= 0:
                self._analyze(conn, added)
                return added
        conn.execute(_NEW_MESSAGES)
        _copy(conn, f"new_messages ({columns})", given)
        with conn.cursor() as cur:
            cur.execute(
                f"INSERT INTO messages ({columns}) SELECT {columns} FROM new_messages "
                "ORDER BY id ON CONFLICT (row_key, part) DO NOTHING"
            )
            added = max(cur.rowcount, 0)
        self._analyze(conn, added)
        return added

    def _analyze(self, conn: psycopg.Connection[Any], added: int) -> None:
        """Refresh the planner's statistics after a big insert: with those of an empty
        table it reads the whole outbox for every batch's outcome (measured: 50 ms a
        batch at 50,000 messages, instead of 1 ms by index)."""
        if added >= 1000:
            conn.execute("ANALYZE messages")

    def requeue(self, row_keys: Iterable[str], *, states: Sequence[str]) -> int:
        """Set the messages of ``row_keys`` in one of ``states`` back to ``pending``."""
        keys = list(row_keys)
        return self._run(
            lambda c: max(
                c.execute(
                    "UPDATE messages SET state = 'pending', reason = NULL, batch = NULL, "
                    "message_id = NULL, sid = NULL, request_status = NULL, api_message = NULL, "
                    "sent_at = NULL, claimed_by = NULL "
                    "WHERE row_key = ANY(%s::text[]) AND state = ANY(%s::text[])",
                    (keys, list(states)),
                ).rowcount,
                0,
            )
        )

    def pending(self, row_keys: Iterable[str] | None = None) -> pd.DataFrame:
        """The pending messages this worker claimed, in outbox order (as
        :meth:`.sqlite.Journal.pending`). A worker first waits for the others (see
        :mod:`.postgres_claims`), then claims every pending message no one holds."""
        self._claim_pending()
        frame = self._frame(
            "SELECT m.id, m.row_key, m.part, m.phone, m.text, m.send_at, m.reason, "
            "COALESCE(r.position, -1) AS position, r.segments, COALESCE(r.parts, 1) AS parts "
            "FROM messages m LEFT JOIN rows r ON r.row_key = m.row_key "
            f"WHERE m.state = 'pending' AND {self._mine()} AND m.id NOT IN ({FLYING_IDS}) "
            "ORDER BY position, m.part, m.id",
            {"me": self.worker},
        )
        if row_keys is not None:
            wanted = frame["row_key"].isin(pd.Index(list(row_keys)))
            frame = frame[wanted.to_numpy()].reset_index(drop=True)
        return frame

    def pending_messages(self) -> pd.DataFrame:
        """The pending messages this worker claimed: ``id, row_key, part, send_at, reason``."""
        self._claim_pending()
        cols = self._columns(
            "SELECT m.id, m.row_key, m.part, m.send_at, m.reason FROM messages AS m "
            f"WHERE m.state = 'pending' AND {self._mine()} AND m.id NOT IN ({FLYING_IDS})",
            {"me": self.worker},
        )
        return pd.DataFrame(cols)

    def set_pending(
        self,
        ids: Sequence[int],
        *,
        reason: str | None,
        send_at: Sequence[int | None] | None = None,
    ) -> None:
        """Give pending messages a reason (why they wait) and, if given, their time. A
        message that waits (a reason) is no longer claimed: any worker may send it later."""
        if not len(ids):
            return
        id_list = [int(i) for i in ids]
        free = reason is not None

        def work(conn: psycopg.Connection[Any]) -> None:
            if send_at is None:
                conn.execute(
                    "UPDATE messages SET reason = %s, "
                    "claimed_by = CASE WHEN %s THEN NULL ELSE claimed_by END "
                    "WHERE id = ANY(%s::bigint[]) AND state = 'pending'",
                    (reason, free, id_list),
                )
            else:
                times = [None if t is None else int(t) for t in send_at]
                conn.execute(
                    "UPDATE messages AS m SET reason = %s, send_at = t.at, "
                    "claimed_by = CASE WHEN %s THEN NULL ELSE m.claimed_by END "
                    "FROM unnest(%s::bigint[], %s::bigint[]) AS t(id, at) "
                    "WHERE m.id = t.id AND m.state = 'pending'",
                    (reason, free, id_list, times),
                )

        self._run(work)

    # -- the request loop --

    def mark_inflight(
        self, number: int, ids: Sequence[int], *, method: str, requested_at: int | None = None
    ) -> None:
        """Commit a batch in flight before its request (see :meth:`write_turn`)."""
        at = now_us() if requested_at is None else requested_at
        self.write_turn([], [(number, ids, method, at)])

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
        """Commit a batch's outcome right after its request (as
        :meth:`.sqlite.Journal.record_fates`)."""
        at = now_us() if answered_at is None else answered_at
        self.write_turn(
            [Answered(number, list(fates), batch_state, request_status, detail, at)], []
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
        """:meth:`record_fates` with one ``(id, state, reason, message_id, sid,
        api_message, sent_at)`` tuple per message."""
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
        """Commit one turn of the request loop in one transaction: the outcomes of the
        batches whose request ended, then the batches about to start, in flight (this
        worker's lease and claims checked). Run again after a lost connection, it
        changes nothing it already wrote."""
        if not answered and not launched:
            return

        def work(conn: psycopg.Connection[Any]) -> None:
            self._answer(conn, answered)
            self._launch(conn, launched)

        # The loop's usual turn writes either outcomes or launches: one statement each
        # (measured: ~40% less time a batch than the same statement between BEGIN and
        # COMMIT, with the server on the same host).
        alone = not answered or not launched
        self._run(work, doing="recording requests", one_statement=alone)

    def _answer(self, conn: psycopg.Connection[Any], answered: Sequence[Answered]) -> None:
        if not answered:
            return
        done = [
            {"number": a.number, "state": a.batch_state, "at": a.answered_at,
             "status": a.request_status, "detail": _text(a.detail)}
            for a in answered
        ]  # fmt: skip
        fates: list[dict[str, Any]] = []
        ids: list[int] = []
        fk: list[int] = []
        mids: list[int | None] = []
        sids: list[str | None] = []
        for a in answered:
            for f in a.fates:
                n = len(f.ids)
                fk += [len(fates)] * n
                fates.append(
                    {"k": len(fates), "state": f.state, "reason": _text(f.reason),
                     "api": _text(f.api_message), "sent_at": f.sent_at,
                     "status": a.request_status, "number": a.number}
                )  # fmt: skip
                ids += f.ids
                mids += f.message_ids or [None] * n
                sids += [_text(s) for s in f.sids] if f.sids else [None] * n
        params = {
            "done": json.dumps(done, ensure_ascii=False, default=int),
            "fates": json.dumps(fates, ensure_ascii=False, default=int),
            "ids": bigints(ids),
            "fk": bigints(fk),
            "mids": bigints(mids),
            "sids": texts(sids),
        }
        # The values inline (a client-side cursor): constants, each array and JSON parsed
        # once, where parameters are parsed again for every message (measured: 170 ms
        # a batch of 500, against 10 ms), and the plan made for these very ids.
        with self._pg.ClientCursor(conn) as cur:
            written = cur.execute(_ANSWER, params).rowcount
        if written != len(ids):
            logger.warning(
                "journal %s: %d outcomes not written (their messages were recovered and "
                "requeued meanwhile)",
                self.path,
                len(ids) - written,
            )

    # -- reading back --

    def counts(self) -> dict[str, int]:
        """Messages per journal state."""
        names, rows = self._fetch(
            f"SELECT {effective_state('m')} AS s, COUNT(*) FROM messages AS m GROUP BY s"
        )
        return {str(state): int(n) for state, n in rows}

    def results(self, *, index: pd.Index | None = None) -> pd.DataFrame:
        """The results frame of the latest call, built from the journal alone.

        A worker first waits for the batches other workers have claimed or in flight
        (the second of two sends of one frame returns the first's outcomes).
        """
        self._await_others()
        columns = self._columns(RESULTS_SQL)
        r_phone, r_text = _unutf8(columns.pop("r_phone")), _unutf8(columns.pop("r_text"))
        m_phone, m_text = columns.pop("m_phone"), columns.pop("m_text")
        columns["phone"] = np.where(pd.isna(r_phone), m_phone, r_phone)
        columns["text"] = np.where(pd.isna(r_text), m_text, r_text)
        n = len(columns["segments"])
        codes, other = columns.pop("encoding"), columns.pop("encoding_other")
        columns["encoding"] = decode_codes(codes, other, ENCODINGS)
        names, found = self._fetch("SELECT MIN(position), MAX(position), COUNT(*) FROM rows")
        first, last, count = found[0]
        multi = self._columns(MULTI_SQL)
        row = multi.pop("position").astype(np.int64)
        if count and (first, last) != (0, count - 1):  # positions not 0..n-1: map them
            positions = self._columns("SELECT position FROM rows ORDER BY position")["position"]
            row = np.searchsorted(positions.astype(np.int64), row)
        if index is None:
            meta = self.get_meta("index") or {"kind": "index", "names": [None]}
            index = range_index(meta, n)
            if index is None:
                labels = self._columns("SELECT label FROM rows ORDER BY position")["label"]
                index = rebuild_index(meta, labels.tolist())
        return results_frame(columns, index, {"row": row, **multi})

    def message_outcomes(self, first: int, last: int) -> dict[str, np.ndarray[Any, Any]]:
        """The result columns of the messages with ids ``first`` to ``last``, by id (as
        :meth:`.sqlite.Journal.message_outcomes`)."""
        return self._columns(OUTCOMES_SQL, (first, last))

    def snapshot(self) -> JournalBackend:
        """An in-memory SQLite copy of this journal (a dry run plans on it)."""
        copy = Journal(None)
        if self.exists:
            copy_tables(self, copy)
        return copy


def open_postgres(journal: str, *, dry_run: bool) -> JournalBackend:
    """The journal of a run at a ``postgresql://`` URL (a dry run: an in-memory copy)."""
    if not dry_run:
        return PostgresJournal(journal)
    with PostgresJournal(journal, readonly=True) as real:
        return real.snapshot()


def postgres_results(journal: str) -> pd.DataFrame:
    """The results frame of the latest send in a PostgreSQL journal (read only)."""
    with PostgresJournal(journal, readonly=True) as real:
        if not real.exists:
            raise InputError(f"journal not found: {real.path}")
        return real.results()


def _open_either(journal: str, *, readonly: bool) -> Any:
    if is_postgres_url(journal):
        opened = PostgresJournal(journal, readonly=readonly)
        if readonly and not opened.exists:
            opened.close()
            raise InputError(f"journal not found: {opened.path}")
        return opened
    return Journal(journal, readonly=readonly)


def copy_journal(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> str:
    """Copy the journal at ``source`` into a new journal at ``destination`` (a SQLite
    file or a ``postgresql://`` URL each); returns a one-line summary (no password)."""
    src = _open_either(os.fspath(source), readonly=True)
    try:
        dst = _open_either(os.fspath(destination), readonly=False)
        try:
            counts = copy_tables(src, dst)
        finally:
            dst.close()
    finally:
        src.close()
    figures = ", ".join(f"{counts[name]:,} {name}" for name in TABLES[1:])
    return f"copied {src.path} -> {dst.path}: {figures}"
