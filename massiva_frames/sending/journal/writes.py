"""The request loop's writes to the send journal: batches in flight, their outcomes.

A batch is committed *in flight* before its request; its outcome right after. An outcome
is a list of :class:`Fate`: the messages of the batch that share a state, a reason, the
provider's message and the time, each with the provider's id and sid.

With SQLite >= 3.33 (``UPDATE ... FROM`` and the JSON functions) each write is one
statement per group of messages, not one per message, and a whole turn of the request
loop (the outcomes of the requests that ended, the batches about to start) is a single
statement through a trigger (:data:`.schema.TURN_SQL`): one transaction, and one
crossing from Python into SQLite per turn. Older SQLite gets the same rows, a statement
per message.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .schema import TURN_SQL

# Internal to the SQLite journal (massiva_frames.sending.journal.sqlite).
__all__: list[str] = []

#: UPDATE ... FROM (3.33) and the JSON functions: one statement per batch, not one per
#: message (measured ~3x less work for a 500-message batch).
_JSON_UPDATES = sqlite3.sqlite_version_info >= (3, 33, 0)


@dataclass
class Fate:
    """The messages of one batch that share an outcome (state, reason, answer, time).

    ``message_ids`` and ``sids`` are the provider's, one per message (``None``: none).
    """

    state: str
    reason: str | None
    api_message: str | None
    sent_at: int | None
    ids: list[int]
    message_ids: list[int | None] | None = None
    sids: list[str | None] | None = None

    def triples(self) -> list[tuple[Any, ...]]:
        """``(id, message_id, sid)`` per message."""
        n = len(self.ids)
        mids = self.message_ids or [None] * n
        sids = self.sids or [None] * n
        return list(zip(self.ids, mids, sids, strict=True))

    def rows(self) -> list[tuple[Any, ...]]:
        """``(id, state, reason, message_id, sid, api_message, sent_at)`` per message."""
        return [
            (i, self.state, self.reason, m, s, self.api_message, self.sent_at)
            for i, m, s in self.triples()
        ]


@dataclass
class Answered:
    """A batch whose request ended: the fates of its messages and the batch's record."""

    number: int
    fates: list[Fate]
    batch_state: str
    request_status: int | None
    detail: str | None
    answered_at: int


def one_statement() -> bool:
    """Whether a turn can be written as one statement (this SQLite has what it needs)."""
    return _JSON_UPDATES


def prepare(conn: sqlite3.Connection) -> None:
    """Create the turn's TEMP view and trigger on ``conn`` (this connection's only)."""
    if _JSON_UPDATES:
        for statement in TURN_SQL:  # execute(), not executescript(): no COMMIT
            conn.execute(statement)


def group_fates(outcomes: Sequence[tuple[Any, ...]]) -> list[Fate]:
    """Fates from ``(id, state, reason, message_id, sid, api_message, sent_at)`` tuples."""
    groups: dict[tuple[Any, ...], Fate] = {}
    for i, state, reason, mid, sid, api, sent in outcomes:
        fate = groups.get((state, reason, api, sent))
        if fate is None:
            fate = groups[state, reason, api, sent] = Fate(state, reason, api, sent, [], [], [])
        fate.ids.append(i)
        fate.message_ids.append(mid)  # type: ignore[union-attr]
        fate.sids.append(sid)  # type: ignore[union-attr]
    return list(groups.values())


def _json_ids(ids: Sequence[int]) -> str:
    # default=int: numpy integers too
    return json.dumps(ids if isinstance(ids, list) else list(ids), default=int)


def _all_none(values: Sequence[Any] | None) -> bool:
    return values is None or all(v is None for v in values)


def write_turn(
    conn: sqlite3.Connection,
    answered: Sequence[Answered],
    launched: Sequence[tuple[int, Sequence[int], str, int]],
) -> None:
    """One turn in one statement through the trigger (see :data:`.schema.TURN_SQL`)."""
    done = [[a.number, a.batch_state, a.answered_at, a.request_status, a.detail] for a in answered]
    fates = [
        [f.state, f.reason, f.api_message, f.sent_at, a.request_status, a.number]
        for a in answered
        for f in a.fates
    ]
    msgs = [f.triples() for a in answered for f in a.fates]
    inflight = [[number, method, at, list(ids)] for number, ids, method, at in launched]
    conn.execute(
        "INSERT INTO journal_turn (done, fates, msgs, inflight) VALUES (?, ?, ?, ?)",
        [json.dumps(x, ensure_ascii=False, default=int) for x in (done, fates, msgs, inflight)],
    )


def write_turn_statements(
    conn: sqlite3.Connection,
    answered: Sequence[Answered],
    launched: Sequence[tuple[int, Sequence[int], str, int]],
) -> None:
    """The same turn a statement at a time (the caller holds the transaction)."""
    for done in answered:
        record_answer(conn, done)
    for number, ids, method, at in launched:
        mark_inflight(conn, number, ids, method, at)


def mark_inflight(
    conn: sqlite3.Connection, number: int, ids: Sequence[int], method: str, at: int
) -> None:
    """Record a batch in flight (the caller holds the transaction).

    One row in ``batches``, its message ids in request order: the messages themselves
    are written once, with the outcome (readers: :func:`.schema.effective_state`).
    """
    conn.execute(
        "INSERT INTO batches (number, state, n_messages, method, requested_at, ids) "
        "VALUES (?, 'inflight', ?, ?, ?, ?)",
        (number, len(ids), method, at, _json_ids(ids)),
    )


def record_answer(conn: sqlite3.Connection, done: Answered) -> None:
    """Record a batch's outcome (the caller holds the transaction)."""
    conn.execute(
        "UPDATE batches SET state = ?, answered_at = ?, request_status = ?, "
        "detail = ? WHERE number = ?",
        (done.batch_state, done.answered_at, done.request_status, done.detail, done.number),
    )
    for fate in done.fates:
        _record_fate(conn, fate, done.request_status, done.number)


def _record_fate(
    conn: sqlite3.Connection, fate: Fate, request_status: int | None, number: int
) -> None:
    batch = None if fate.state == "pending" else number  # a message never sent: no batch
    shared = (fate.state, fate.reason, fate.api_message, fate.sent_at, request_status, batch)
    head = (
        "UPDATE messages SET state = ?1, reason = ?2, api_message = ?3, sent_at = ?4, "
        "request_status = ?5, batch = ?6, "
    )
    mids, sids = fate.message_ids, fate.sids
    if not _JSON_UPDATES:
        conn.executemany(
            head + "message_id = ?7, sid = ?8 WHERE id = ?9",
            (
                (*shared, m, s, i)
                for i, m, s in zip(
                    fate.ids,
                    mids or itertools.repeat(None),
                    sids or itertools.repeat(None),
                    strict=False,
                )
            ),
        )
    elif _all_none(mids) and _all_none(sids):  # no ids from the provider
        conn.execute(
            head + "message_id = NULL, sid = NULL WHERE id IN (SELECT value FROM json_each(?7))",
            (*shared, _json_ids(fate.ids)),
        )
    else:
        # One statement for the group: [id, message_id, sid] triples, the shared fields
        # bound once (measured ~2x less work than every field per message).
        triples = json.dumps(fate.triples(), default=int)
        conn.execute(
            head + "message_id = json_extract(j.value, '$[1]'), "
            "sid = json_extract(j.value, '$[2]') "
            "FROM json_each(?7) AS j WHERE messages.id = json_extract(j.value, '$[0]')",
            (*shared, triples),
        )
