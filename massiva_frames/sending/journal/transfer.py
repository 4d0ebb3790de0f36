"""Copying a journal between backends (SQLite ↔ PostgreSQL), every state preserved.

A copy reads the source's tables into one neutral form, then writes them into an empty
destination in one transaction: the latest call's settings and rows, every message with
its state, reason, batch and the provider's answer, every batch (ids in request order)
and every run. The one thing the two backends store differently is a request under
way, kept the same on both: its batch ``inflight`` with its ids, its messages still
``pending``; a batch in flight in the source is in flight in the copy, read as
``unknown`` and recovered as such (no worker holds it there). Claims and workers, which
belong to running processes, are not copied. :func:`.postgres.copy_journal` opens both
ends; ``massiva-frames journal copy SRC DST`` is the command.
"""

from __future__ import annotations

import json
from typing import Any

from ...errors import InputError
from .sqlite import Journal

# Internal to the sending layer and the ``journal`` command.
__all__ = ["copy_tables"]

ROW_COLUMNS = (
    "position, label, row_key, input_state, reason, phone, text, encoding, segments, parts"
)
MESSAGE_COLUMNS = (
    "id, row_key, part, phone, text, campaign, state, reason, send_at, batch, message_id, "
    "sid, request_status, api_message, sent_at, created_at, attempt, first_key"
)


def _message_select(journal: Any) -> str:
    """The messages' columns as read from ``journal``: a journal read as written before
    attempts existed gives every message attempt 1 and no first key."""
    if getattr(journal, "has_attempts", True):
        return MESSAGE_COLUMNS
    return MESSAGE_COLUMNS.replace("attempt, first_key", "1, NULL")


BATCH_COLUMNS = (
    "number, state, n_messages, method, requested_at, answered_at, request_status, detail, ids"
)
RUN_COLUMNS = "number, kind, started_at, finished_at, summary"
TABLES = ("meta", "rows", "messages", "batches", "runs")

Tables = dict[str, list[tuple[Any, ...]]]


def _read_sqlite(journal: Journal) -> Tables:
    conn = journal.conn

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in conn.execute(sql).fetchall()]

    batches = [
        (*b[:-1], None if b[-1] is None else [int(i) for i in json.loads(b[-1])])
        for b in rows(f"SELECT {BATCH_COLUMNS} FROM batches ORDER BY number")
    ]
    return {
        "meta": rows("SELECT key, value FROM meta WHERE key <> 'schema_version' ORDER BY key"),
        "rows": rows(f"SELECT {ROW_COLUMNS} FROM rows ORDER BY position"),
        "messages": rows(f"SELECT {_message_select(journal)} FROM messages ORDER BY id"),
        "batches": batches,
        "runs": rows(f"SELECT {RUN_COLUMNS} FROM runs ORDER BY number"),
    }


def _write_sqlite(journal: Journal, tables: Tables) -> None:
    batches = [(*b[:-1], None if b[-1] is None else json.dumps(b[-1])) for b in tables["batches"]]
    with journal.transaction() as conn:
        conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", tables["meta"])
        for name, columns, values in (
            ("rows", ROW_COLUMNS, tables["rows"]),
            ("messages", MESSAGE_COLUMNS, tables["messages"]),
            ("batches", BATCH_COLUMNS, batches),
            ("runs", RUN_COLUMNS, tables["runs"]),
        ):
            marks = ", ".join("?" for _ in columns.split(","))
            conn.executemany(f"INSERT INTO {name} ({columns}) VALUES ({marks})", values)


def _read_postgres(journal: Any) -> Tables:
    def read(conn: Any) -> Tables:
        def rows(sql: str) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in conn.execute(sql).fetchall()]

        stored = rows(f"SELECT {ROW_COLUMNS} FROM rows ORDER BY position")
        text = [
            (*r[:5], *(None if v is None else bytes(v).decode("utf-8") for v in r[5:7]), *r[7:])
            for r in stored
        ]
        return {
            "meta": rows("SELECT key, value FROM meta ORDER BY key"),
            "rows": text,
            "messages": rows(f"SELECT {_message_select(journal)} FROM messages ORDER BY id"),
            "batches": [
                (*b[:-1], None if b[-1] is None else [int(i) for i in b[-1]])
                for b in rows(f"SELECT {BATCH_COLUMNS} FROM batches ORDER BY number")
            ],
            "runs": rows(f"SELECT {RUN_COLUMNS} FROM runs ORDER BY number"),
        }

    # One transaction: a consistent view of a journal others may be writing to.
    result: Tables = journal._run(read, doing="reading it to copy")
    return result


def _write_postgres(journal: Any, tables: Tables) -> None:
    rows = [
        (
            *r[:5],
            *(None if v is None else str(v).encode("utf-8", "replace") for v in r[5:7]),
            *r[7:],
        )
        for r in tables["rows"]
    ]

    def write(conn: Any) -> None:
        for name, columns, values in (
            ("meta", "key, value", tables["meta"]),
            ("rows", ROW_COLUMNS, rows),
            ("messages", MESSAGE_COLUMNS, tables["messages"]),
            ("batches", BATCH_COLUMNS, tables["batches"]),
            ("runs", RUN_COLUMNS, tables["runs"]),
        ):
            with conn.cursor() as cur, cur.copy(f"COPY {name} ({columns}) FROM STDIN") as cp:
                for value in values:
                    cp.write_row(value)
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('runs', 'number'), "
            "GREATEST((SELECT MAX(number) FROM runs), 1), (SELECT COUNT(*) > 0 FROM runs))"
        )

    journal._run(write, retry=False, doing="writing the copy")


def _count(journal: Any) -> int:
    """Rows, messages, batches and runs in a journal (0: nothing to overwrite)."""
    sql = (
        "SELECT (SELECT COUNT(*) FROM rows) + (SELECT COUNT(*) FROM messages) "
        "+ (SELECT COUNT(*) FROM batches) + (SELECT COUNT(*) FROM runs)"
    )
    if isinstance(journal, Journal):
        return int(journal.conn.execute(sql).fetchone()[0])
    if not journal.exists:
        return 0
    names, rows = journal._fetch(sql)
    return int(rows[0][0])


def copy_tables(source: Any, destination: Any) -> dict[str, int]:
    """Copy every table of an open journal into an open, empty one; returns the number
    of records copied per table."""
    if _count(destination):
        raise InputError(
            f"journal copy: {destination.path or 'the destination'} already holds a journal; "
            "copy into a new file or an empty schema"
        )
    tables = _read_sqlite(source) if isinstance(source, Journal) else _read_postgres(source)
    if isinstance(destination, Journal):
        _write_sqlite(destination, tables)
    else:
        _write_postgres(destination, tables)
    return {name: len(tables[name]) for name in TABLES}
