"""The send journal on PostgreSQL: one outbox for many workers (``postgresql://`` URLs).

:class:`PostgresJournal` is the server backend of :class:`~.backend.JournalBackend`, for
journals that several processes or hosts share (Airflow or Kubernetes tasks on
ephemeral workers, two cron hosts, one database for every campaign's state). It keeps
the SQLite journal's tables and guarantees (see :mod:`.sqlite`): a send's rows and
messages are written in one transaction before any request (``COPY``:
:mod:`.postgres_outbox`), a batch is committed in flight before its request and its
outcome right after (here: the runs and the request loop's writes), a message is keyed
by ``(row_key, part)`` across every run. What sharing adds (claims, leases, recovery of
a dead worker's batches) is :mod:`.postgres_claims`; connecting, versions and getting
the connection back are :mod:`.postgres_connection`; the SQL is :mod:`.postgres_schema`;
the URL and its parameters (``schema``, ``lease``, ``reconnect``) are
:mod:`.postgres_url`. :func:`copy_journal` copies a journal between a SQLite file and a
PostgreSQL URL, either way (the tables: :mod:`.transfer`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from ...errors import InputError
from . import writes as writes
from .backend import JournalBackend, now_us, refuse_streamed
from .postgres_claims import bigints, texts
from .postgres_outbox import PostgresOutbox, pg_text
from .postgres_url import is_postgres_url
from .sqlite import Journal
from .transfer import TABLES, copy_tables
from .writes import Answered, Fate

if TYPE_CHECKING:
    import psycopg

# Internal to the sending layer: ``send``/``dispatch`` open it from a URL.
__all__ = [
    "PostgresJournal",
    "copy_journal",
    "open_postgres",
    "postgres_results",
    "require_journal",
]

logger = logging.getLogger("massiva_frames.sending.campaign")

# A turn's outcomes in one statement: the batches' records and the fates (what a group
# of a batch's messages share) as JSON, the messages as arrays (id, fate, provider's id
# and sid), all inline (a client-side cursor): constants the planner sizes, each parsed
# once. Measured on a 50,000-row send: as parameters of a prepared statement, the
# server's generic plan compared every message of a batch with every other (0.6 s a
# batch, against ~10 ms); as Python lists, psycopg adapted them element by element
# (6 s of the send's 18). A message is written while its batch is in flight (it still
# reads pending), or after a recovery made it unknown (the answer came later); a second
# run rewrites the same values. Its claim ends.
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


class PostgresJournal(PostgresOutbox):
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

    def cancel_pending(
        self,
        *,
        campaign: str | None,
        before: int | None,
        row_keys: Sequence[str] | None,
        labels: Sequence[Any] | None,
    ) -> dict[str, int]:
        """Make the matching pending messages ``cancelled`` (:func:`.postgres_upkeep.cancel`)."""
        from .postgres_upkeep import cancel

        return cancel(self, campaign=campaign, before=before, row_keys=row_keys, labels=labels)

    def verify(self) -> None:
        """Refuse a journal whose key index cannot be trusted (:func:`.postgres_upkeep.verify`)."""
        from .postgres_upkeep import verify

        verify(self)

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
        text = pg_text(json.dumps(summary, default=str))
        self._run(
            lambda c: c.execute(
                "UPDATE runs SET finished_at = %s, summary = %s WHERE number = %s",
                (now_us(), text, number),
            )
        )

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

        # The loop's usual turn writes either outcomes or launches: one statement each,
        # its own transaction (measured: the request loop ~30% faster than with BEGIN and
        # COMMIT around it, 50,000 rows, the server on the same host).
        alone = not answered or not launched
        self._run(work, doing="recording requests", one_statement=alone)

    def _answer(self, conn: psycopg.Connection[Any], answered: Sequence[Answered]) -> None:
        if not answered:
            return
        done = [
            {"number": a.number, "state": a.batch_state, "at": a.answered_at,
             "status": a.request_status, "detail": pg_text(a.detail)}
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
                    {"k": len(fates), "state": f.state, "reason": pg_text(f.reason),
                     "api": pg_text(f.api_message), "sent_at": f.sent_at,
                     "status": a.request_status, "number": a.number}
                )  # fmt: skip
                ids += f.ids
                mids += f.message_ids or [None] * n
                sids += [pg_text(s) for s in f.sids] if f.sids else [None] * n
        params = {
            "done": json.dumps(done, ensure_ascii=False, default=int),
            "fates": json.dumps(fates, ensure_ascii=False, default=int),
            "ids": bigints(ids),
            "fk": bigints(fk),
            "mids": bigints(mids),
            "sids": texts(sids),
        }
        # The values inline (a client-side cursor): see _ANSWER.
        with self._pg.ClientCursor(conn) as cur:
            written = cur.execute(_ANSWER, params).rowcount
        if written != len(ids):
            logger.warning(
                "journal %s: %d outcomes not written (their messages were recovered and "
                "requeued meanwhile)",
                self.path,
                len(ids) - written,
            )

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


def require_journal(journal: str) -> None:
    """Raise ``InputError`` unless the URL's schema holds a journal (``dispatch``)."""
    with PostgresJournal(journal, readonly=True) as found:
        if not found.exists:
            raise InputError(f"journal not found: {found.path}")


def postgres_results(journal: str) -> pd.DataFrame:
    """The results frame of the latest send in a PostgreSQL journal (read only)."""
    with PostgresJournal(journal, readonly=True) as real:
        if not real.exists:
            raise InputError(f"journal not found: {real.path}")
        refuse_streamed(real)
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
