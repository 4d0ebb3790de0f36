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
    A follow-up send (:mod:`..resending`) adds attempt N of a row as new messages
    keyed ``"<first key>#N"``, with ``attempt`` N and ``first_key``; a first attempt has
    ``attempt`` 1 and no ``first_key``.
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

:class:`Journal` is this backend of :class:`~.backend.JournalBackend`. It is built in
layers: :mod:`.connection` opens the file (pragmas, schema version), locks it and
commits; :mod:`.outbox` writes the rows and messages and reads them back; this module
adds the runs, the request loop's batches (their SQL in :mod:`.writes`, one statement
per write) and the recovery of batches a dead process left in flight. The SQL lives in
:mod:`.schema`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..results import REASON_PROCESS_STOPPED, encode_label
from . import writes as writes
from .backend import now_us, refuse_streamed
from .outbox import Outbox
from .schema import FLYING_IDS, effective_state
from .writes import Answered, Fate

# The helpers below are the sending layer's own; the public names are these.
__all__ = ["results_from_journal"]


class Journal(Outbox):
    """An open send journal on SQLite (the embedded :class:`~.backend.JournalBackend`).

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

    # -- cancelling --

    def cancel_pending(
        self,
        *,
        campaign: str | None,
        before: int | None,
        row_keys: Sequence[str] | None,
        labels: Sequence[Any] | None,
    ) -> dict[str, int]:
        """Make the pending messages that match every filter given ``cancelled``.

        ``before``: due before this time (µs; a message with no time is due at once);
        ``row_keys``: only these rows; ``labels``: only the latest input's rows with these
        index labels. Messages in flight, sent or in doubt are left as
        they are. Returns the matching messages per state *before* the change (one
        transaction: a message cannot be sent between the count and the change).
        """
        where: list[str] = ["1"]
        params: list[Any] = []
        if campaign is not None:
            where.append("m.campaign = ?")
            params.append(campaign)
        if before is not None:
            where.append("(m.send_at IS NULL OR m.send_at < ?)")
            params.append(before)
        if row_keys is not None:
            where.append(_of_rows("SELECT value FROM json_each(?)"))
            params += [json.dumps(list(row_keys))] * 2
        if labels is not None:
            # a range index stores no labels: its rows are found by position
            meta = self.get_meta("index") or {}
            if meta.get("kind") == "range":
                span = range(meta["start"], meta["stop"], meta["step"])
                numbers = (_int(v) for v in labels)
                found = [span.index(n) for n in numbers if n is not None and n in span]
                where.append(
                    _of_rows(
                        "SELECT r.row_key FROM rows AS r WHERE r.position IN "
                        "(SELECT value FROM json_each(?))"
                    )
                )
                params += [json.dumps(found)] * 2
            else:
                where.append(
                    _of_rows(
                        "SELECT r.row_key FROM rows AS r "
                        "WHERE r.label IN (SELECT value FROM json_each(?))"
                    )
                )
                params += [json.dumps([encode_label(v) for v in labels])] * 2
        match = " AND ".join(where)
        with self.transaction() as conn:
            counts = conn.execute(
                f"SELECT {effective_state('m')} AS s, COUNT(*) FROM messages AS m "
                f"WHERE {match} GROUP BY s",
                params,
            ).fetchall()
            conn.execute(
                "UPDATE messages AS m SET state = 'cancelled', reason = 'cancelled' "
                f"WHERE m.state = 'pending' AND m.id NOT IN ({FLYING_IDS}) AND {match}",
                params,
            )
        return {str(state): int(n) for state, n in counts}

    # -- the request loop (writes.py) --

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


def _of_rows(keys: str) -> str:
    """SQL: message ``m`` is an attempt of a row whose first key ``keys`` (a subquery with
    one parameter, bound twice) selects: its first attempt, or a follow-up one."""
    return f"(m.row_key IN ({keys}) OR (m.attempt > 1 AND m.first_key IN ({keys})))"


def _int(value: Any) -> int | None:
    """An index label as an int, or None when it is not a whole number."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number == value else None


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
        refuse_streamed(journal)
        return journal.results()
