"""The due messages of a send or ``dispatch``: timed, checked against credits, planned, sent.

The body :func:`~massiva_frames.sending.campaign.send` and
:func:`~massiva_frames.sending.campaign.dispatch` share (:func:`send_due`): pending
messages get their time (``send_at``, the quiet-hour window) and those not due yet wait
(``not_due``); the due ones are checked against the account's credits (one credit per
message; the segments are reported beside them), planned into API-sized batches by the
preparation stage's planner, and handed to the request loop (:mod:`.loop`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import InsufficientCreditsError, MassivaError
from .journal.backend import JournalBackend
from .journal.writes import Answered
from .loop import Batch, ProgressArg, run_batches, short_error
from .rows import objects
from .scheduling import Window, due_times

if TYPE_CHECKING:
    from ..wire.client import MassivaClient

# Internal to massiva_frames.sending.campaign.
__all__ = ["SendOptions", "make_clock", "mark_too_long_for_get", "send_due"]

# One logger for a send's records, whichever module writes them (as the request loop).
logger = logging.getLogger("massiva_frames.sending.campaign")


def make_clock(now: Any) -> Callable[[], pd.Timestamp]:
    """The run's clock: the current time, or ``now`` fixed (tests, back-fills)."""
    if now is None:
        return lambda: pd.Timestamp.now(tz="UTC")
    from .scheduling import to_utc

    fixed = to_utc(now)
    return lambda: fixed


def _plan_options(client: MassivaClient | None) -> dict[str, Any]:
    if client is not None:
        return {"client": client}
    # a dry run without credentials: the GET bound with placeholder ones
    return {"usuario": "usuario@example.com", "clave": "x" * 16}


def mark_too_long_for_get(
    validated: pd.DataFrame, *, client: MassivaClient | None, max_phones: int, group: str | None
) -> pd.DataFrame:
    """Validated rows with those too long for any GET URL made invalid (``url_too_long``)."""
    from ..prepare.batching import plan_batches

    planned = plan_batches(
        validated, method="GET", max_phones=max_phones, group=group, **_plan_options(client)
    )
    return planned.drop(columns=["batch", "batch_pos"])


def _plan(
    messages: pd.DataFrame,
    *,
    client: MassivaClient | None,
    method: str,
    max_phones: int,
    group: str | None,
    first_number: int,
) -> list[Batch]:
    """Group messages into API-sized batches with validation's own planner."""
    if messages.empty:
        return []
    from ..prepare.batching import iter_batches, plan_batches

    frame = pd.DataFrame(
        {
            "phone": messages["phone"].astype("string").to_numpy(),
            "text": messages["text"].astype("string").to_numpy(),
            "valid": True,
            "state": "ready",
            "reason": pd.NA,
            "parts": 1,
        },
        index=pd.RangeIndex(len(messages)),
    )
    planned = plan_batches(
        frame, method=method, max_phones=max_phones, group=group, **_plan_options(client)
    )
    ids = messages["id"].to_numpy()
    return [
        Batch(
            number=first_number + i,
            ids=ids[b.index.to_numpy()].tolist(),
            phones=tuple(b.phones),
            texts=tuple(b.texts),
        )
        for i, b in enumerate(iter_batches(planned))
    ]


