"""What every send call shares: its options checked, its client and journal opened, its
input prepared for the outbox, its run finished.

:func:`~massiva_frames.sending.campaign.send` (one DataFrame) and
:func:`~massiva_frames.sending.streaming.send_stream` (a source read chunk by chunk) both
go through these steps, so one frame sent either way gives the same results.
:func:`~massiva_frames.sending.campaign.dispatch` and follow-up sends
(:mod:`.resending`) run on a journal's rows with the settings their send recorded
(:func:`stored_options`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
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
from .scheduling import Window, parse_window

if TYPE_CHECKING:
    from ..wire.client import MassivaClient

# Internal to massiva_frames.sending.campaign, .streaming and .resending.
__all__ = [
    "check_options",
    "default_client",
    "finish",
    "open_client",
    "open_journal",
    "opened_journal",
    "plan_run",
    "prepare_frame",
    "require_existing_journal",
    "stored_options",
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
    options = _options(
        settings, client=client, window=window, clock=clock, progress=progress,
        allow_partial=allow_partial, dry_run=dry_run,
    )  # fmt: skip
    return settings, options


def stored_options(
    settings: Mapping[str, Any],
    *,
    client: MassivaClient | None,
    clock: Callable[[], pd.Timestamp],
    concurrency: int | None,
    rate: float | None,
    message_rate: float | None,
    progress: ProgressArg,
    allow_partial: bool,
    dry_run: bool,
) -> SendOptions:
    """The options of a run on a journal's rows (``dispatch``, follow-up sends): the
    settings of the send that journalled them, its concurrency and rates overridden by
    those given, and the client given or one from the environment (``opts.client``)."""
    conc = int(concurrency or settings.get("concurrency") or 4)
    max_phones = int(settings.get("max_phones") or 500)
    check_options(conc, max_phones)
    window = parse_window(settings.get("window"))
    client, _, verb = open_client(client, settings.get("method"), dry_run=dry_run)
    run = {
        **settings,
        "method": verb,
        "max_phones": max_phones,
        "concurrency": conc,
        "rate": rate if rate is not None else settings.get("rate"),
        "message_rate": message_rate if message_rate is not None else settings.get("message_rate"),
    }
    return _options(
        run, client=client, window=window, clock=clock, progress=progress,
        allow_partial=allow_partial, dry_run=dry_run,
    )  # fmt: skip


def _options(
    settings: Mapping[str, Any],
    *,
    client: MassivaClient | None,
    window: Window | None,
    clock: Callable[[], pd.Timestamp],
    progress: ProgressArg,
    allow_partial: bool,
    dry_run: bool,
) -> SendOptions:
    """A run's options from settings that hold its method, batch size, group,
    concurrency and rates."""
    return SendOptions(
        client=client,
        method=settings["method"],
        max_phones=settings["max_phones"],
        group=settings.get("group"),
        window=window,
        clock=clock,
        concurrency=settings["concurrency"],
        rate=settings["rate"],
        message_rate=settings["message_rate"],
        progress=progress,
        allow_partial=allow_partial,
        dry_run=dry_run,
    )


def require_existing_journal(journal: str | os.PathLike[str]) -> None:
    """Refuse a journal that does not exist (no such file, or a PostgreSQL schema that
    holds none): ``dispatch`` and follow-up sends work on an earlier send's."""
    if is_postgres_url(journal):
        from .journal.postgres import require_journal

        require_journal(str(journal))
    elif not os.path.exists(journal):
        raise InputError(f"journal not found: {os.fspath(journal)}")


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


@contextlib.contextmanager
def opened_journal(
    journal: str | os.PathLike[str] | None, dry_run: bool
) -> Iterator[JournalBackend]:
    """The journal of a run (:func:`open_journal`), locked but for a dry run, and verified:
    a damaged journal refuses before anything is written. Closed on exit; its storage
    errors leave as ``JournalError``."""
    with open_journal(journal, dry_run) as jr:
        if not dry_run:
            jr.lock()
        jr.verify()
        yield jr


def finish(
    journal: JournalBackend,
    run: int,
    summary: dict[str, Any],
    results: pd.DataFrame,
    stop: BaseException | None = None,
) -> pd.DataFrame:
    """Record the end of a run with its states counted; the figures on ``results.attrs``.

    ``stop``, the account error that ended the run early, is raised with the results so
    far on its ``results`` attribute."""
    counts = results["state"].value_counts()
    summary["states"] = {s: int(counts.get(s, 0)) for s in STATES if counts.get(s, 0)}
    journal.finish_run(run, summary)
    results.attrs["send"] = summary
    if summary.get("dry_run"):
        results.attrs["dry_run"] = summary
    if stop is not None:
        stop.results = results  # type: ignore[attr-defined]
        raise stop
    return results
