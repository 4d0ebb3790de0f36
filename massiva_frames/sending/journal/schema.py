"""The send journal's SQL: its schema, the request loop's one-statement turn, and the
queries that read the results frame back (see :mod:`massiva_frames.sending.journal.sqlite`
for the tables, :mod:`.outbox` and :mod:`.writes` for their use).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..results import ENCODINGS, JOURNAL_STATES

# Internal to the SQLite journal (its outbox and writes; effective_state too, imported by name).
__all__ = [
    "ATTEMPTS_INDEX",
    "FLYING_IDS",
    "MULTI_SQL",
    "OUTCOMES_SQL",
    "RESULTS_SQL",
    "SCHEMA",
    "TURN_SQL",
    "multi_sql",
    "results_sql",
]


SCHEMA = """
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
    id INTEGER PRIMARY KEY,
    row_key TEXT NOT NULL,
    part INTEGER NOT NULL,
    phone TEXT NOT NULL,
    text TEXT NOT NULL,
    campaign TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    send_at INTEGER,
    batch INTEGER,
    message_id INTEGER,
    sid TEXT,
    request_status INTEGER,
    api_message TEXT,
    sent_at INTEGER,
    created_at INTEGER NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1,
    first_key TEXT,
    UNIQUE (row_key, part)
);
CREATE TABLE IF NOT EXISTS batches (
    number INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    n_messages INTEGER NOT NULL,
    method TEXT,
    requested_at INTEGER NOT NULL,
    answered_at INTEGER,
    request_status INTEGER,
    detail TEXT,
    ids TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    summary TEXT
);
"""


# A follow-up send (massiva_frames.sending.resending) adds attempt N >= 2 of a row as new
# messages keyed "<first key>#N" with first_key the row's key: the index finds a row's
# latest attempt, and holds nothing for first attempts (the common case costs nothing).
# Journals written before attempts existed get both columns and the index when opened for
# writing (connection.migrate_attempts).
ATTEMPTS_INDEX = (
    "CREATE INDEX IF NOT EXISTS messages_attempts ON messages (first_key, attempt) "
    "WHERE attempt > 1"
)


# The ids of the messages whose request is under way: a batch is committed 'inflight'
# (with its ids) before its request, and its messages are written once, with the
# outcome. A message of such a batch still reads 'pending' in its own row; every reader
# takes its state from effective_state(). Journals written by 0.1.0 kept 'inflight'
# in the message rows; that value is still read and recovered.
FLYING_IDS = "SELECT x.value FROM batches AS b, json_each(b.ids) AS x WHERE b.state = 'inflight'"


def effective_state(alias: str = "m") -> str:
    """SQL for a message's state: ``inflight`` while its batch is in flight.

    ``IN (uncorrelated subquery)``: SQLite builds the set of in-flight ids once per
    statement (empty unless a request is under way or a process died during one).
    """
    return (
        f"CASE WHEN {alias}.state = 'pending' AND {alias}.id IN ({FLYING_IDS}) "
        f"THEN 'inflight' ELSE {alias}.state END"
    )


# A turn of the request loop in one statement: the outcomes of the batches that ended and
# the batches about to start, written by an INSTEAD OF trigger on a view that stores
# nothing. One statement is one transaction (autocommit), durable when it returns, and
# the sending thread crosses into SQLite once per turn instead of once per statement
# (each crossing hands the GIL to the request threads: 0.3-1 ms to get it back,
# measured). The JSON columns (see sqlite.Journal.write_turn):
#   done      [[number, batch_state, answered_at, request_status, detail], ...]
#   fates     [[state, reason, api_message, sent_at, request_status, batch], ...]
#   msgs      [[[id, message_id, sid], ...] for each fate]
#   inflight  [[number, method, requested_at, [id, ...]], ...]
# Shared fields are read once per fate (LIMIT -1 keeps that subquery materialized): JSON
# is never parsed once per message beyond the message's own [id, message_id, sid]. A
# batch about to start is one row in batches (its messages are not touched: see
# FLYING_IDS), so the commit a request waits for is small.
TURN_SQL = (
    """
CREATE TEMP VIEW IF NOT EXISTS journal_turn (done, fates, msgs, inflight) AS
    SELECT NULL, NULL, NULL, NULL WHERE 0
""",
    """
