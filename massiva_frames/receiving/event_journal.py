"""The durable log: callbacks land in SQLite (WAL, synchronous=FULL) before they are answered.

One writer thread does group commit: each request thread queues its event with a ticket
and waits; the writer takes everything queued (up to ``max_batch``), inserts it in one
transaction, commits (one fsync for the whole group), then releases every ticket. Only
then does the receiver answer 200. The compactor (:mod:`.store`) later moves committed
rows into the parquet dataset and deletes them here.

Each receiver instance writes its own journal, ``LOGDIR/_journal/<instance>.db``
(``events.db`` for a single receiver; :mod:`.instances` says who owns which); the leading
underscore keeps pyarrow's dataset discovery away from them. Readers take every
instance's journal.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from .fields import INBOUND_FIELDS, KINDS, STATUS_FIELDS
from .instances import claim, journal_path, journals, readable

__all__ = [
    "COLUMNS",
    "DurableLog",
    "NullLog",
    "StorageUnavailable",
    "connect_journal",
    "is_durable",
    "make_dirs",
    "journal_path",
    "pending_rows",
    "read_journal",
    "sync_dir",
]

logger = logging.getLogger("massiva_frames.receiving")

#: raw columns stored per kind, after ``seq``, ``received_us`` and ``event_key``
COLUMNS: dict[str, tuple[str, ...]] = {"status": STATUS_FIELDS, "inbound": INBOUND_FIELDS}

# seq is the rowid: max(seq) + 1 for a new row. Compaction deletes only rows with
# seq <= the last one it read, and while those exist every new row gets a larger seq, so
# AUTOINCREMENT (an extra page written per commit) is not needed.
_SCHEMA = "".join(
    f"CREATE TABLE IF NOT EXISTS {kind} (seq INTEGER PRIMARY KEY, "
    f"received_us INTEGER NOT NULL, event_key TEXT NOT NULL, "
    + ", ".join(f"{c} TEXT" for c in cols)
    + ");\n"
    for kind, cols in COLUMNS.items()
)
_INSERT = {
    kind: f"INSERT INTO {kind} (received_us, event_key, {', '.join(cols)}) "
    f"VALUES ({', '.join('?' * (len(cols) + 2))})"
    for kind, cols in COLUMNS.items()
}

#: received_us, event_key, then the raw values of COLUMNS[kind]
Row = tuple[int | str | None, ...]


class StorageUnavailable(Exception):
    """The event could not be stored durably (the receiver answers 503: retry later)."""


def sync_dir(path: Path) -> None:
    """fsync a directory: the names created or renamed in it survive a power cut."""
    if os.name == "nt":  # pragma: no cover - a directory cannot be opened for fsync there
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each new entry synced in its parent."""
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
        sync_dir(path.parent)  # a new directory is lost with its parent's entry


