"""Which receiver instance owns which journal: instance ids, journal files, owner locks.

Several receivers (processes on one machine, or machines sharing a filesystem) may serve
one log directory behind a load balancer. Each writes its own journal::

    LOGDIR/_journal/<instance>.db       the instance's SQLite journal (WAL)
    LOGDIR/_journal/<instance>.owner    its owner lock, and the host that holds it

and holds the owner lock (``flock``) for as long as it runs. The kernel drops a lock
when its process dies, however it dies, so a journal whose lock can be taken has no live
writer: compaction (:mod:`.store`) then *adopts* it: takes the lock, moves its rows
into parquet and lets it go. A journal is thus only ever written by one process, and
opened from another machine only while nobody holds it (SQLite's WAL needs every process
that opens a live database on one machine).

Instance ids. ``instance="NAME"`` (``--instance NAME``) names one: its journal is
``NAME.db``, and a restart with the same name continues it (waiting while a compaction
of it runs elsewhere). A receiver started without a name takes the first journal nobody
holds among ``events`` (the journal a single receiver has always used) and the
``auto-*`` ones, and when every one is held, a new ``auto-<host>-<pid>-<random>``: a
restarted receiver continues its own journal or one another unnamed receiver left, and
there are never more unnamed journals than unnamed receivers that ran at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError

__all__ = [
    "AUTO_PREFIX",
    "DEFAULT_INSTANCE",
    "OwnerLock",
    "check_instance",
    "claim",
    "held_here",
    "journal_path",
    "journals",
    "owner_path",
    "readable",
    "try_flock",
    "unflock",
]

#: the journal of a receiver started without a name, when nobody holds it
DEFAULT_INSTANCE = "events"
#: ids derived for unnamed receivers begin so (and names given cannot)
AUTO_PREFIX = "auto-"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HOST = socket.gethostname()
_POLL = 0.05


if sys.platform == "win32":  # pragma: no cover - no flock: exclusive within the process
    _IN_PROCESS: set[int] = set()
    _IN_PROCESS_LOCK = threading.Lock()
    _FD_KEYS: dict[int, int] = {}

    def try_flock(fd: int) -> bool:
        """Take the lock of the file open as ``fd`` without waiting; False if held."""
        key = os.fstat(fd).st_ino
        with _IN_PROCESS_LOCK:
            if key in _IN_PROCESS:
                return False
            _IN_PROCESS.add(key)
            _FD_KEYS[fd] = key
            return True

    def unflock(fd: int) -> None:
        """Release the lock taken on ``fd``."""
        with _IN_PROCESS_LOCK:
            _IN_PROCESS.discard(_FD_KEYS.pop(fd, -1))

else:
    import fcntl

    def try_flock(fd: int) -> bool:
        """Take the lock of the file open as ``fd`` without waiting; False if held."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def unflock(fd: int) -> None:
        """Release the lock taken on ``fd``."""
        fcntl.flock(fd, fcntl.LOCK_UN)


def check_instance(name: object) -> str:
    """``name`` if it can name an instance (letters, digits, ``_.-``; up to 64), else raise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InputError(
            f"instance must be 1-64 letters, digits, '_', '.' or '-' (not first), got {name!r}"
        )
    if name.startswith(AUTO_PREFIX):
        raise InputError(f"instance names beginning with {AUTO_PREFIX!r} are derived ones")
    return name


def journal_path(logdir: str | os.PathLike[str], instance: str = DEFAULT_INSTANCE) -> Path:
    """Path of ``instance``'s SQLite journal inside ``logdir``."""
    return Path(logdir) / "_journal" / f"{instance}.db"


def owner_path(journal: Path) -> Path:
    """The owner lock file of a journal."""
    return journal.with_suffix(".owner")


def journals(logdir: str | os.PathLike[str]) -> list[Path]:
    """Every instance's journal in ``logdir`` (sorted by name)."""
    folder = Path(logdir) / "_journal"
    try:
        return sorted(p for p in folder.glob("*.db") if _NAME.fullmatch(p.stem))
    except OSError:
        return []


