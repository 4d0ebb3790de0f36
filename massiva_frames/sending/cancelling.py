"""Cancel scheduled sends: pending messages of a journal become ``cancelled``, never sent.

:func:`cancel` picks the pending messages of a send journal by campaign, by due time and
by row (the latest input's index labels, or the values of its ``key`` column) and marks
them ``cancelled`` in the journal's outbox. A re-run of the send, or ``dispatch``, sends
only ``pending`` messages, so a cancelled one never goes out. Messages already sent
(accepted, rejected), in doubt (unknown) or in flight are left as they are and counted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from ..errors import InputError
from .journal.backend import JournalBackend
from .journal.postgres_url import is_postgres_url
from .journal.sqlite import Journal
from .rows import user_row_key
from .scheduling import to_utc

__all__ = ["CancelCounts", "cancel"]


@dataclass(frozen=True)
class CancelCounts:
    """What :func:`cancel` found among the messages that matched, counted in messages.

    Attributes
    ----------
    cancelled : int
        Pending messages made ``cancelled`` by this call.
    already_cancelled : int
        Messages an earlier ``cancel`` took out.
    sent : int
        Messages already sent (accepted or rejected by the provider): untouched.
    unknown : int
        Messages in doubt (the request may have reached the provider): untouched.
    in_flight : int
        Messages whose request is under way, or was when its process died: untouched.
    """

    cancelled: int = 0
    already_cancelled: int = 0
    sent: int = 0
    unknown: int = 0
    in_flight: int = 0

    @property
    def untouched(self) -> int:
        """Messages that matched but could no longer be cancelled (sent, unknown, in flight)."""
        return self.sent + self.unknown + self.in_flight

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict (for logs and JSON)."""
        return asdict(self)


def _labels(rows: Any) -> list[Any]:
    """The index labels of ``rows`` (labels, an Index, a Series or a frame)."""
    if isinstance(rows, pd.DataFrame | pd.Series):
        values: Iterable[Any] = rows.index
    elif isinstance(rows, str | bytes) or not isinstance(rows, Iterable):
        values = [rows]
    else:
        values = rows
    return list(values)


def _time(before: Any) -> int:
    """``before`` in the journal's clock (µs since the epoch, UTC); naive is Caracas time."""
    try:
        stamp = to_utc(before)
    except InputError:
        raise InputError(f"before {before!r} is not a date and time") from None
    return int(stamp.value // 1000)


def cancel(
    journal: str | os.PathLike[str],
    *,
    campaign: str | None = None,
    before: Any = None,
    rows: Any = None,
    keys: Iterable[Any] | None = None,
) -> CancelCounts:
    """Cancel the scheduled (pending, not yet sent) messages of a send journal.

    The messages that match *every* filter given become ``cancelled``: the results
    frame (``results_from_journal``, a re-run of the send, ``dispatch``) shows their
    rows as ``cancelled`` with reason ``cancelled``, and no later run sends them.
    Messages already sent, in doubt (``unknown``) or in flight are never touched; the
    counts say how many matched in each state. At least one filter is required.

    Parameters
    ----------
    journal : str or path-like
        The send journal (an existing file).
    campaign : str, optional
        Only messages of this campaign (``send(..., campaign=...)``; ``""`` for a send
        without one).
    before : timestamp-like, optional
        Only messages due before this time (their ``send_at`` or window time; a naive
        time is America/Caracas). A message with no time of its own (due at once, left
        by a failed connection or short credits) counts as due before any time.
    rows : labels, Index, Series or DataFrame, optional
        Only these rows of the latest send's input, by index label (a Series or frame
        gives its index: e.g. a filtered results frame). A row's follow-up attempts
        (``resend``) waiting to go out match too.
    keys : iterable, optional
        Only the rows with these values in the send's ``key`` column (the key is read in
        ``campaign``, or in the latest send's campaign when ``campaign`` is not given).

    Returns
    -------
    CancelCounts
        Messages cancelled now, and those that matched but were already cancelled, sent,
        in doubt or in flight.

    Raises
    ------
    InputError
        The journal does not exist, no filter is given, or ``before`` is not a time.
    JournalBusyError
        A send or dispatch is using the journal (it would race the change): wait for it.

    Examples
    --------
    >>> mf.cancel("sends.db", campaign="enero", before="2026-01-31 08:00")  # doctest: +SKIP
    CancelCounts(cancelled=120, already_cancelled=0, sent=0, unknown=0, in_flight=0)
    """
    if campaign is None and before is None and rows is None and keys is None:
        raise InputError("cancel needs campaign=, before=, rows= or keys= (what to cancel)")
    at = None if before is None else _time(before)
    labels = None if rows is None else _labels(rows)
    jr: JournalBackend
    if is_postgres_url(journal):
        from .journal.postgres import open_postgres

        jr = open_postgres(str(journal), dry_run=False)
    elif not os.path.exists(journal):
        raise InputError(f"journal not found: {os.fspath(journal)}")
    else:
        jr = Journal(journal)
    with jr:
        jr.lock()
        row_keys = None
        if keys is not None:
            settings: dict[str, Any] = jr.get_meta("settings") or {}
            in_campaign = campaign if campaign is not None else settings.get("campaign")
            name = "" if in_campaign is None else str(in_campaign)
            row_keys = [user_row_key(name, str(k)) for k in keys]
        run = jr.start_run("cancel")
        found = jr.cancel_pending(
            campaign=None if campaign is None else str(campaign),
            before=at,
            row_keys=row_keys,
            labels=labels,
        )
        counts = CancelCounts(
            cancelled=found.get("pending", 0),
            already_cancelled=found.get("cancelled", 0),
            sent=found.get("accepted", 0) + found.get("rejected", 0),
            unknown=found.get("unknown", 0),
            in_flight=found.get("inflight", 0),
        )
        jr.finish_run(run, counts.as_dict())
    return counts
