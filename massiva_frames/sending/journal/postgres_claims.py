"""Many workers on one PostgreSQL journal: workers and their leases, claims, recovery.

Any number of processes, on any number of hosts, may send from one journal at once. Each
is a *worker* (:meth:`Claims.lock` registers it in ``workers``) with a *lease*: a time,
by the database's clock, until which its claims hold. A thread renews the lease every
second on a connection of its own, whose session also holds an advisory lock keyed to
the worker: the server releases that lock when the session ends, so a worker whose
process died (even by ``SIGKILL``) is known to be gone a few seconds later, without
waiting for its lease to expire.

- **claims**: a worker sends only messages it has claimed (``messages.claimed_by``):
  the ones its send added, or the pending ones it takes with ``SELECT ... FOR UPDATE
  SKIP LOCKED`` (a message another worker is claiming at that moment is skipped, never
  waited for). Before taking any, it waits until no live worker holds claims or
  batches in flight, so a second send of the same frame sends nothing twice and reads
  complete results once the first is done.
- **in flight**: a batch is committed ``inflight`` with its worker and lease before its
  request, by one statement that first renews the worker's lease and checks its claims
  (a worker whose lease was taken over sends nothing more).
- **recovery** (:meth:`Claims.recover`): the batches in flight of a worker that is gone
  (lease expired, or session ended and no heartbeat for a few seconds) become
  ``unknown``, never resent automatically; its other claims are released.
- **batch numbers**: each worker reserves the numbers it may use, so two workers never
  number two requests alike.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ...errors import JournalBusyError
from ..results import REASON_PROCESS_STOPPED
from .postgres_connection import LOCK_BATCHES, PostgresConnection
from .postgres_schema import FLYING_IDS, NOW_US

if TYPE_CHECKING:
    import psycopg

# Internal to the PostgreSQL journal (massiva_frames.sending.journal.postgres).
__all__ = ["Claims", "bigints", "texts"]

logger = logging.getLogger("massiva_frames.sending.campaign")

#: the advisory lock class a worker's session holds while it lives (second key: its own)
LOCK_WORKER = 0x4D460004
#: seconds between heartbeats (and the lease's renewals)
BEAT = 1.0
#: a worker whose session lock is gone and whose last heartbeat is older than this
#: (µs) is gone: it covers a server restart, after which every live worker takes its
#: lock again within a heartbeat or two.
GRACE_US = 5_000_000

_API_STOPPED = "the sending process stopped during the request; the messages may have been sent"

# A worker is gone when its lease expired, or when its session ended (its lock is free)
# and it has not renewed its lease for GRACE_US.
_GONE = f"""(w.lease_until < {NOW_US} OR (w.beat_at < {NOW_US} - {GRACE_US} AND NOT EXISTS (
    SELECT 1 FROM pg_locks AS l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid = {LOCK_WORKER}::oid AND l.objid = w.lock_key::oid)))"""

# The in-flight batches of workers that are gone (or of none: a copied journal) become
# unknown, and so do their messages, still pending in their rows (the time of the
# request as their sent_at; 'inflight' rows come from journals of massiva-frames 0.1.0).
_RECOVER = """
WITH gone AS (
    UPDATE batches AS b SET state = 'unknown', detail = %(reason)s
    WHERE b.state = 'inflight' AND (b.worker IS NULL OR b.worker = ANY(%(dead)s)
          OR NOT EXISTS (SELECT 1 FROM workers AS w WHERE w.id = b.worker))
    RETURNING b.number, b.requested_at, b.ids
)
UPDATE messages AS m SET state = 'unknown', reason = %(reason)s, api_message = %(api)s,
       sent_at = g.requested_at, batch = g.number, claimed_by = NULL
FROM gone AS g
WHERE m.id = ANY(g.ids) AND m.state IN ('pending', 'inflight')
"""

# Messages a live worker other than this one has claimed or has in flight.
_BUSY = """
SELECT (SELECT COUNT(*) FROM messages AS m JOIN workers AS w ON w.id = m.claimed_by
        WHERE m.state = 'pending' AND m.claimed_by <> %(me)s)
     + (SELECT COALESCE(SUM(n_messages), 0) FROM batches
        WHERE state = 'inflight' AND worker IS DISTINCT FROM %(me)s)
