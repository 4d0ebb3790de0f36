"""Follow-up sends: the rows whose delivery failed go out again, as a new attempt.

A row's first send is attempt 1, its messages keyed by the row's stable key. A follow-up
send adds attempt N + 1 of a row whose attempt N failed, keyed ``"<first key>#<N + 1>"``
(:func:`attempt_key`) with ``first_key`` and ``attempt`` in the journal's outbox: the key
is derived from the first key and the number alone, so running the same follow-up twice
adds nothing the second time, and a follow-up stopped half-way is finished by the next
one (or by ``dispatch``), never doubled.

What a row's latest attempt says decides (:func:`choose`); the delivery outcome of each
message comes from the callbacks (docs/protocol.md §2), given here as plain data, a
``message_id -> "delivered" | "failed"`` mapping (the faces read the receiver's log):

- delivered (any part): never sent again;
- failed (a part failed, none delivered): sent again when ``"failed"`` is in ``states``;
- accepted with no final status: sent again only past ``pending_after`` since it was sent;
- rejected by the provider: sent again when ``"rejected"`` is in ``states``;
- unknown (the request may have reached the provider): sent again only with
  ``resend_unknown=True`` (it may then be received twice);
- scheduled, cancelled or in flight: left to ``dispatch``, ``cancel`` and the running send.

This stage never reads callbacks itself (docs/architecture.md: sending knows nothing of
the receiving side).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import InputError
from .calls import finish, opened_journal, require_existing_journal, stored_options
from .due import make_clock, send_due
from .loop import ProgressArg

if TYPE_CHECKING:
    from ..wire.client import MassivaClient

__all__ = ["FOLLOW_UP_STATES", "ResendCounts", "attempt_key", "choose", "resend_messages"]

#: the outcomes a follow-up may send again through ``states`` (unknown: ``resend_unknown``)
FOLLOW_UP_STATES = ("failed", "rejected")


def attempt_key(first_key: str, attempt: int) -> str:
    """The outbox key of a row's attempt: the first key itself, then ``"<key>#<n>"``.

    The journals' results SQL builds the same key (``journal.schema``).

    Examples
    --------
    >>> attempt_key("abc", 1), attempt_key("abc", 2)
    ('abc', 'abc#2')
    """
    return first_key if attempt == 1 else f"{first_key}#{attempt}"


@dataclass(frozen=True)
class ResendCounts:
    """What a follow-up send found, counted in rows (each row's latest attempt).

    Attributes
    ----------
    resent : int
        Rows given a new attempt by this call.
    queued : int
        Rows whose new attempt an earlier follow-up added but did not send (it stopped,
        credits were short, quiet hours): sent by this call when due.
    failed, overdue, rejected, unknown : int
        Rows chosen because their delivery failed, because they stayed accepted without a
        final status past ``pending_after``, were rejected, or are in doubt (the last
        two only when asked for). Their sum is ``resent``.
    delivered : int
        Rows delivered (by any attempt so far): never sent again.
    awaiting : int
        Rows accepted with no final status yet (not past ``pending_after``).
    not_chosen : int
        Rows in a state this call was not asked to send again: rejected without
        ``"rejected"`` in ``states``, a split row with some parts delivered.
    in_doubt : int
        Rows in doubt (``unknown``) left alone: ``resend_unknown=True`` opts in.
    elsewhere : int
        Rows still scheduled, cancelled or in flight (``dispatch`` and ``cancel``'s).
    """

    resent: int = 0
    queued: int = 0
    failed: int = 0
    overdue: int = 0
    rejected: int = 0
    unknown: int = 0
    delivered: int = 0
    awaiting: int = 0
    not_chosen: int = 0
    in_doubt: int = 0
    elsewhere: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict (for logs, JSON and ``results.attrs``)."""
        return asdict(self)


def _statuses(statuses: Mapping[Any, Any] | pd.Series) -> pd.Series:
    """``message_id -> "delivered" | "failed"`` as a Series with an int64 index."""
    series = statuses if isinstance(statuses, pd.Series) else pd.Series(dict(statuses))
    if series.empty:
        return pd.Series([], index=pd.Index([], dtype=np.int64), dtype=object)
    try:
        ids = pd.to_numeric(pd.Index(series.index), errors="raise")
        values = series.astype(str).str.strip().str.lower().to_numpy(dtype=object)
        index = pd.Index(np.asarray(ids, dtype=np.int64))
    except (TypeError, ValueError) as exc:
        raise InputError("delivery statuses must be keyed by integer message ids") from exc
    bad = sorted(set(values) - {"delivered", "failed"})
    if bad:
        raise InputError(f"delivery statuses must be 'delivered' or 'failed', got {bad[0]!r}")
    final = pd.Series(values, index=index, dtype=object)
    return final[~final.index.duplicated(keep="last")]  # a message's later entry wins


def choose(
    messages: pd.DataFrame,
    statuses: pd.Series,
    *,
    states: Iterable[str],
    resend_unknown: bool,
    overdue_before: int | None,
) -> tuple[pd.DataFrame, pd.DataFrame, ResendCounts]:
    """Decide, row by row, what a follow-up sends (see the module's list).

    ``messages``: the journal's (``attempt_messages``); ``statuses``: final status by
    ``message_id``; ``overdue_before``: µs, an accepted message sent before it without a
    final status is overdue. Returns the new attempts' messages ``(row_key, part, phone,
    text, campaign, attempt, first_key)``, the keys of attempts already queued, and the
    counts (``resent`` is the number of rows chosen).
    """
    wanted = set(states)
    latest_n = messages.groupby("first_key", sort=False)["attempt"].transform("max")
    latest = messages[messages["attempt"].to_numpy() == latest_n.to_numpy()].copy()
    ids = pd.to_numeric(latest["message_id"], errors="coerce")
    final = statuses.reindex(ids.fillna(-1).astype(np.int64).to_numpy()).to_numpy(dtype=object)
    state = latest["state"].astype(str).to_numpy(dtype=object)
    sent_at = pd.to_numeric(latest["sent_at"], errors="coerce").to_numpy(dtype="float64")
    latest = latest.assign(
        delivered=final == "delivered",
        failed=final == "failed",
        accepted=state == "accepted",
        rejected=state == "rejected",
        unknown=state == "unknown",
        waiting=np.isin(state, ["pending", "inflight", "cancelled"]),
        pending=state == "pending",
        overdue=(state == "accepted")
        & pd.isna(final)
        & (overdue_before is not None)
        & (sent_at < (overdue_before if overdue_before is not None else 0)),
    )
    rows = latest.groupby("first_key", sort=False).agg(
        attempt=("attempt", "max"),
        delivered=("delivered", "any"),
        failed=("failed", "any"),
        rejected=("rejected", "any"),
        unknown=("unknown", "any"),
        waiting=("waiting", "any"),
        all_overdue=("overdue", "all"),
        pending=("pending", "any"),
    )
    queued = rows["pending"] & (rows["attempt"] > 1)
    elsewhere = rows["waiting"] & ~queued
    unknown = rows["unknown"] & ~rows["waiting"]
    rejected = rows["rejected"] & ~rows["waiting"] & ~unknown
    settled = ~rows["waiting"] & ~unknown & ~rejected
    delivered = settled & rows["delivered"]
    failed = settled & rows["failed"] & ~rows["delivered"]
    partly = settled & rows["failed"] & rows["delivered"]
    overdue = settled & ~rows["delivered"] & ~rows["failed"] & rows["all_overdue"]
    awaiting = settled & ~rows["delivered"] & ~rows["failed"] & ~rows["all_overdue"]
    pick_failed = failed & ("failed" in wanted)
    pick_overdue = overdue & (overdue_before is not None)
    pick_rejected = rejected & ("rejected" in wanted)
    pick_unknown = unknown & resend_unknown
    chosen = pick_failed | pick_overdue | pick_rejected | pick_unknown
    counts = ResendCounts(
        resent=int(chosen.sum()),
        queued=int(queued.sum()),
        failed=int(pick_failed.sum()),
        overdue=int(pick_overdue.sum()),
        rejected=int(pick_rejected.sum()),
        unknown=int(pick_unknown.sum()),
        delivered=int(delivered.sum()),
        awaiting=int(awaiting.sum()),
        not_chosen=int((rejected & ~pick_rejected | partly | failed & ~pick_failed).sum()),
        in_doubt=int((unknown & ~pick_unknown).sum()),
        elsewhere=int(elsewhere.sum()),
    )
    next_attempt = rows["attempt"][chosen] + 1
    new = latest[latest["first_key"].isin(next_attempt.index)]
    number = next_attempt.reindex(new["first_key"]).to_numpy(dtype=np.int64)
    keys = [attempt_key(k, int(n)) for k, n in zip(new["first_key"], number, strict=True)]
    attempts = pd.DataFrame(
        {
            "row_key": keys,
            "part": new["part"].astype(np.int64).to_numpy(),
            "phone": new["phone"].to_numpy(dtype=object),
            "text": new["text"].to_numpy(dtype=object),
            "campaign": new["campaign"].to_numpy(dtype=object),
            "attempt": number,
            "first_key": new["first_key"].to_numpy(dtype=object),
        }
    ).drop_duplicates(["row_key", "part"])
    queued_keys = latest[latest["first_key"].isin(rows.index[queued])]["row_key"]
    return attempts, pd.DataFrame({"row_key": queued_keys.unique()}), counts


def _overdue_before(pending_after: Any, now: pd.Timestamp) -> int | None:
    """The time (µs) before which an accepted message with no final status is overdue."""
    if pending_after is None:
        return None
    try:
        span = pd.Timedelta(pending_after)
    except (TypeError, ValueError) as exc:
        raise InputError(f"pending_after {pending_after!r} is not a duration, e.g. '2h'") from exc
    if pd.isna(span) or span < pd.Timedelta(0):
        raise InputError(f"pending_after {pending_after!r} must be a duration of 0 or more")
    return int((now - span).value // 1000)


def _check_states(states: Iterable[str], resend_unknown: bool) -> tuple[str, ...]:
    if isinstance(states, str):
        states = [states]
    chosen = tuple(str(s).strip().lower() for s in states)
    if "unknown" in chosen and not resend_unknown:
        raise InputError(
            "rows in doubt (unknown) may have been received: they are sent again only with "
            "resend_unknown=True"
        )
    bad = [s for s in chosen if s not in (*FOLLOW_UP_STATES, "unknown")]
    if bad:
        raise InputError(f"states must be among {', '.join(FOLLOW_UP_STATES)}; got {bad[0]!r}")
    return chosen


def resend_messages(
    journal: str | os.PathLike[str],
    statuses: Mapping[Any, Any] | pd.Series,
    *,
    client: MassivaClient | None = None,
    campaign: str | None = None,
    states: Iterable[str] = ("failed",),
    pending_after: Any = None,
    now: Any = None,
    dry_run: bool = False,
    resend_unknown: bool = False,
    concurrency: int | None = None,
    rate: float | None = None,
    message_rate: float | None = None,
    progress: ProgressArg = False,
    allow_partial: bool = False,
) -> pd.DataFrame:
    """Send again, as a new attempt of the same campaign, the rows whose delivery failed.

    The sending side of :func:`massiva_frames.resend`, on plain data: ``statuses`` maps the
    provider's ``message_id`` to its final status, ``"delivered"`` or ``"failed"``.
    Parameters, choice of rows and the frame returned are those of
    :func:`massiva_frames.resend`.

    Examples
    --------
    >>> resend_messages("sends.db", {812: "failed", 813: "delivered"})  # doctest: +SKIP
    """
    chosen_states = _check_states(states, resend_unknown)
    final = _statuses(statuses)
    clock = make_clock(now)
    overdue_before = _overdue_before(pending_after, clock())
    require_existing_journal(journal)
    own_client = client is None
    try:
        with opened_journal(journal, dry_run) as jr:
            settings: dict[str, Any] = jr.get_meta("settings") or {}
            if campaign is None:
                name = settings.get("campaign")
                campaign = "" if name is None else str(name)
            campaign = str(campaign)
            known = jr.campaigns()
            if campaign not in known:
                shown = ", ".join(repr(c) for c in known[:10]) or "none"
                raise InputError(
                    f"campaign {campaign!r} not found in journal {os.fspath(journal)} "
                    f"(its campaigns: {shown})"
                )
            recovered = jr.recover()  # a dead process's requests are in doubt: unknown
            messages = jr.attempt_messages(campaign)
            ids = set(pd.to_numeric(messages["message_id"], errors="coerce").dropna().astype(int))
            matched = int(final.index.isin(list(ids)).sum())
            if len(final) and not matched:
                raise InputError(
                    f"none of the {len(final)} message ids with a final status is a message "
                    f"of campaign {campaign!r} in journal {os.fspath(journal)}: is it the log "
                    "of this journal's sends?"
                )
            if not len(final) and overdue_before is None:
                raise InputError(
                    "no final status (delivered or failed) was given: nothing tells which "
                    "rows failed (is the log directory the receiver's?); pending_after "
                    "resends the rows left without one"
                )
            opts = stored_options(
                settings, client=client, clock=clock, concurrency=concurrency,
                rate=rate, message_rate=message_rate, progress=progress,
                allow_partial=allow_partial, dry_run=dry_run,
            )  # fmt: skip
            client = opts.client
            run = jr.start_run("dry_run" if dry_run else "resend")
            attempts, queued, counts = choose(
                messages,
                final,
                states=chosen_states,
                resend_unknown=resend_unknown,
                overdue_before=overdue_before,
            )
            added = jr.add_attempts(attempts.itertuples(index=False, name=None))
            keys = {*attempts["row_key"], *queued["row_key"]}
            pending = jr.pending(keys)
            summary, stop, _ = send_due(jr, pending, None, opts)
            summary.update(
                campaign=campaign,
                new_messages=added,
                recovered_unknown=recovered,
                statuses_matched=matched,
                resend=counts.as_dict(),
            )
            results = jr.results()
            results.attrs["resend"] = counts.as_dict()
            return finish(jr, run, summary, results, stop)
    finally:
        if own_client and client is not None:
            client.close()
