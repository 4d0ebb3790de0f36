"""What the PostgreSQL journal does besides sending: check its key index before a run
writes, and cancel pending messages (``mf.cancel``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...errors import JournalCorruptError
from ..results import encode_label
from .postgres_schema import FLYING_IDS, effective_state

if TYPE_CHECKING:
    import psycopg

    from .postgres_connection import PostgresConnection

__all__ = ["cancel", "verify"]


def cancel(
    journal: PostgresConnection,
    *,
    campaign: str | None,
    before: int | None,
    row_keys: Sequence[str] | None,
    labels: Sequence[Any] | None,
) -> dict[str, int]:
    """Make the pending messages that match every filter given ``cancelled`` (as on
    SQLite); a message claimed by a worker or in a batch in flight is left as it is.
    Returns the matching messages per state before the change (one transaction)."""
    where: list[str] = ["TRUE"]
    params: list[Any] = []
    if campaign is not None:
        where.append("m.campaign = %s")
        params.append(campaign)
    if before is not None:
        where.append("(m.send_at IS NULL OR m.send_at < %s)")
        params.append(before)
    # A row's follow-up attempts carry its first key in first_key.
    of_rows = "(m.row_key IN ({0}) OR (m.attempt > 1 AND m.first_key IN ({0})))"
    if row_keys is not None:
        where.append(of_rows.format("SELECT unnest(%s::text[])"))
        params += [list(row_keys)] * 2
    if labels is not None:
        meta = journal.get_meta("index") or {}
        if meta.get("kind") == "range":
            span = range(meta["start"], meta["stop"], meta["step"])
            found = []
            for value in labels:
                try:
                    number = int(value)
                except (TypeError, ValueError):
                    continue
                if number in span:
                    found.append(span.index(number))
            by_position = "SELECT r.row_key FROM rows AS r WHERE r.position = ANY(%s)"
            where.append(of_rows.format(by_position))
            params += [found] * 2
        else:
            where.append(of_rows.format("SELECT r.row_key FROM rows AS r WHERE r.label = ANY(%s)"))
            params += [[encode_label(v) for v in labels]] * 2
    match = " AND ".join(where)

    def work(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
        counts = conn.execute(
            f"SELECT {effective_state('m')} AS s, COUNT(*) FROM messages AS m "
            f"WHERE {match} GROUP BY s",
            params,
        ).fetchall()
        conn.execute(
            "UPDATE messages AS m SET state = 'cancelled', reason = 'cancelled' "
            f"WHERE m.state = 'pending' AND m.claimed_by IS NULL "
            f"AND m.id NOT IN ({FLYING_IDS}) AND {match}",
            params,
        )
        return counts

    return {str(state): int(n) for state, n in journal._run(work, doing="cancelling")}


def verify(journal: PostgresConnection) -> None:
    """Before the first write of a send or dispatch: the index that says which messages
    were sent must be usable (``pg_index.indisvalid`` and ``indisready`` of the unique
    key of ``messages``); a broken one raises ``JournalCorruptError``.

    PostgreSQL checks its own pages (with data checksums on, ``initdb -k``), so a
    damaged page already fails the queries; this catches an index left invalid (an
    interrupted ``REINDEX CONCURRENTLY``), which would otherwise let a key repeat.
    """
    rows = journal._run(
        lambda c: c.execute(
            "SELECT i.indisvalid AND i.indisready FROM pg_index AS i "
            "JOIN pg_class AS t ON t.oid = i.indrelid "
            "WHERE t.oid = 'messages'::regclass AND i.indisunique"
        ).fetchall()
    )
    if not rows or not all(ok for (ok,) in rows):
        raise JournalCorruptError(
            "the journal's index of message keys is missing or invalid: it can no "
            "longer tell which messages were sent; nothing was sent. Rebuild it "
            "(REINDEX TABLE messages) or restore a copy of the journal."
        )