"""

# Claim every pending message no live worker holds and no request carries; skip those
# being claimed right now.
_CLAIM = f"""
UPDATE messages SET claimed_by = %(me)s WHERE id IN (
    SELECT m.id FROM messages AS m
    WHERE m.state = 'pending' AND (m.claimed_by IS NULL
          OR NOT EXISTS (SELECT 1 FROM workers AS w WHERE w.id = m.claimed_by))
      AND m.id NOT IN ({FLYING_IDS})
    FOR UPDATE SKIP LOCKED)
"""

# The same without claims, for a journal opened without lock() (no worker).
_LAUNCH_UNCLAIMED = """
INSERT INTO batches (number, state, n_messages, method, requested_at, ids)
SELECT u.number, 'inflight', cardinality(u.ids::bigint[]), u.method, u.at, u.ids::bigint[]
FROM unnest(%(numbers)s::bigint[], %(methods)s::text[], %(ats)s::bigint[],
            %(ids)s::text[]) AS u(number, method, at, ids)
ON CONFLICT (number) DO NOTHING
RETURNING number
"""

# Batches in flight, in one statement: the worker's lease renewed (none: it was taken
# over), its claims on every message checked, one row per batch. An empty result is a
# refusal; nothing was written.
_LAUNCH = f"""
WITH w AS (
    UPDATE workers SET lease_until = {NOW_US} + %(lease)s
    WHERE id = %(me)s AND lease_until > {NOW_US}
    RETURNING lease_until
), mine AS (
    SELECT COUNT(*) AS n FROM messages
    WHERE id = ANY(%(all)s::bigint[]) AND claimed_by = %(me)s AND state = 'pending'
)
INSERT INTO batches (number, state, n_messages, method, requested_at, ids, worker, lease_until)
SELECT u.number, 'inflight', cardinality(u.ids::bigint[]), u.method, u.at, u.ids::bigint[],
       %(me)s, w.lease_until
FROM w, mine, unnest(%(numbers)s::bigint[], %(methods)s::text[], %(ats)s::bigint[],
                     %(ids)s::text[]) AS u(number, method, at, ids)
WHERE mine.n = cardinality(%(all)s::bigint[])
ON CONFLICT (number) DO NOTHING
RETURNING number
"""


def bigints(values: Iterable[int | None]) -> str:
    """A ``bigint[]`` literal (``{1,NULL,3}``), cast by the statement: cheaper to send than
    a list, which psycopg adapts element by element."""
    return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"


def texts(values: Iterable[str | None]) -> str:
    """A ``text[]`` literal (``{"a","b",NULL}``), each element quoted and escaped."""
    quoted = (
        "NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for v in values
    )
    return "{" + ",".join(quoted) + "}"


class Heartbeat:
    """Renews a worker's lease every :data:`BEAT` seconds on a connection of its own,
    whose session holds the worker's advisory lock. ``lost`` is set when the lease was
    taken over (the worker must send nothing more)."""

    def __init__(self, journal: Claims, worker: str, key: int) -> None:
        self._journal = journal
        self._worker = worker
        self._key = key
        self._stop = threading.Event()
        self.lost = False
        self._conn: psycopg.Connection[Any] | None = self._connect()
        self._thread = threading.Thread(
            target=self._loop, name="massiva-journal-lease", daemon=True
        )
        self._thread.start()

    def _connect(self) -> psycopg.Connection[Any]:
        conn = self._journal._open_connection()
        conn.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_WORKER, self._key))
        return conn

    def _beat(self, conn: psycopg.Connection[Any]) -> None:
        lease = int(self._journal.location.lease * 1_000_000)
        with conn.transaction():
            cur = conn.execute(
                f"UPDATE workers SET beat_at = {NOW_US}, lease_until = {NOW_US} + %s "
                f"WHERE id = %s AND lease_until > {NOW_US}",
                (lease, self._worker),
            )
            if cur.rowcount != 1:
                self.lost = True
                return
            conn.execute(
                f"UPDATE batches SET lease_until = {NOW_US} + %s "
                "WHERE worker = %s AND state = 'inflight'",
                (lease, self._worker),
            )

    def _loop(self) -> None:
        while not self._stop.wait(BEAT) and not self.lost:
            try:
                if self._conn is None:
                    self._conn = self._connect()
                self._beat(self._conn)
            except Exception:  # the database is away (pg.Error, OSError): try again
                conn, self._conn = self._conn, None
                if conn is not None:
                    PostgresConnection._close_quietly(conn)

    def stop(self) -> None:
        """Stop renewing; closing the connection releases the session's lock."""
        self._stop.set()
        self._thread.join(10)
        if self._conn is not None:
            PostgresConnection._close_quietly(self._conn)
            self._conn = None


