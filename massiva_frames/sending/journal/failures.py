"""Why a SQLite journal could not be used, as one :class:`~massiva_frames.errors.JournalError`.

Every ``sqlite3`` error and every ``OSError`` of the journal's own files is translated
here, once, by SQLite's error code (``sqlite_errorcode``) or the ``errno``, never by its
message text: a full disk, a read-only file, folder or file system, a journal locked by
another process, a damaged journal, a file that is not a journal. Each message says what
happened and what to do; the original error is kept as ``__cause__``.
"""

from __future__ import annotations

import errno
import os
import sqlite3

from ...errors import (
    JournalBusyError,
    JournalCorruptError,
    JournalError,
    JournalFullError,
    JournalReadOnlyError,
    NotAJournalError,
)

# Internal to the SQLite journal (its connection, outbox and checks).
__all__ = [
    "JOURNAL_SIGNATURE",
    "busy",
    "corrupt",
    "full",
    "journal_error",
    "looks_like_journal",
    "not_a_journal",
    "read_only",
]

#: Bytes of the journal's schema text, stored in the file's first page: a file that holds
#: them is a journal even when SQLite can no longer read its header.
JOURNAL_SIGNATURE = b"row_key TEXT NOT NULL"

#: Below this much free space an I/O error on write is taken for a full disk (SQLite
#: reports ENOSPC itself as SQLITE_FULL; a quota or a nearly full disk gives IOERR).
_NEARLY_FULL = 1 << 20

_ROOM = (
    "What the journal recorded is kept: answers received before were written, and "
    "messages whose answer could not be written read 'unknown' on the next run and are "
    "never resent (resend_unknown=True opts in)."
)


def _name(path: str | None) -> str:
    return "(in memory)" if path is None else path


def full(path: str | None, cause: str = "") -> JournalFullError:
    """The disk (or the file size limit) holding the journal is full: ``cause`` says which."""
    return JournalFullError(
        f"journal {_name(path)} is full: {cause or 'the disk holding it is full'}. Free space "
        "there, or move the journal (with its -wal file) to a disk with room, and run the "
        "same call again. " + _ROOM,
        path=path,
    )


def read_only(path: str | None, detail: str = "") -> JournalReadOnlyError:
    """The journal's file, its folder or its file system cannot be written."""
    where = f" ({detail})" if detail else ""
    return JournalReadOnlyError(
        f"journal {_name(path)} cannot be written{where}: a send or dispatch records every "
        "request in it before making it, so nothing more was sent. Make the file and its "
        "folder writable (SQLite keeps its -wal and -shm files beside it) or copy the "
        "journal somewhere writable; results_from_journal reads it as it is.",
        path=path,
    )


def busy(path: str | None) -> JournalBusyError:
    """Another process holds the journal."""
    return JournalBusyError(
        f"journal {_name(path)} is in use by another send or dispatch (or a program holding "
        "it locked); wait for it to finish",
        path=path,
    )


def corrupt(path: str | None, what: str) -> JournalCorruptError:
    """The journal is damaged: ``what`` says how."""
    return JournalCorruptError(
        f"journal {_name(path)} is damaged ({what}). It can no longer tell which messages "
        "were already sent, so nothing more is sent from it. Restore a copy of the journal from "
        "before the damage, or rebuild the record of what was sent from the provider's "
        "records before sending again; do not start over with a new journal (every row "
        "would be sent again). results_from_journal may still read what is left.",
        path=path,
    )


def not_a_journal(path: str | None, why: str) -> NotAJournalError:
    """The file is not a massiva-frames journal."""
    return NotAJournalError(
        f"not a massiva-frames journal: {_name(path)} ({why}); name a new file, or the "
        "journal of an earlier send",
        path=path,
    )


def looks_like_journal(path: str | None) -> bool:
    """Whether the file holds a journal's schema text (in its first MiB)."""
    if path is None:
        return False
    try:
        with open(path, "rb") as handle:
            return JOURNAL_SIGNATURE in handle.read(1 << 20)
    except OSError:
        return False


def _folder(path: str) -> str:
    return os.path.dirname(os.path.realpath(path)) or "."


