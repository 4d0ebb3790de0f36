"""``resend``: follow-up sends from the delivery callbacks (the receiver's log or a frame).

The face reads what the callbacks say, each message's final status, and hands it, as a
plain ``message_id -> status`` Series, to the sending stage
(:func:`massiva_frames.sending.resending.resend_messages`), which decides and sends.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import InputError

if TYPE_CHECKING:
    from ..sending.loop import ProgressArg
    from ..wire.client import MassivaClient

__all__ = ["delivery_statuses", "resend"]


def delivery_statuses(delivery: Any, *, tz: str = "America/Caracas") -> pd.Series:
    """Each message's final status, ``"delivered"`` or ``"failed"``, by ``message_id``.

    ``delivery`` is the receiver's log directory, a status log frame (``message_id,
    status, updated_at``), a frame :func:`~massiva_frames.attach_delivery` returned (its
    ``delivered``/``failed`` rows), or such a Series already (returned as it is: the
    sending stage checks its values).
    """
    from ..analytics.delivery import final_statuses

    if isinstance(delivery, str | os.PathLike):
        if not os.path.isdir(delivery):
            raise InputError(f"log directory not found: {os.fspath(delivery)}")
        return final_statuses(delivery, tz=tz)
    if isinstance(delivery, pd.Series):  # message_id -> status, as this returns
        return delivery
    if not isinstance(delivery, pd.DataFrame):
        raise InputError(
            "delivery must be the receiver's log directory, a status log or the frame "
            f"attach_delivery returned, got {type(delivery).__name__}"
        )
    if "status" in delivery.columns:  # a status log
        return final_statuses(delivery, tz=tz)
    if "state" in delivery.columns and "message_id" in delivery.columns:
        state = delivery["state"].astype("string")
        final = delivery[state.isin(["delivered", "failed"]).fillna(False).to_numpy()]
        ids = pd.to_numeric(final["message_id"], errors="coerce")
        final = final[ids.notna().to_numpy()]
        return pd.Series(
            final["state"].astype(str).to_numpy(dtype=object),
            index=pd.Index(ids.dropna().astype("int64").to_numpy(), name="message_id"),
            name="status",
        )
    raise InputError(
        "delivery frame needs message_id and state (attach_delivery's) or message_id, "
        "status and updated_at (a status log)"
    )


def resend(
    journal: str | os.PathLike[str],
    delivery: Any,
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
    tz: str = "America/Caracas",
) -> pd.DataFrame:
    """Send again, as a new attempt of the same campaign, the rows whose delivery failed.

    Each row's *latest* attempt decides: a row delivered is never sent again; a row whose
    final status callback says ``failed`` is sent again as attempt N + 1 (keyed by its
    first key and N + 1, so running the same follow-up twice sends it once); a row still
    ``accepted`` without a final status is sent again only when ``pending_after`` has
    passed since it was sent; a row in doubt (``unknown``) only with
    ``resend_unknown=True``. The new attempts go out with the settings of the send that
    journalled the rows (method, batch size, group, quiet hours); one that cannot go out
    now (quiet hours, credits short) waits in the journal for ``dispatch`` or the next
    follow-up.

    Parameters
    ----------
    journal : str or path-like
        The send journal: a SQLite file or a ``postgresql://`` URL (it must exist).
    delivery : path, DataFrame or Series
        What the callbacks said: the receiver's log directory, a status log
        (``read_callbacks(..., kind="status")``), the frame ``attach_delivery``
        returned, or a Series of ``"delivered"``/``"failed"`` by ``message_id`` (a
        snapshot of what the log said: the same follow-up again sends nothing).
    client : MassivaClient, optional
        Defaults to one built from the environment, as for ``send``.
    campaign : str, optional
        The campaign to follow up (default: the latest send's); ``""`` for a send
        without one. A campaign the journal does not hold is an error.
    states : iterable of str
        The outcomes to send again: ``"failed"`` (delivery failed, the default) and
        ``"rejected"`` (refused by the provider).
    pending_after : timedelta or str, optional
        Also send again the rows accepted this long ago (``"2h"``) with no final status.
    now : timestamp, optional
        The current time (for ``pending_after`` and quiet hours).
    dry_run : bool
        Report what would be sent (``results.attrs["resend"]`` and ``["send"]``), write
        nothing, send nothing.
    resend_unknown : bool
        Also send again the rows in doubt (the request may have reached the provider:
        they may be received twice).
    concurrency, rate, message_rate, progress, allow_partial
        As for :func:`~massiva_frames.dispatch` (the send's own by default).
    tz : str
        The zone of the log's naive ``updated_at`` values.

    Returns
    -------
    DataFrame
        The journal's results frame (as ``results_from_journal``): a row sent again shows
        its latest ``attempt`` and that attempt's message columns, ``first_message_id``
        the first attempt's id. ``attrs["resend"]`` counts the rows by what was decided
        (:class:`~massiva_frames.sending.resending.ResendCounts`), ``attrs["send"]`` the
        run's figures.

    Raises
    ------
    InputError
        The journal or log directory does not exist, the campaign is not in the journal,
        no final status matches a message of the campaign, or an option is wrong.
    JournalBusyError
        A send or dispatch is using the journal.

    Examples
    --------
    >>> results = mf.resend("sends.db", "callback-logs", campaign="enero")  # doctest: +SKIP
    >>> results.attrs["resend"]["resent"]  # doctest: +SKIP
    12
    >>> mf.delivery_summary(mf.attach_delivery(results, "callback-logs"), by="attempt")
    ... # doctest: +SKIP
    """
    from ..sending.journal.postgres_url import is_postgres_url
    from ..sending.resending import resend_messages

    if not isinstance(journal, str | os.PathLike):
        raise InputError(
            f"resend takes the journal's path or URL first, got {type(journal).__name__}"
        )
    if not is_postgres_url(journal) and not os.path.exists(journal):  # before the log is read
        raise InputError(f"journal not found: {os.fspath(journal)}")
    statuses = delivery_statuses(delivery, tz=tz)
    return resend_messages(
        journal,
        statuses,
        client=client,
        campaign=campaign,
        states=states,
        pending_after=pending_after,
        now=now,
        dry_run=dry_run,
        resend_unknown=resend_unknown,
        concurrency=concurrency,
        rate=rate,
        message_rate=message_rate,
        progress=progress,
        allow_partial=allow_partial,
    )
