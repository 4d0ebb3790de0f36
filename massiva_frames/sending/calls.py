"""What every send call shares: its options checked, its client and journal opened, its
input prepared for the outbox, its run finished.

:func:`~massiva_frames.sending.campaign.send` (one DataFrame) and
:func:`~massiva_frames.sending.streaming.send_stream` (a source read chunk by chunk) both
go through these steps, so one frame sent either way gives the same results.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import InputError
from .due import SendOptions, mark_too_long_for_get
from .journal.backend import JournalBackend
from .journal.postgres_url import is_postgres_url
from .journal.sqlite import Journal
from .loop import ProgressArg
from .results import STATES
from .rows import prepare_rows
from .scheduling import Window

if TYPE_CHECKING:
    from ..wire.client import MassivaClient

# Internal to massiva_frames.sending.campaign, .streaming and .resending.
__all__ = [
    "check_options",
    "default_client",
    "finish",
    "open_client",
    "open_journal",
    "plan_run",
    "prepare_frame",
]


def check_options(concurrency: int, max_phones: int) -> None:
    """Refuse a concurrency or batch size that is not a positive integer."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InputError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    if isinstance(max_phones, bool) or not isinstance(max_phones, int) or max_phones < 1:
        raise InputError(f"max_phones must be an integer >= 1, got {max_phones!r}")


def default_client(method: str | None, *, required: bool) -> MassivaClient | None:
    """A client from the environment's credentials (None when absent and not required)."""
    from ..wire.client import MassivaClient

    try:
        return MassivaClient(method=method or "POST")
    except InputError:
        if required:
            raise
        return None


def open_client(
    client: MassivaClient | None, method: str | None, *, dry_run: bool
) -> tuple[MassivaClient | None, bool, str]:
    """The call's client, whether the call owns it (one built from the environment, which
    the call closes), and the HTTP verb its requests use."""
    own_client = client is None
    if client is None:
        client = default_client(method, required=not dry_run)
    verb = str(method or (client.method if client is not None else "POST")).upper()
    return client, own_client, verb


def plan_run(
    *,
    client: MassivaClient | None,
    verb: str,
    window: Window | None,
    clock: Callable[[], pd.Timestamp],
    progress: ProgressArg,
    allow_partial: bool,
    dry_run: bool,
    campaign: str | None,
    phone: str,
    text: str | None,
    template: str | None,
    key: str | None,
    validate_options: dict[str, Any],
    max_phones: int,
    group: str | None,
    concurrency: int,
    rate: float | None,
    message_rate: float | None,
) -> tuple[dict[str, Any], SendOptions]:
    """A send's settings, as its journal keeps them (``dispatch`` and follow-up sends
    reuse them), and the options of its run."""
    settings = {
        "campaign": campaign,
        "phone": phone,
        "text": text,
        "template": template,
        "key": key,
        "validate_options": validate_options,
        "method": verb,
        "max_phones": max_phones,
        "group": group,
        "window": None if window is None else [t.isoformat() for t in window],
        "concurrency": concurrency,
        "rate": rate,
        "message_rate": message_rate,
    }
    opts = SendOptions(
        client=client,
        method=verb,
        max_phones=max_phones,
        group=group,
        window=window,
        clock=clock,
        concurrency=concurrency,
        rate=rate,
        message_rate=message_rate,
        progress=progress,
        allow_partial=allow_partial,
        dry_run=dry_run,
    )
    return settings, opts


def open_journal(journal: str | os.PathLike[str] | None, dry_run: bool) -> JournalBackend:
    """The journal of a run (the one place its backend is chosen): a SQLite file, a
    PostgreSQL URL (``postgresql://``), or one in memory without ``journal=`` (nor
    ``MASSIVA_JOURNAL``)."""
    if journal is None:
        journal = os.environ.get("MASSIVA_JOURNAL") or None
    if journal is None:
        return Journal(None)
    if is_postgres_url(journal):
        from .journal.postgres import open_postgres

        return open_postgres(str(journal), dry_run=dry_run)
    if dry_run:  # plan on a throw-away copy: a dry run writes nothing
        if not os.path.exists(journal):
            return Journal(None)
        with Journal(journal, readonly=True) as real:
            real.verify()
            return real.snapshot()
    return Journal(journal)


def prepare_frame(
    df: pd.DataFrame,
    *,
    client: MassivaClient | None,
    verb: str,
    max_phones: int,
    group: str | None,
    campaign_key: str,
    key: str | None,
    send_at: Any,
    phone: str,
    text: str | None,
    template: str | None,
    validate_options: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate a frame and make its outbox rows and messages
    (:func:`~massiva_frames.sending.rows.prepare_rows`)."""
    from ..prepare.validation import validate

    validated = validate(df, phone=phone, text=text, template=template, **validate_options)
    if verb == "GET":
        # A row too long for any GET URL becomes invalid (url_too_long) before journalling.
        validated = mark_too_long_for_get(
            validated, client=client, max_phones=max_phones, group=group
        )
    return prepare_rows(df, validated, campaign=campaign_key, key=key, send_at=send_at)


def finish(
    journal: JournalBackend, run: int, summary: dict[str, Any], results: pd.DataFrame
) -> pd.DataFrame:
    """Record the end of a run with its states counted; the figures on ``results.attrs``."""
    counts = results["state"].value_counts()
    summary["states"] = {s: int(counts.get(s, 0)) for s in STATES if counts.get(s, 0)}
    journal.finish_run(run, summary)
    results.attrs["send"] = summary
    if summary.get("dry_run"):
        results.attrs["dry_run"] = summary
    return results