def _read_only_reason(path: str | None) -> str | None:
    """Why the journal cannot be written (file system, file or folder), or None."""
    if path is None:
        return None
    folder = _folder(path)
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "its file system is mounted read-only"
    except OSError:
        return None
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return "the file is read-only"
    if os.path.isdir(folder) and not os.access(folder, os.W_OK | os.X_OK):
        return "its folder is read-only"
    return None


def _size_limit() -> int | None:
    """This process's file size limit (``ulimit -f``) in bytes, or None."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if limit == resource.RLIM_INFINITY or limit < 0 else int(limit)


def _full_reason(path: str | None) -> str | None:
    """Why writing may have failed for lack of room (disk or file size limit), or None."""
    if path is None:
        return None
    limit = _size_limit()
    if limit is not None:
        sizes = [os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p)]
        if max(sizes, default=0) + _NEARLY_FULL >= limit:
            return f"it reached this process's file size limit (ulimit -f), {limit:,} bytes"
    try:
        stat = os.statvfs(_folder(path))
    except OSError:
        return None
    free = stat.f_bavail * stat.f_frsize
    if free < _NEARLY_FULL:
        return f"the disk holding it has {free:,} bytes free"
    return None


def _from_os_error(exc: OSError, path: str | None) -> JournalError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return full(path, f"the disk holding it is full ({os.strerror(exc.errno)})")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return read_only(path, _read_only_reason(path) or os.strerror(exc.errno))
    return JournalError(
        f"journal {_name(path)} could not be used: {exc.strerror or exc}; check the disk it is on",
        path=path,
    )


def journal_error(exc: BaseException, path: str | None) -> JournalError:
    """The :class:`JournalError` that says why ``exc`` happened (raise it ``from exc``).

    ``exc`` is a ``sqlite3.Error`` (read by its ``sqlite_errorcode``), an ``OSError``
    of the journal's files, or the ``UnicodeDecodeError`` of a damaged name or text; a
    :class:`JournalError` is returned as it is.
    """
    if isinstance(exc, JournalError):
        return exc
    if isinstance(exc, OSError):
        return _from_os_error(exc, path)
    if isinstance(exc, UnicodeDecodeError):  # a name or text SQLite read is not UTF-8
        return corrupt(path, "its schema or a stored text is not valid UTF-8")
    code = getattr(exc, "sqlite_errorcode", None)
    primary = -1 if code is None else code & 0xFF
    if primary == sqlite3.SQLITE_FULL:
        # Most often the disk; with room on it, a quota or the journal's own limits.
        cause = _full_reason(path) or (
            "SQLite found no room to write (the disk, a quota, or the journal's own size "
            "or id limits)"
        )
        return full(path, cause)
    if primary in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM):
        return read_only(path, _read_only_reason(path) or "")
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return busy(path)
    if primary == sqlite3.SQLITE_CORRUPT or code in (
        sqlite3.SQLITE_IOERR_SHORT_READ,
        sqlite3.SQLITE_IOERR_DATA,
        sqlite3.SQLITE_IOERR_CORRUPTFS,
    ):
        return corrupt(path, f"SQLite: {exc}")
    if primary in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_FORMAT):
        if looks_like_journal(path):
            return corrupt(path, "its header is unreadable, its tables are still there")
        return not_a_journal(path, "not an SQLite database")
    if code is None and isinstance(exc, (sqlite3.OperationalError, sqlite3.DataError)):
        # Raised by the sqlite3 module itself, not SQLite: a stored value it cannot
        # convert (text that is not UTF-8), which the journal never writes.
        return corrupt(path, f"a stored value cannot be read: {exc}")
    if primary in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR):
        # Which one it is, the file system says: SQLite's codes do not tell a read-only
        # folder or a full disk from other failures to open or write.
        reason = _read_only_reason(path)
        if reason is not None:
            return read_only(path, reason)
        reason = _full_reason(path) if primary == sqlite3.SQLITE_IOERR else None
        if reason is not None:
            return full(path, reason)
        return JournalError(
            f"journal {_name(path)} could not be opened, read or written ({exc}); check "
            "that its folder exists and the disk it is on",
            path=path,
        )
    return JournalError(f"journal {_name(path)} could not be used: {exc}", path=path)
