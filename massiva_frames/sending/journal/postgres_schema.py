"""The PostgreSQL journal's SQL: its tables, their versions (forward migrations), and the
queries that read the results frame back.

The tables are those of the SQLite journal (:mod:`.sqlite` documents them) with what
sharing needs:

``messages``
    A pending message may carry ``claimed_by``: the worker that will send it. As in the
    SQLite journal, a message in flight still reads ``pending`` in its own row (it is
    written once, with its outcome): its batch says it is under way
    (:func:`effective_state`).
``batches``
    An in-flight batch carries its ``worker`` and ``lease_until``; ``ids`` is a
    ``bigint[]``.
``workers``
    One row per running worker: its lease, the time of its last heartbeat, the key of
    the advisory lock its session holds while it lives, and the batch numbers it has
    reserved.
``rows``
    ``phone`` and ``text`` are ``bytea`` (UTF-8): an invalid row's text may hold a NUL,
    which PostgreSQL's ``text`` cannot store.

Every message is written twice: added, then given its outcome. Half of each page of
``messages`` is left free for that second version, so the update touches no index
(measured: a batch's outcomes in ~35% less time); keys compare byte-wise (``COLLATE
"C"``), whatever the database's locale.

``messages`` also carry their ``attempt`` and, from the second on, ``first_key`` (a
follow-up send: :mod:`massiva_frames.sending.resending`), as on SQLite; version 2 added
them, and the partial index that finds a row's latest attempt.

``journal_version`` holds one row per migration applied. Opening a journal applies the
missing ones in order, under an advisory lock (several workers may open a new journal at
once), and refuses a journal written by a newer version of the package.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..results import ENCODINGS, JOURNAL_STATES

# Internal to the PostgreSQL journal (massiva_frames.sending.journal.postgres).
__all__ = [
    "FLYING_IDS",
    "MIGRATIONS",
    "MULTI_SQL",
    "NOW_US",
    "OUTCOMES_SQL",
    "RESULTS_SQL",
    "SCHEMA_VERSION",
    "VERSION_TABLE",
    "multi_sql",
    "results_sql",
]

#: The server's clock in integer microseconds since the epoch, UTC (leases use the
#: database's clock, the one every worker shares).
NOW_US = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"

VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS journal_version (
    version integer PRIMARY KEY,
    applied_at bigint NOT NULL
)
"""

_VERSION_1 = (
    """
CREATE TABLE meta (
    key text PRIMARY KEY,
    value text NOT NULL
)""",
    """
CREATE TABLE rows (
    position bigint PRIMARY KEY,
    label text NOT NULL,
    row_key text,
    input_state text NOT NULL,
    reason text,
    phone bytea,
    text bytea,
    encoding text,
    segments bigint,
    parts bigint NOT NULL DEFAULT 1
)""",
    """
CREATE TABLE messages (
    id bigint PRIMARY KEY,
    row_key text COLLATE "C" NOT NULL,
    part bigint NOT NULL,
    phone text NOT NULL,
    text text NOT NULL,
    campaign text NOT NULL,
    state text NOT NULL,
    reason text,
    send_at bigint,
    batch bigint,
    message_id bigint,
    sid text,
    request_status bigint,
    api_message text,
    sent_at bigint,
    created_at bigint NOT NULL,
    claimed_by text,
    UNIQUE (row_key, part)
) WITH (fillfactor = 50)""",
    """
CREATE TABLE batches (
    number bigint PRIMARY KEY,
    state text NOT NULL,
    n_messages bigint NOT NULL,
    method text,
    requested_at bigint NOT NULL,
    answered_at bigint,
    request_status bigint,
    detail text,
    ids bigint[],
    worker text,
    lease_until bigint
)""",
    "CREATE INDEX batches_inflight ON batches (number) WHERE state = 'inflight'",
    """
CREATE TABLE runs (
    number bigserial PRIMARY KEY,
    kind text NOT NULL,
    started_at bigint NOT NULL,
    finished_at bigint,
    summary text,
    worker text
)""",
    """
CREATE TABLE workers (
    id text PRIMARY KEY,
    host text,
    pid bigint,
    lock_key integer NOT NULL,
    started_at bigint NOT NULL,
    beat_at bigint NOT NULL,
    lease_until bigint NOT NULL,
    batch_first bigint,
    batch_last bigint
)""",
)

# Follow-up sends: every message written so far is a first attempt (a constant default:
# PostgreSQL adds the column without rewriting the table).
_VERSION_2 = (
    "ALTER TABLE messages ADD COLUMN attempt bigint NOT NULL DEFAULT 1",
    'ALTER TABLE messages ADD COLUMN first_key text COLLATE "C"',
    "CREATE INDEX messages_attempts ON messages (first_key, attempt) WHERE attempt > 1",
)

#: version -> the statements that bring a journal from the version before to it.
MIGRATIONS: dict[int, Sequence[str]] = {1: _VERSION_1, 2: _VERSION_2}

#: The newest journal version this package writes (and the newest it reads).
SCHEMA_VERSION = max(MIGRATIONS)


# The ids of the messages whose request is under way (as in the SQLite journal's schema).
FLYING_IDS = "SELECT unnest(b.ids) FROM batches AS b WHERE b.state = 'inflight'"