class OwnerLock:
    """An owner lock held on a journal (see :func:`claim` and :meth:`take`)."""

    def __init__(self, journal: Path, fd: int) -> None:
        self.journal = journal
        self._fd: int | None = fd
        #: held while this process uses the journal on the lock's strength
        self.in_use = threading.Lock()

    @classmethod
    def take(cls, journal: Path, timeout: float = 0.0) -> OwnerLock | None:
        """Take ``journal``'s owner lock, waiting up to ``timeout`` s; None if still held."""
        path = owner_path(journal)
        deadline = time.monotonic() + timeout
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            if try_flock(fd):
                try:  # the lock of the file at the path now, not of one removed meanwhile
                    here, there = os.fstat(fd), os.stat(path)
                    if (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino):
                        return cls(journal, fd)
                except FileNotFoundError:
                    pass
                unflock(fd)
            os.close(fd)
            if time.monotonic() >= deadline:
                return None
            time.sleep(_POLL)

    def sign(self) -> None:
        """Write this host's name in the lock file: readers elsewhere keep off (above)."""
        assert self._fd is not None
        # Written over the old name, then cut: a reader meanwhile sees a whole first line.
        line = f"{_HOST}\n".encode()
        os.pwrite(self._fd, line, 0)
        os.ftruncate(self._fd, len(line))

    def release(self) -> None:
        """Let the journal go (after any use of it in this process ends)."""
        with self.in_use:
            with _REGISTRY_LOCK:
                if _REGISTRY.get(_key(self.journal)) is self:
                    del _REGISTRY[_key(self.journal)]
            if self._fd is not None:
                unflock(self._fd)
                os.close(self._fd)
                self._fd = None


#: journals written by a receiver of this process: its compaction may move their rows
_REGISTRY: dict[str, OwnerLock] = {}
_REGISTRY_LOCK = threading.Lock()


def _key(journal: Path) -> str:
    return str(journal.resolve())


def _owned(lock: OwnerLock) -> OwnerLock:
    lock.sign()
    with _REGISTRY_LOCK:
        _REGISTRY[_key(lock.journal)] = lock
    return lock


def claim(
    logdir: str | os.PathLike[str], instance: str | None, *, timeout: float = 60.0
) -> tuple[str, OwnerLock]:
    """Become the writer of a journal in ``logdir`` (its ``_journal`` folder must exist).

    Parameters
    ----------
    instance : str or None
        A name (its journal, waiting up to ``timeout`` s for its lock), or None: the
        first journal nobody holds among ``events`` and ``auto-*``, else a new one.

    Returns
    -------
    (str, OwnerLock)
        The instance id and its lock, held until :meth:`OwnerLock.release`.

    Raises
    ------
    InputError
        A named instance whose journal another live process holds.
    """
    if instance is not None:
        name = check_instance(instance)
        lock = OwnerLock.take(journal_path(logdir, name), timeout)
        if lock is None:
            raise InputError(
                f"the receiver instance {name!r} is already running on {str(logdir)!r}; "
                "give each receiver of a directory its own --instance"
            )
        return name, _owned(lock)
    unnamed = [DEFAULT_INSTANCE] + [
        p.stem for p in journals(logdir) if p.stem.startswith(AUTO_PREFIX)
    ]
    for name in unnamed:
        lock = OwnerLock.take(journal_path(logdir, name))
        if lock is not None:
            return name, _owned(lock)
    host = re.sub(r"[^A-Za-z0-9.-]", "-", _HOST)[:32].strip(".-") or "host"
    while True:  # a fresh name: free unless the same random suffix was drawn
        name = f"{AUTO_PREFIX}{host}-{os.getpid()}-{secrets.token_hex(3)}"
        lock = OwnerLock.take(journal_path(logdir, name))
        if lock is not None:
            return name, _owned(lock)


@contextlib.contextmanager
def held_here(journal: Path) -> Iterator[bool]:
    """Whether a receiver of this process writes ``journal``; it stays so inside."""
    with _REGISTRY_LOCK:
        lock = _REGISTRY.get(_key(journal))
    if lock is None:
        yield False
        return
    with lock.in_use:
        yield lock._fd is not None


def _owner_host(journal: Path) -> str | None:
    try:
        text = owner_path(journal).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    lines = text.splitlines()
    return lines[0].strip() or None if lines else None


@contextlib.contextmanager
def readable(journal: Path) -> Iterator[bool]:
    """Whether this process may open ``journal`` to read it now; it stays so inside.

    Yes when its last owner signed on this host (SQLite's WAL serves every process of a
    machine), or when nobody holds it (then its lock is held meanwhile). No while a
    process of another machine (or one not signed yet) holds it: its rows are read
    once compacted.
    """
    if _owner_host(journal) == _HOST:
        yield True
        return
    lock = OwnerLock.take(journal)
    if lock is None:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