def connect_journal(path: Path, *, create: bool = False) -> sqlite3.Connection:
    """Open the journal read-write (creating it when ``create``), WAL and synchronous=FULL."""
    if create:
        make_dirs(path.parent)  # SQLite syncs the entries of its own files in it
    elif not path.exists():
        raise FileNotFoundError(str(path))
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk (WAL fsync'd) when COMMIT returns; batching many
        # callbacks per commit (group commit) keeps that cheap.
        conn.execute("PRAGMA synchronous=FULL")
        if create:
            conn.executescript(_SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def is_durable(conn: sqlite3.Connection) -> bool:
    """Whether a commit on ``conn`` is on disk when it returns (WAL, synchronous FULL/EXTRA)."""
    sync = int(conn.execute("PRAGMA synchronous").fetchone()[0])
    mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    return sync >= 2 and mode == "wal"


def _connect_reader(path: Path) -> sqlite3.Connection | None:
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0, check_same_thread=False
        )
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return conn
    except sqlite3.OperationalError:
        # A WAL database with no -shm file next to it cannot always be opened read-only;
        # a plain connection only reads here.
        return connect_journal(path)


def _each_journal(logdir: str | Path) -> Iterator[sqlite3.Connection]:
    """A reading connection to each instance's journal this process may open now."""
    for path in journals(logdir):
        with readable(path) as allowed:
            if not allowed:
                continue  # live on another machine: read once compacted
            try:
                conn = _connect_reader(path)
            except FileNotFoundError:
                conn = None
            if conn is None:
                continue
            try:
                yield conn
            finally:
                conn.close()


def read_journal(logdir: str | Path, kind: str) -> list[Row]:
    """Every committed, not yet compacted row of ``kind``: each instance's journal in
    turn, each in arrival order."""
    cols = ", ".join(COLUMNS[kind])
    rows: list[Row] = []
    for conn in _each_journal(logdir):
        try:
            rows += conn.execute(
                f"SELECT received_us, event_key, {cols} FROM {kind} ORDER BY seq"
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):  # created, the schema not yet committed
                raise
    return rows


def pending_rows(logdir: str | Path) -> int:
    """How many committed events wait for compaction, in every instance's journal."""
    total = 0
    for conn in _each_journal(logdir):
        try:
            total += sum(
                int(conn.execute(f"SELECT count(*) FROM {k}").fetchone()[0]) for k in KINDS
            )
        except sqlite3.OperationalError:
            pass
    return total


class _Ticket:
    """One queued event; ``done`` is held until the writer has committed (or failed) it."""

    __slots__ = ("done", "error", "kind", "row")

    def __init__(self, kind: str, row: Row) -> None:
        self.kind = kind
        self.row = row
        self.error: str | None = None
        self.done = threading.Lock()
        self.done.acquire()


class NullLog:
    """Answers without storing: only for measuring the HTTP ceiling (``store=False``)."""

    durable = False
    instance = ""
    stored = 0
    commits = 0
    failures = 0
    last_error: str | None = None

    def write(self, kind: str, values: Sequence[str | None], *, key: str, received_us: int) -> None:
        """Accept and forget the event."""

    def queued(self) -> int:
        """Always 0."""
        return 0

    def close(self, timeout: float = 30.0) -> None:
        """Nothing to close."""


class DurableLog:
    """The group-commit writer over this instance's SQLite journal in ``logdir``.

    Parameters
    ----------
    logdir : str or Path
        The callback log directory.
    instance : str or None
        The instance's name, or None for the first journal no live receiver holds
        (see :mod:`.instances`). Its owner lock is held until :meth:`close`.
    claim_timeout : float
        Seconds to wait for a named instance's journal (a compaction elsewhere may hold
        it a moment); then ``InputError``: another live receiver has that name.
    max_batch : int
        Most events committed in one transaction.
    wait_timeout : float
        Longest a request waits for its commit before it is answered 503.

    Examples
    --------
    >>> log = DurableLog(tmp)  # doctest: +SKIP
    >>> log.write("inbound", ["Hola", "584121234567", None, None], key=k, received_us=t)
    >>> log.close()
    """

    def __init__(
        self,
        logdir: str | Path,
        *,
        instance: str | None = None,
        claim_timeout: float = 60.0,
        max_batch: int = 2000,
        wait_timeout: float = 30.0,
    ) -> None:
        make_dirs(Path(logdir) / "_journal")
        self.instance, self._owner = claim(logdir, instance, timeout=claim_timeout)
        #: this instance's journal file
        self.path = journal_path(logdir, self.instance)
        try:
            self._conn = connect_journal(self.path, create=True)
        except BaseException:
            self._owner.release()
            raise
        #: read back from the live connection: the WAL is synced at every commit
        self.durable = is_durable(self._conn)
        if not self.durable:
            logger.warning("the callback journal is not synced at every commit")
        self._max_batch = max_batch
        self._wait_timeout = wait_timeout
        self._queue: queue.SimpleQueue[_Ticket | None] = queue.SimpleQueue()
        self._closed = False
        self.stored = 0
        self.commits = 0
        self.failures = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(
            target=self._run, name="massiva-callbacks-writer", daemon=True
        )
        self._thread.start()

    def write(self, kind: str, values: Sequence[str | None], *, key: str, received_us: int) -> None:
        """Store one event durably; returns only once it is committed.

        Raises
        ------
        StorageUnavailable
            The commit failed, timed out, or the log is closing.
        """
        if self._closed:
            raise StorageUnavailable("the receiver is shutting down")
        ticket = _Ticket(kind, (received_us, key, *values))
        self._queue.put(ticket)
        if not ticket.done.acquire(timeout=self._wait_timeout):
            raise StorageUnavailable("timed out waiting for the durable write")
        if ticket.error is not None:
            raise StorageUnavailable(ticket.error)

    def queued(self) -> int:
        """Events waiting for the writer."""
        return self._queue.qsize()

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
        # Anything queued after the stop sentinel is refused (the server is drained first,
        # so this is only a request racing the shutdown).
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item.error = "the receiver is shutting down"
                item.done.release()

    def _commit(self, batch: list[_Ticket]) -> None:
        by_kind: dict[str, list[Row]] = {}
        for ticket in batch:
            by_kind.setdefault(ticket.kind, []).append(ticket.row)
        error: str | None = None
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for kind, rows in by_kind.items():
                self._conn.executemany(_INSERT[kind], rows)
            self._conn.execute("COMMIT")
            self.stored += len(batch)
            self.commits += 1
            self.last_error = None
        except Exception as exc:  # disk full, I/O error, locked: the caller answers 503
            error = f"storage failed: {type(exc).__name__}"
            self.failures += 1
            self.last_error = error
            logger.error("could not commit %d callback(s): %s", len(batch), exc)
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        for ticket in batch:
            ticket.error = error
            ticket.done.release()

    def close(self, timeout: float = 30.0) -> None:
        """Commit everything queued, stop the writer and close the journal."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._conn.close()
            # Only now may another process write or adopt the journal; a writer still
            # running keeps it held until the process ends.
            self._owner.release()
