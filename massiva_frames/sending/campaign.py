"""Send a DataFrame: validate → plan → journal → transport → results (docs/architecture.md).

The results frame has one row per input row, the input's index, and only the result
columns (``phone, text, state, reason, batch, message_id, sid, request_status,
api_message, sent_at, encoding, segments, attempt, first_message_id``), so
``df.join(results)`` never collides. ``attempt`` is 1 until a follow-up send
(:mod:`.resending`) sends a row again.

States and reasons (``reason`` is a stable code; ``api_message`` the provider's text or,
for a failed request, the error)::

    invalid     failed validation (validation's codes), ``send_at_invalid``,
                ``key_missing``, ``url_too_long`` (GET only)
    suppressed  ``duplicate``, ``opted_out`` (validation), ``duplicate_key``
    scheduled   journalled, not sent (yet): ``not_due`` (send_at or window later),
                ``dry_run``, ``insufficient_credits`` (pre-flight), and requests that
                provably never reached the provider: ``not_sent_connect_failed``,
                ``not_sent_rate_limited``, ``not_sent_url_too_long``,
                ``not_sent_input_error``; refused by the account (the run stopped):
                ``not_sent_authentication_failed``, ``not_sent_no_active_plan``,
                ``not_sent_insufficient_credits``, ``not_sent_account_error``; and
                ``run_stopped`` (its turn never came)
    cancelled   taken out of the outbox by :func:`~massiva_frames.sending.cancelling.cancel`
                before it was sent: ``cancelled``; never sent afterwards
    accepted    the provider accepted it (celular status 0): ``message_id``, ``sid``
    rejected    the provider refused it: ``provider_rejected`` (celular status 2, or a
                status-0 answer without entries), ``missing_fields``, ``api_error``
    unknown     the request may have reached the provider: ``in_doubt_no_response``
                (timeout, connection lost), ``in_doubt_http_status`` (HTTP 5xx),
                ``in_doubt_bad_response`` (not the expected XML), ``in_doubt_mismatch``
                (the entries did not match the phones), ``in_doubt_inconsistent`` (they
                contradict each other or the status), ``in_doubt_process_stopped``
                (the process died mid-request), ``in_doubt_error`` (anything else)

A row split into parts (``long_text="split"``) is ``accepted`` only when every part is;
otherwise it takes the worst part's state (unknown, then rejected, then scheduled) and
a ``some_parts_<state>`` reason; it shows its first part's ``message_id`` and ``sid``.

``scheduled`` rows go out with a re-run of the same call or ``dispatch``; ``unknown``
rows never go out again unless ``resend_unknown=True``.

Credits: the pre-flight compares the messages to send with ``credits()`` (the provider
and the sandbox take one credit per accepted SMS); the segments are reported beside
them (``results.attrs["send"]``), as carriers bill long or UCS-2 texts per segment.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, overload

import pandas as pd

from ..errors import InputError
from .calls import (
    check_options,
    finish,
    open_client,
    opened_journal,
    plan_run,
    require_existing_journal,
    stored_options,
)
from .due import make_clock, mark_too_long_for_get, send_due
from .journal.postgres_url import is_postgres_url
from .journal.sqlite import results_from_journal as _results_from_file
from .loop import ProgressArg
from .results import STATES, index_meta
from .rows import own_results, pending_of, prepare_rows, stored_rows
from .scheduling import parse_window

if TYPE_CHECKING:
    from ..wire.client import MassivaClient
    from .streaming import StreamSummary

__all__ = ["STATES", "dispatch", "results_from_journal", "send"]

logger = logging.getLogger("massiva_frames.sending.campaign")


@overload
def send(
    df: pd.DataFrame,
    *,
    out: None = None,
    chunk_rows: int = 100_000,
    client: MassivaClient | None = None,
    phone: str = "phone",
    text: str | None = None,
    template: str | None = None,
    journal: str | os.PathLike[str] | None = None,
    campaign: str | None = None,
    key: str | None = None,
    dry_run: bool = False,
    concurrency: int = 4,
    rate: float | None = None,
    message_rate: float | None = None,
    send_at: Any = None,
    window: tuple[str, str] | None = None,
    group: str | None = None,
    progress: ProgressArg = True,
    allow_partial: bool = False,
    resend_unknown: bool = False,
    method: str | None = None,
    max_phones: int = 500,
    now: Any = None,
    **validate_options: Any,
) -> pd.DataFrame: ...


@overload
def send(
    df: Any,
    *,
    out: str | os.PathLike[str],
    chunk_rows: int = 100_000,
    client: MassivaClient | None = None,
    phone: str = "phone",
    text: str | None = None,
    template: str | None = None,
    journal: str | os.PathLike[str] | None = None,
    campaign: str | None = None,
    key: str | None = None,
    dry_run: bool = False,
    concurrency: int = 4,
    rate: float | None = None,
    message_rate: float | None = None,
    send_at: Any = None,
    window: tuple[str, str] | None = None,
    group: str | None = None,
    progress: ProgressArg = True,
    allow_partial: bool = False,
    resend_unknown: bool = False,
    method: str | None = None,
    max_phones: int = 500,
    now: Any = None,
    **validate_options: Any,
) -> StreamSummary: ...


def send(
    df: Any,
    *,
    out: str | os.PathLike[str] | None = None,
    chunk_rows: int = 100_000,
    client: MassivaClient | None = None,
    phone: str = "phone",
    text: str | None = None,
    template: str | None = None,
    journal: str | os.PathLike[str] | None = None,
    campaign: str | None = None,
    key: str | None = None,
    dry_run: bool = False,
    concurrency: int = 4,
    rate: float | None = None,
    message_rate: float | None = None,
    send_at: Any = None,
    window: tuple[str, str] | None = None,
    group: str | None = None,
    progress: ProgressArg = True,
    allow_partial: bool = False,
    resend_unknown: bool = False,
    method: str | None = None,
    max_phones: int = 500,
    now: Any = None,
    **validate_options: Any,
) -> pd.DataFrame | StreamSummary:
    """Validate, plan, journal and send a DataFrame of SMS; return one result per row.

    Given a source bigger than memory (a parquet dataset, a CSV file, an iterable of
    DataFrames) and ``out=``, it sends it chunk by chunk instead:
    :func:`~massiva_frames.sending.streaming.send_stream`, which writes the results as a
    parquet dataset and returns a
    :class:`~massiva_frames.sending.streaming.StreamSummary`.

    Parameters
    ----------
    df : DataFrame, or a streamed source with ``out=``
        The rows to send; its index is kept in the results, so its labels must be unique
        (:class:`~massiva_frames.errors.InputError` otherwise, before anything is sent).
    out : str or path, optional
        Send chunk by chunk and write the results to this directory (one parquet part
        per chunk); required for a source that is not a DataFrame.
    chunk_rows : int
        With ``out``: the most rows per chunk.
    client : MassivaClient, optional
        Defaults to one built from ``MASSIVA_USUARIO``/``MASSIVA_CLAVE``/``MASSIVA_BASE_URL``.
    phone : str, default "phone"
        The phone column, as for :func:`~massiva_frames.prepare.validation.validate`.
    text : str, optional
        The column holding each row's text (or ``template``).
    template : str, optional
        A template of column names with format specs, e.g. ``"Hola {nombre}"``.
    **validate_options
        Passed to :func:`~massiva_frames.prepare.validation.validate` (options such as
        ``blank="keep"``, ``allow_international=True``, ``long_text``, ``suppress``).
    journal : str or path, optional
        The journal that makes the send idempotent, resumable and schedulable: a SQLite
        file, or a ``postgresql://`` URL (a journal several workers share). Defaults to
        ``MASSIVA_JOURNAL``; without either, an in-memory journal is used and forgotten.
    campaign : str, optional
        Part of every row's stable key (campaign + phone + text): the same phone and
        text in another campaign is another message.
    key : str, optional
        A column holding the rows' own stable keys (instead of phone + text).
    dry_run : bool
        Validate and plan, report the requests and credits (``results.attrs["dry_run"]``),
        send nothing and write nothing.
    concurrency : int
        Requests in flight at once (threads sharing the client's pooled session).
    rate, message_rate : float, optional
        Most requests per second; most messages per second.
    send_at : timestamp, str, column name or sequence, optional
        When rows are due; naive times are America/Caracas. Rows not due yet stay
        ``scheduled`` in the journal for :func:`dispatch`.
    window : (str, str), optional
        Quiet hours, e.g. ``("08:00", "20:00")`` America/Caracas: rows due outside it
        move to its next opening.
    group : str, optional
        The provider's contact group (``grupo``).
    progress : bool or callable
        A ``tqdm.auto`` bar (a widget in Jupyter); ``False`` for silence; a callable
        ``f(done, total)`` is called after each request instead.
    allow_partial : bool
        When the credits do not cover the send, send the rows that fit (in order); the
        rest stay ``scheduled`` with reason ``insufficient_credits``. Otherwise
        :class:`~massiva_frames.errors.InsufficientCreditsError` and nothing is sent.
    resend_unknown : bool
        Send again the rows left ``unknown`` by an earlier run (they may be received
        twice).
    method : {"POST", "GET"}, optional
        Defaults to the client's.
    max_phones : int
        Most phones per request (docs/protocol.md §5).
    now : timestamp, optional
        The current time for scheduling decisions (tests, back-fills).

    Returns
    -------
    DataFrame
        ``phone, text, state, reason, batch, message_id, sid, request_status,
        api_message, sent_at, encoding, segments, attempt, first_message_id``
        (``attempt`` 1 and ``first_message_id`` the ``message_id`` for a row sent
        once: see ``resend``); the run's figures are in
        ``results.attrs["send"]``. A row split into parts shows its first part's
        ``message_id``/``sid`` and is ``accepted`` only if every part was.

    Raises
    ------
    InsufficientCreditsError
        Pre-flight shortfall (``needed``, ``available``); nothing was sent.
    AccountError
        Authentication, plan or credits refused mid-run: what was sent is journalled,
        the results so far are on the exception's ``results`` attribute.

    Examples
    --------
    >>> results = send(df, phone="telefono", template="Hola {nombre}",
    ...                journal="sends.db", campaign="enero")  # doctest: +SKIP
    >>> results["state"].value_counts()  # doctest: +SKIP
    >>> df.join(results[["state", "message_id"]])  # doctest: +SKIP
    """
    if out is not None or not isinstance(df, pd.DataFrame):
        if out is None:
            raise InputError(
                f"send takes a DataFrame, got {type(df).__name__}: a streamed source "
                "(parquet dataset, CSV, iterable of frames) needs out= for its results"
            )
        from .streaming import send_stream

        return send_stream(
            df, out=out, chunk_rows=chunk_rows, client=client, phone=phone, text=text,
            template=template, journal=journal, campaign=campaign, key=key, dry_run=dry_run,
            concurrency=concurrency, rate=rate, message_rate=message_rate, send_at=send_at,
            window=window, group=group, progress=progress, allow_partial=allow_partial,
            resend_unknown=resend_unknown, method=method, max_phones=max_phones, now=now,
            **validate_options,
        )  # fmt: skip
    check_options(concurrency, max_phones)
    win = parse_window(window)
    clock = make_clock(now)
    from ..prepare.validation import validate

    validated = validate(df, phone=phone, text=text, template=template, **validate_options)
    client, own_client, verb = open_client(client, method, dry_run=dry_run)
    if verb == "GET":
        # A row too long for any GET URL becomes invalid (url_too_long) before journalling.
        validated = mark_too_long_for_get(
            validated, client=client, max_phones=max_phones, group=group
        )
    campaign_key = "" if campaign is None else str(campaign)
    rows, messages = prepare_rows(df, validated, campaign=campaign_key, key=key, send_at=send_at)
    settings, opts = plan_run(
        client=client, verb=verb, window=win, clock=clock, progress=progress,
        allow_partial=allow_partial, dry_run=dry_run, campaign=campaign, phone=phone,
        text=text, template=template, key=key, validate_options=validate_options,
        max_phones=max_phones, group=group, concurrency=concurrency, rate=rate,
        message_rate=message_rate,
    )  # fmt: skip
    try:
        with opened_journal(journal, dry_run) as jr:
            # One commit for the recovery, the run and the rows with their messages: a
            # journal whose key index misses an added message rolls it all back.
            with jr.transaction():
                recovered = jr.recover()
                run = jr.start_run("dry_run" if dry_run else "send")
                stored = stored_rows(rows, df.index)
                sending, others = stored.records()
                meta = {"index": index_meta(df.index), "settings": settings, "streamed": None}
                jr.replace_rows(others, meta, sending=sending)
                first, added = jr.insert_messages(
                    *(messages[c].tolist() for c in ("row_key", "part", "phone", "text")),
                    campaign=campaign_key,
                )
            if recovered:
                logger.warning(
                    "%d messages were in flight when an earlier run stopped: they are unknown "
                    "and will not be resent (resend_unknown=True opts in)",
                    recovered,
                )
            fresh = added == len(messages) and not resend_unknown
            if resend_unknown:
                jr.requeue(set(rows["row_key"].dropna()), states=("unknown",))
            pending = pending_of(jr, messages, rows, first if fresh else None)
            summary, stop, answered = send_due(jr, pending, rows, opts)
            summary.update(rows=len(df), new_messages=added, recovered_unknown=recovered)
            if fresh and not (stored.parts > 1).any():
                results = own_results(jr, stored, messages, first, df.index, answered)
            else:
                results = jr.results(index=df.index)
            return finish(jr, run, summary, results, stop)
    finally:
        if own_client and client is not None:
            client.close()


def results_from_journal(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Rebuild the results frame of the latest send from its journal alone.

    ``path`` is a SQLite file or a ``postgresql://`` URL. The frame is the one ``send``
    returned (same index labels and dtypes), updated with everything sent since (by a
    re-run or ``dispatch``). Messages whose process died mid-request read as
    ``unknown``. The journal is opened read-only.

    Raises
    ------
    InputError
        The journal does not exist, or its latest send was streamed (``send(source,
        out=...)``): the error names the parquet dataset holding that send's results.

    Examples
    --------
    >>> results = results_from_journal("sends.db")  # doctest: +SKIP
    >>> results["state"].value_counts()  # doctest: +SKIP
    """
    if is_postgres_url(path):
        from .journal.postgres import postgres_results

        return postgres_results(str(path))
    return _results_from_file(path)


def dispatch(
    journal: str | os.PathLike[str],
    *,
    client: MassivaClient | None = None,
    now: Any = None,
    concurrency: int | None = None,
    rate: float | None = None,
    message_rate: float | None = None,
    progress: ProgressArg = False,
    allow_partial: bool = False,
) -> pd.DataFrame:
    """Send what is due in a journal, then return its results frame.

    For cron and Airflow: scheduled rows whose time has come (and rows a previous run
    could not send: connection failed, credits short) go out with the settings of the
    send that journalled them (method, batch size, group, window). Rows in doubt
    (``unknown``) are never resent here.

    Examples
    --------
    >>> results = dispatch("sends.db")  # doctest: +SKIP
    >>> results.attrs["send"]["requests"]  # doctest: +SKIP
    """
    require_existing_journal(journal)
    own_client = client is None
    try:
        with opened_journal(journal, dry_run=False) as jr:
            settings: dict[str, Any] = jr.get_meta("settings") or {}
            opts = stored_options(
                settings, client=client, clock=make_clock(now), concurrency=concurrency,
                rate=rate, message_rate=message_rate, progress=progress,
                allow_partial=allow_partial, dry_run=False,
            )  # fmt: skip
            client = opts.client
            recovered = jr.recover()
            run = jr.start_run("dispatch")
            summary, stop, _ = send_due(jr, jr.pending(), None, opts)
            summary.update(recovered_unknown=recovered)
            return finish(jr, run, summary, jr.results(), stop)
    finally:
        if own_client and client is not None:
            client.close()