class Claims(PostgresConnection):
    """Workers, leases, claims and recovery of a PostgreSQL journal (see the module)."""

    def __init__(self, journal: str, *, readonly: bool = False) -> None:
        super().__init__(journal, readonly=readonly)
        #: this process's worker id once it sends (:meth:`lock`)
        self.worker: str | None = None
        self._heartbeat: Heartbeat | None = None

    # -- the worker --

    def lock(self) -> None:
        """Register this process as a worker of the journal and start renewing its lease.

        Unlike the SQLite journal's lock, this one is shared: any number of workers may
        send from the journal at once (claims keep them apart).
        """
        if self.worker is not None or self.readonly:
            return
        worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        key = secrets.randbelow(2**31 - 2) + 1
        lease = int(self.location.lease * 1_000_000)

        def register(conn: psycopg.Connection[Any]) -> None:
            conn.execute(
                "INSERT INTO workers (id, host, pid, lock_key, started_at, beat_at, lease_until) "
                f"VALUES (%s, %s, %s, %s, {NOW_US}, {NOW_US}, {NOW_US} + %s)",
                (worker, socket.gethostname(), os.getpid(), key, lease),
            )

        self._run(register, doing="registering a worker")
        self.worker = worker
        self._heartbeat = Heartbeat(self, worker, key)

    def close(self) -> None:
        """Release this worker's claims, unregister it, stop its lease; close."""
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        if self.worker is not None and not self._lost():
            me = self.worker
            try:
                with self.transaction() as conn:
                    conn.execute(
                        "UPDATE messages SET claimed_by = NULL "
                        "WHERE claimed_by = %s AND state = 'pending'",
                        (me,),
                    )
                    # Batches still in flight (their answers could not be written) are
                    # recovered by the next worker: this one is gone.
                    conn.execute("DELETE FROM workers WHERE id = %s", (me,))
            except Exception:  # noqa: S110 - closing: the database may be gone
                pass
        self.worker = None
        super().close()

    def _check_lease(self, conn: psycopg.Connection[Any]) -> None:
        """Renew this worker's lease, or raise if it was taken over (inside a write)."""
        if self.worker is None:
            return
        lease = int(self.location.lease * 1_000_000)
        cur = conn.execute(
            f"UPDATE workers SET lease_until = {NOW_US} + %s "
            f"WHERE id = %s AND lease_until > {NOW_US}",
            (lease, self.worker),
        )
        lost = self._heartbeat is not None and self._heartbeat.lost
        if cur.rowcount != 1 or lost:
            raise JournalBusyError(
                f"journal {self.path}: this worker's lease expired and its messages were "
                "taken over by another worker; nothing more is sent from here"
            )

    # -- recovery --

    def _recover(self, conn: psycopg.Connection[Any]) -> int:
        dead = [
            str(r[0])
            for r in conn.execute(
                f"SELECT w.id FROM workers AS w WHERE {_GONE} FOR UPDATE SKIP LOCKED"
            ).fetchall()
        ]
        cur = conn.execute(
            _RECOVER, {"reason": REASON_PROCESS_STOPPED, "api": _API_STOPPED, "dead": dead}
        )
        recovered = max(cur.rowcount, 0)
        if dead:
            conn.execute(
                "UPDATE messages SET claimed_by = NULL "
                "WHERE state = 'pending' AND claimed_by = ANY(%s)",
                (dead,),
            )
            conn.execute("DELETE FROM workers WHERE id = ANY(%s)", (dead,))
        return recovered

    def recover(self) -> int:
        """Turn the batches in flight of workers that are gone into ``unknown``.

        A worker is gone once its lease has expired, or once its session ended and it
        has not renewed its lease for a few seconds. Their requests may have reached
        the provider (docs/protocol.md §5): their messages become ``unknown`` and are never
        resent automatically; the messages they had only claimed are released. Returns
        the number of messages made ``unknown``.
        """
        if self.readonly or not self.exists:
            return 0
        return self._run(self._recover, doing="recovering")

    # -- claims --

    def _release(self, conn: psycopg.Connection[Any], ids: Sequence[int] | None = None) -> None:
        """Give back this worker's claims (on ``ids``, or all its pending ones)."""
        if self.worker is None:
            return
        if ids is None:
            conn.execute(
                "UPDATE messages SET claimed_by = NULL WHERE claimed_by = %s AND state = 'pending'",
                (self.worker,),
            )
        elif len(ids):
            conn.execute(
                "UPDATE messages SET claimed_by = NULL "
                "WHERE id = ANY(%s::bigint[]) AND claimed_by = %s",
                (list(ids), self.worker),
            )

    def _await_others(self) -> None:
        """Wait while another live worker holds claims or batches in flight here.

        Each look first recovers the workers that are gone, so the wait ends when the
        others finish, or a few seconds after they die (their lease at the latest).
        """
        if self.worker is None:
            return
        me = self.worker

        def look(conn: psycopg.Connection[Any]) -> int:
            self._recover(conn)
            row = conn.execute(_BUSY, {"me": me}).fetchone()
            return int(row[0]) if row else 0

        self._run(self._release)
        told = False
        while busy := self._run(look, doing="waiting for other workers"):
            if not told:
                logger.info(
                    "journal %s: waiting for %d messages another worker has claimed or in flight",
                    self.path,
                    busy,
                )
                told = True
            time.sleep(0.2)

    def _claim_pending(self) -> None:
        """After the others are done: claim every pending message no live worker holds."""
        if self.worker is None:
            return
        self._await_others()
        me = self.worker
        self._run(lambda c: c.execute(_CLAIM, {"me": me}), doing="claiming messages")

    def _mine(self) -> str:
        """SQL condition: a pending message this worker may send (all, when not a worker)."""
        return "TRUE" if self.worker is None else "m.claimed_by = %(me)s"

    # -- batch numbers --

    def next_batch_number(self) -> int:
        """The first of the batch numbers this worker reserves: one per message it has
        claimed (a batch holds at least one), after every number used or reserved by a
        live worker. Sequential runs number their batches without gaps."""

        def reserve(conn: psycopg.Connection[Any]) -> int:
            self._advisory(LOCK_BATCHES)
            row = conn.execute(
                "SELECT GREATEST((SELECT COALESCE(MAX(number), 0) FROM batches), "
                "(SELECT COALESCE(MAX(batch_last), 0) FROM workers WHERE id IS DISTINCT FROM %s))",
                (self.worker,),
            ).fetchone()
            first = int(row[0] if row else 0) + 1
            if self.worker is not None:
                count = conn.execute(
                    "SELECT COUNT(*) FROM messages WHERE claimed_by = %s AND state = 'pending'",
                    (self.worker,),
                ).fetchone()
                n = int(count[0]) if count else 0
                conn.execute(
                    "UPDATE workers SET batch_first = %s, batch_last = %s WHERE id = %s",
                    (first, first + n - 1 if n else None, self.worker),
                )
            return first

        return self._run(reserve, doing="reserving batch numbers")

    # -- in flight --

    def _launch(
        self,
        conn: psycopg.Connection[Any],
        launched: Sequence[tuple[int, Sequence[int], str, int]],
    ) -> None:
        """Commit batches in flight (inside a write): one statement (:data:`_LAUNCH`).
        Run again after a lost connection, it finds its batches written and passes."""
        if not launched:
            return
        batches = [(int(n), [int(i) for i in ids], str(m), int(at)) for n, ids, m, at in launched]
        numbers = [b[0] for b in batches]
        # The values inline, as for a turn's outcomes (postgres._ANSWER).
        rows = (
            self._pg.ClientCursor(conn)
            .execute(
                _LAUNCH if self.worker is not None else _LAUNCH_UNCLAIMED,
                {
                    "me": self.worker,
                    "lease": int(self.location.lease * 1_000_000),
                    "all": bigints(i for b in batches for i in b[1]),
                    "numbers": bigints(numbers),
                    "methods": [b[2] for b in batches],
                    "ats": bigints(b[3] for b in batches),
                    "ids": [bigints(b[1]) for b in batches],
                },
            )
            .fetchall()
        )
        if len(rows) == len(batches):
            return
        # Nothing written: a lease taken over, claims lost, or (run again) written before.
        found = conn.execute(
            "SELECT number, worker, ids FROM batches WHERE number = ANY(%s::bigint[])",
            (numbers,),
        ).fetchall()
        ours = {int(n): list(ids or []) for n, w, ids in found if w == self.worker}
        if all(ours.get(n) == ids for n, ids, _, _ in batches):
            return
        self._check_lease(conn)
        raise JournalBusyError(
            f"journal {self.path}: the messages of batch {numbers[0]} are no longer this "
            "worker's to send (another worker took them over); the batch was not sent"
        )