CREATE TEMP TRIGGER IF NOT EXISTS journal_turn_write INSTEAD OF INSERT ON journal_turn
BEGIN
    UPDATE batches SET state = json_extract(d.value, '$[1]'),
                       answered_at = json_extract(d.value, '$[2]'),
                       request_status = json_extract(d.value, '$[3]'),
                       detail = json_extract(d.value, '$[4]')
    FROM json_each(NEW.done) AS d
    WHERE batches.number = json_extract(d.value, '$[0]');
    UPDATE messages SET state = f.state, reason = f.reason, api_message = f.api_message,
                        sent_at = f.sent_at, request_status = f.request_status,
                        batch = CASE WHEN f.state = 'pending' THEN NULL ELSE f.batch END,
                        message_id = json_extract(t.value, '$[1]'),
                        sid = json_extract(t.value, '$[2]')
    FROM (SELECT key AS k,
                 json_extract(value, '$[0]') AS state,
                 json_extract(value, '$[1]') AS reason,
                 json_extract(value, '$[2]') AS api_message,
                 json_extract(value, '$[3]') AS sent_at,
                 json_extract(value, '$[4]') AS request_status,
                 json_extract(value, '$[5]') AS batch
          FROM json_each(NEW.fates) LIMIT -1) AS f,
         json_each(NEW.msgs, '$[' || f.k || ']') AS t
    WHERE messages.id = json_extract(t.value, '$[0]');
    INSERT INTO batches (number, state, n_messages, method, requested_at, ids)
    SELECT json_extract(i.value, '$[0]'), 'inflight', json_array_length(i.value, '$[3]'),
           json_extract(i.value, '$[1]'), json_extract(i.value, '$[2]'),
           json_extract(i.value, '$[3]')
    FROM json_each(NEW.inflight) AS i;
END
""",
)


def _batch(alias: str) -> str:
    """SQL for a message's batch: the in-flight batch's number while its request is under
    way (looked up only for those messages: the IN set is built once per statement)."""
    return (
        f"CASE WHEN {alias}.batch IS NULL AND {alias}.state = 'pending' "
        f"AND {alias}.id IN ({FLYING_IDS}) THEN (SELECT b.number FROM batches AS b, "
        f"json_each(b.ids) AS x WHERE b.state = 'inflight' AND x.value = {alias}.id) "
        f"ELSE {alias}.batch END"
    )


def _code(expr: str, values: Sequence[str], name: str, *, other: bool = True) -> str:
    """SQL for ``expr`` as its position in ``values``: -1 when NULL, ``len(values)`` else.

    Small integers cost far less to fetch than strings; with ``other``, values outside
    the list come in a second column, ``<name>_other`` (NULL for the listed ones).
    """
    cases = " ".join(f"WHEN '{v}' THEN {i}" for i, v in enumerate(values))
    listed = ", ".join(f"'{v}'" for v in values)
    code = f"CASE WHEN {expr} IS NULL THEN -1 ELSE CASE {expr} {cases} ELSE {len(values)} END END"
    if not other:
        return f"{code} AS {name}"
    rest = f"CASE WHEN {expr} IN ({listed}) THEN NULL ELSE {expr} END"
    return f"{code} AS {name}, {rest} AS {name}_other"


# A row's latest attempt (None when only its first was sent): its number and the first
# attempt's message_id, read from the attempts index alone (only rows sent again are in it).
_LATEST = """LEFT JOIN (SELECT a.first_key AS first_key, MAX(a.attempt) AS attempt,
       (SELECT f.message_id FROM messages AS f WHERE f.row_key = a.first_key AND f.part = 1)
           AS first_id
    FROM messages AS a WHERE a.attempt > 1 AND a.part = 1 GROUP BY a.first_key) AS t
  ON t.first_key = r.row_key"""

# The key of a row's latest attempt (mirrors sending.resending.attempt_key).
_LATEST_KEY = "CASE WHEN t.attempt IS NULL THEN r.row_key ELSE r.row_key || '#' || t.attempt END"


def results_sql(attempts: bool = True) -> str:
    """One row per input row, in order; message columns from the first part of each row's
    latest attempt. States and encodings come as small integer codes (see _code), the
    rest as stored. ``attempts=False``: for a journal read as written before attempts
    existed (read-only, not migrated), where every message is a first attempt.
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
SELECT COALESCE(r.phone, m.phone) AS phone, COALESCE(r.text, m.text) AS text,
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
FROM messages AS m WHERE m.id BETWEEN ? AND ? ORDER BY m.id
"""


def multi_sql(attempts: bool = True) -> str:
    """Rows split into several messages: how the parts of their latest attempt fared."""
    latest = _LATEST if attempts else ""
    key = _LATEST_KEY if attempts else "r.row_key"
    return f"""
SELECT r.position AS position,
       COUNT(*) AS n,
       SUM(m.state = 'accepted') AS n_accepted,
       SUM(m.state = 'rejected') AS n_rejected,
       SUM(m.state = 'cancelled') AS n_cancelled,
       SUM(({effective_state("m")}) IN ('unknown', 'inflight')) AS n_unknown
FROM rows r
{latest}
CROSS JOIN messages m ON m.row_key = {key}
WHERE r.parts > 1
GROUP BY r.position
ORDER BY r.position
"""


MULTI_SQL = multi_sql()
