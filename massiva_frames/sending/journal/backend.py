"""What a journal backend must provide: the operations the sending stage calls, and its clock.

:class:`JournalBackend` is the storage seam. ``send``, ``dispatch``, the request loop and
the results read back program against it. The SQLite journal
(:class:`~massiva_frames.sending.journal.sqlite.Journal`, the embedded default) is one
backend; the PostgreSQL journal
(:class:`~massiva_frames.sending.journal.postgres.PostgresJournal`, shared by many
workers) is the other, with the same operations and guarantees:

- every write is committed (durable) when its method returns, and :meth:`transaction`
  groups several writes into one commit;
- a batch is recorded in flight *before* its request and its outcome right after; a
  batch found in flight by :meth:`recover` makes its messages ``unknown``, never resent;
- a message is keyed by ``(row_key, part)`` and survives every re-run: adding it again
  leaves it untouched, which is what stops a phone from being texted twice;
- a message is sent by one process only: on SQLite one process sends at a time
  (:meth:`lock`); on PostgreSQL :meth:`lock` registers a worker, and each worker sends
  only the messages it has claimed (what :meth:`pending` returns to it);
- a journal that can no longer tell what was sent refuses before the first write
  (:meth:`verify`), and adding messages never adds one already there, even when the
  storage is damaged (the SQLite journal checks it before committing);
- the storage's own errors leave the ``with`` block of a journal as the
  ``JournalError`` subclass that says their cause.

Times are integer microseconds since the epoch, UTC (:func:`now_us`); ids are the
journal's own message ids.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, Self

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from .writes import Answered, Fate

__all__ = ["JournalBackend", "now_us", "refuse_streamed"]


def refuse_streamed(journal: JournalBackend) -> None:
    """Refuse to rebuild the results of a journal whose latest send was streamed.

    A streamed send keeps one chunk's rows at a time in the journal; its results are the
    parquet dataset it wrote, which the error names.
    """
    streamed = journal.get_meta("streamed")
    if streamed:
        from ...errors import InputError

        out = streamed.get("out") if isinstance(streamed, dict) else None
        raise InputError(
            "the latest send to this journal was streamed: its results are the parquet "
            f"dataset it wrote ({out!r}; pd.read_parquet reads it); the journal holds its "
            "last chunk's rows only"
        )


def now_us() -> int:
    """The current UTC time in integer microseconds since the epoch (the journal's clock)."""
    return time.time_ns() // 1000


class JournalBackend(Protocol):
    """The operations of an open send journal that the sending stage relies on.

    The SQLite :class:`~massiva_frames.sending.journal.sqlite.Journal` documents each one
    in full; the lines below say what a backend owes its callers.
    """

    # -- lifecycle --

    def __enter__(self) -> Self:
        """The journal itself: leaving the block closes it."""

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        """Close the journal; an error of the storage raised in the block leaves as the
        ``JournalError`` subclass that says its cause (full, read-only, busy, damaged)."""

    def close(self) -> None:
        """Release the storage and the lock."""

    def lock(self) -> None:
        """Take the journal's sending lock (SQLite: exclusive, else ``JournalBusyError``;
        PostgreSQL: shared, this process registered as a worker with a lease)."""

    def verify(self) -> None:
        """Before the first write of a send or dispatch: raise ``JournalCorruptError``
        unless the journal can still tell which messages were sent."""

    def transaction(self) -> AbstractContextManager[object]:
        """One commit for every write inside it (re-entrant)."""

    def snapshot(self) -> JournalBackend:
        """A throw-away copy to plan on (a dry run writes nothing)."""

    # -- meta and runs --

    def get_meta(self, key: str) -> Any:
        """The JSON value stored under ``key``, or None."""

    def set_meta(self, values: dict[str, Any]) -> None:
        """Store JSON values under their keys (never credentials)."""

    def start_run(self, kind: str) -> int:
        """Record the start of a send, dry run or dispatch; return its number."""

    def finish_run(self, number: int, summary: dict[str, Any]) -> None:
        """Record the end of a run with its figures."""

    def recover(self) -> int:
        """Make the messages of batches left in flight ``unknown``; return how many."""

    # -- rows and messages, before any request --

    def replace_rows(
        self,
        rows: Iterable[Sequence[Any]],
        meta: dict[str, Any],
        *,
        sending: Iterable[Sequence[Any]] = (),
    ) -> None:
        """Replace the input rows of the latest call and store ``meta`` with them."""

    def insert_messages(
        self,
        row_key: Iterable[str],
        part: Iterable[int],
        phone: Iterable[str],
        text: Iterable[str],
        *,
        campaign: str,
    ) -> tuple[int, int]:
        """Add the messages not yet in the outbox (ids ``first + i``); ``(first, added)``."""

    def add_attempts(self, messages: Iterable[Sequence[Any]]) -> int:
        """Add ``(row_key, part, phone, text, campaign, attempt, first_key)`` follow-up
        messages not yet in the outbox (pending); returns how many were added."""

    def attempt_messages(self, campaign: str | None) -> pd.DataFrame:
        """Every message (of ``campaign``, or all) with its state, attempt and first key."""

    def campaigns(self) -> list[str]:
        """The campaigns of the messages in the outbox."""

    def pending_counts(self, row_keys: Sequence[str]) -> dict[str, int]:
        """Of ``row_keys``, those already in the outbox, each with its pending messages."""

    def requeue(self, row_keys: Iterable[str], *, states: Sequence[str]) -> int:
        """Set the messages of ``row_keys`` in one of ``states`` back to ``pending``."""

    def pending(self, row_keys: Iterable[str] | None = None) -> pd.DataFrame:
        """Pending messages with their input rows' position, segments and parts."""

    def pending_messages(self) -> pd.DataFrame:
        """Pending messages alone: ``id, row_key, part, send_at, reason``."""

    def set_pending(
        self,
        ids: Sequence[int],
        *,
        reason: str | None,
        send_at: Sequence[int | None] | None = None,
    ) -> None:
        """Give pending messages a reason (why they wait) and, if given, their time."""

    def next_batch_number(self) -> int:
        """One more than the highest batch number ever used."""

    def cancel_pending(
        self,
        *,
        campaign: str | None,
        before: int | None,
        row_keys: Sequence[str] | None,
        labels: Sequence[Any] | None,
    ) -> dict[str, int]:
        """Make the matching pending messages ``cancelled``; their states before, counted."""

    # -- the request loop --

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
        """Commit a batch's outcome right after its request."""

    def write_turn(
        self,
        answered: Sequence[Answered],
        launched: Sequence[tuple[int, Sequence[int], str, int]],
    ) -> None:
        """Commit a turn: outcomes of the requests that ended, batches about to start."""

    # -- reading back --

    def message_outcomes(self, first: int, last: int) -> dict[str, np.ndarray[Any, Any]]:
        """The result columns of the messages with ids ``first`` to ``last``."""

    def results(self, *, index: pd.Index | None = None) -> pd.DataFrame:
        """The results frame of the latest call, built from the journal alone."""