def effective_state(alias: str = "m") -> str:
    """SQL for a message's state: ``inflight`` while its batch is in flight."""
    return (
        f"CASE WHEN {alias}.state = 'pending' AND {alias}.id IN ({FLYING_IDS}) "
        f"THEN 'inflight' ELSE {alias}.state END"
    )


def _batch(alias: str) -> str:
    """SQL for a message's batch: the in-flight batch's number while its request is under
    way."""
    return (
        f"CASE WHEN {alias}.batch IS NULL AND {alias}.state = 'pending' "
        f"AND {alias}.id IN ({FLYING_IDS}) THEN (SELECT b.number FROM batches AS b "
        f"WHERE b.state = 'inflight' AND {alias}.id = ANY(b.ids)) ELSE {alias}.batch END"
    )


def _code(expr: str, values: Sequence[str], name: str, *, other: bool = True) -> str:
    """SQL for ``expr`` as its position in ``values``: -1 when NULL, ``len(values)`` else;
    with ``other``, the unlisted values in a second column ``<name>_other``."""
    cases = " ".join(f"WHEN '{v}' THEN {i}" for i, v in enumerate(values))
    listed = ", ".join(f"'{v}'" for v in values)
    code = f"CASE WHEN {expr} IS NULL THEN -1 ELSE CASE {expr} {cases} ELSE {len(values)} END END"
    if not other:
        return f"{code} AS {name}"
    rest = f"CASE WHEN {expr} IN ({listed}) THEN NULL ELSE {expr} END"
    return f"{code} AS {name}, {rest} AS {name}_other"


# A row's latest attempt and its first attempt's message_id (as in the SQLite journal's
# schema: only rows sent again are in the attempts index).
_LATEST = """LEFT JOIN (SELECT a.first_key AS first_key, MAX(a.attempt) AS attempt,
       (SELECT f.message_id FROM messages AS f WHERE f.row_key = a.first_key AND f.part = 1)
           AS first_id
    FROM messages AS a WHERE a.attempt > 1 AND a.part = 1 GROUP BY a.first_key) AS t
  ON t.first_key = r.row_key"""

# The key of a row's latest attempt (mirrors sending.resending.attempt_key).
_LATEST_KEY = "CASE WHEN t.attempt IS NULL THEN r.row_key ELSE r.row_key || '#' || t.attempt END"


def results_sql(attempts: bool = True) -> str:
    """One row per input row, in order; message columns from the first part of each row's
    latest attempt. A ready one-part row keeps its phone and text in its message
    (m_phone, m_text); the others in the row (bytea, decoded by the reader). Codes as in
    the SQLite journal's schema. ``attempts=False``: a journal of version 1 read as it is.
    """
    latest = _LATEST if attempts else ""
    key = _LATEST_KEY if attempts else "r.row_key"
    attempt = "m.attempt" if attempts else "CASE WHEN m.id IS NULL THEN NULL ELSE 1 END"
    first = (
        "CASE WHEN t.attempt IS NULL THEN m.message_id ELSE t.first_id END"
        if attempts
        else "m.message_id"
    )
    return f"""
SELECT r.phone AS r_phone, r.text AS r_text, m.phone AS m_phone, m.text AS m_text,
       NULLIF(r.input_state, 'ready') AS input_state,
       CASE WHEN r.input_state = 'ready' THEN m.reason ELSE r.reason END AS reason,
       {_code(f"({effective_state('m')})", JOURNAL_STATES, "m_state", other=False)},
       {_code("r.encoding", ENCODINGS, "encoding")},
       r.segments, {_batch("m")} AS batch, m.message_id, m.sid, m.request_status,
       m.api_message, m.sent_at, {attempt} AS attempt, {first} AS first_message_id
FROM rows r
{latest}
LEFT JOIN messages m ON m.row_key = {key} AND m.part = 1
ORDER BY r.position
"""


RESULTS_SQL = results_sql()

# The same message columns, read by id range (a send's own new messages).
OUTCOMES_SQL = f"""
SELECT {_code(f"({effective_state('m')})", JOURNAL_STATES, "m_state", other=False)},
       m.reason, {_batch("m")} AS batch, m.message_id, m.sid, m.request_status,
       m.api_message, m.sent_at
FROM messages AS m WHERE m.id BETWEEN %s AND %s ORDER BY m.id
"""


def multi_sql(attempts: bool = True) -> str:
    """Rows split into several messages: how the parts of their latest attempt fared."""
    latest = _LATEST if attempts else ""
    key = _LATEST_KEY if attempts else "r.row_key"
    return f"""
SELECT r.position AS position,
       COUNT(*) AS n,
       COUNT(*) FILTER (WHERE m.state = 'accepted') AS n_accepted,
       COUNT(*) FILTER (WHERE m.state = 'rejected') AS n_rejected,
       COUNT(*) FILTER (WHERE m.state = 'cancelled') AS n_cancelled,
       COUNT(*) FILTER (WHERE ({effective_state("m")}) IN ('unknown', 'inflight')) AS n_unknown
FROM rows r
{latest}
JOIN messages m ON m.row_key = {key}
WHERE r.parts > 1
GROUP BY r.position
ORDER BY r.position
"""


MULTI_SQL = multi_sql()