def _fit(due: pd.DataFrame, available: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The due messages that fit in ``available`` credits, whole rows only, in order."""
    per_row = due.groupby("row_key", sort=False).size()
    fits = per_row.cumsum() <= available
    chosen = due["row_key"].map(fits).fillna(False).astype(bool)
    return due[chosen], due[~chosen]


def _ids(frame: pd.DataFrame) -> list[int]:
    return [int(i) for i in frame["id"].tolist()]


def _reschedule(
    journal: JournalBackend, frame: pd.DataFrame, stored: pd.Series, reason: str | None
) -> None:
    """Store each pending message's reason and time, writing only what changed."""
    old_reason = objects(frame["reason"])
    old_at = objects(frame["send_at"])
    new_at = stored.to_numpy(dtype=object)
    old_none, new_none = pd.isna(old_at), pd.isna(new_at)
    same_at = old_none & new_none
    both = np.flatnonzero(~old_none & ~new_none)
    same_at[both] = old_at[both].astype(np.int64) == new_at[both].astype(np.int64)
    same_reason = pd.isna(old_reason) if reason is None else old_reason == reason
    changed = np.flatnonzero(~(same_reason & same_at))
    if len(changed):
        ids = frame["id"].to_numpy()[changed].tolist()
        at = [None if t is None else int(t) for t in new_at[changed].tolist()]
        journal.set_pending(ids, reason=reason, send_at=at)


@dataclass
class SendOptions:
    """The settings of one run of :func:`send_due` (from ``send``'s arguments, or the
    journal's settings for ``dispatch``)."""

    client: MassivaClient | None
    method: str
    max_phones: int
    group: str | None
    window: Window | None
    clock: Callable[[], pd.Timestamp]
    concurrency: int
    rate: float | None
    message_rate: float | None
    progress: ProgressArg
    allow_partial: bool
    dry_run: bool


def send_due(
    journal: JournalBackend, pending: pd.DataFrame, rows: pd.DataFrame | None, opts: SendOptions
) -> tuple[dict[str, Any], BaseException | None, list[Answered]]:
    """Schedule, check credits, plan and send the pending messages.

    Returns the figures, the account-level error that stopped the run (if any), and the
    outcomes the request loop committed to the journal.
    """
    now = opts.clock()
    if rows is not None:  # send: this call's send_at, by the message's input row
        at = pending["position"].to_numpy(dtype=np.int64)
        wanted = pd.Series(rows["send_at"].iloc[at].array, index=pending.index)
    else:  # dispatch: the times stored in the journal
        wanted = pd.to_datetime(pending["send_at"].astype("Float64"), unit="us", utc=True)
    stored, due = due_times(wanted, opts.window, now)
    due_frame, later = pending[due], pending[~due]
    _reschedule(journal, due_frame, stored[due], None)
    _reschedule(journal, later, stored[~due], "not_due")
    per_message = pd.to_numeric(due_frame["segments"], errors="coerce").fillna(1) / pd.to_numeric(
        due_frame["parts"], errors="coerce"
    ).fillna(1).clip(lower=1)
    needed, segments = len(due_frame), int(np.ceil(per_message).sum())
    summary: dict[str, Any] = {
        "dry_run": opts.dry_run,
        "messages_due": needed,
        "messages_scheduled_later": len(later),
        "credits_needed": needed,
        "segments_needed": segments,
        "credits_available": None,
        "method": opts.method,
    }
    if needed and opts.client is not None:
        try:
            summary["credits_available"] = opts.client.credits()
        except MassivaError as exc:
            if not opts.dry_run:
                raise
            logger.info("dry run: credits not available (%s)", short_error(exc))
    available = summary["credits_available"]
    if not opts.dry_run and available is not None and needed > available:
        if not opts.allow_partial:
            journal.set_pending(_ids(due_frame), reason="insufficient_credits")
            # Credits count messages, one per accepted SMS (the provider's creditos and
            # the sandbox); the segments are reported too, as carriers bill by segment.
            raise InsufficientCreditsError(
                -6,
                explanation=(
                    f"the send needs {needed} credits ({needed} messages, {segments} "
                    f"segments) but the account has {available}; nothing was sent "
                    "(allow_partial=True sends what fits)"
                ),
                needed=needed,
                available=available,
            )
        due_frame, short = _fit(due_frame, available)
        journal.set_pending(_ids(short), reason="insufficient_credits")
        summary["messages_not_affordable"] = len(short)
        logger.warning(
            "credits for %d of %d messages: the other %d wait (insufficient_credits)",
            len(due_frame),
            needed,
            len(short),
        )
    batches = _plan(
        due_frame,
        client=opts.client,
        method=opts.method,
        max_phones=opts.max_phones,
        group=opts.group,
        first_number=journal.next_batch_number(),
    )
    planned_ids = {i for b in batches for i in b.ids}
    unplanned = [i for i in _ids(due_frame) if i not in planned_ids]
    if unplanned:  # a GET part too long for any URL: it can only go by POST
        journal.set_pending(unplanned, reason="not_sent_url_too_long")
    summary["requests"] = len(batches)
    summary["messages"] = int(sum(len(b.ids) for b in batches))
    if opts.dry_run:
        journal.set_pending(_ids(due_frame), reason="dry_run")
        logger.info(
            "dry run: %d messages in %d requests; credits needed %d, available %s",
            summary["messages"],
            len(batches),
            needed,
            available,
        )
        return summary, None, []
    if not batches:
        return summary, None, []
    assert opts.client is not None
    stats, stop = run_batches(
        journal,
        opts.client,
        batches,
        method=opts.method,
        group=opts.group,
        concurrency=opts.concurrency,
        rate=opts.rate,
        message_rate=opts.message_rate,
        window=opts.window,
        clock=opts.clock,
        progress=opts.progress,
    )
    summary.update(
        requests=stats.requests,
        accepted=stats.accepted,
        rejected=stats.rejected,
        unknown=stats.unknown,
        not_sent=stats.not_sent,
        mismatches=stats.mismatches,
        seconds=round(stats.seconds, 3),
        messages_per_second=round(stats.messages_sent / stats.seconds, 1)
        if stats.seconds > 0
        else None,
    )
    logger.info(
        "sent %d requests in %.2f s: %d accepted, %d rejected, %d unknown, %d not sent",
        stats.requests,
        stats.seconds,
        stats.accepted,
        stats.rejected,
        stats.unknown,
        stats.not_sent,
    )
    return summary, stop, stats.answered
