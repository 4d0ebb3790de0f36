"""Send a campaign bigger than memory: a source read chunk by chunk, results written as
a parquet dataset (docs/architecture.md).

:func:`send_stream` reads its source twice, one chunk at a time (:mod:`.sources`):

1. **pre-flight**: every chunk validated and keyed, the messages still to send counted
   (those new to the journal, plus those it holds pending), distinct keys counted once,
   and the total checked against the account's credits, as ``send`` does for one frame:
   :class:`~massiva_frames.errors.InsufficientCreditsError` before any request unless
   ``allow_partial``;
2. **sending**: each chunk journalled, sent and read back as ``send`` does with one
   frame, then its results written as one part of the ``out`` dataset
   (``part-00000.parquet``, ...: a temporary file renamed into place, after the chunk's
   outcomes are committed to the journal).

Duplicates across chunks: a row whose key the journal already holds when its chunk is
first journalled was sent (or journalled) by an earlier chunk or run; it is not sent
again and comes back ``suppressed`` (``duplicate``, or ``duplicate_key`` with ``key=``),
as a repeated row of one frame does. Which rows those were is recorded with the chunk, in
the same commit, under the chunk's fingerprint (its number and values), so a re-run
after a kill tells the chunk's own messages from duplicates and finishes it. Chunks a
run completed (results written, nothing pending) are skipped by the re-run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import InputError, InsufficientCreditsError, MassivaError
from .calls import check_options, open_client, opened_journal, plan_run, prepare_frame
from .due import SendOptions, make_clock, send_due
from .journal.backend import JournalBackend
from .journal.checks import KeyPrints
from .journal.sqlite import Journal
from .loop import ProgressArg
from .results import STATES, index_meta
from .rows import objects, own_results, pending_of, stored_rows
from .scheduling import due_times, parse_window
from .sources import Chunk, iter_chunks, one_shot, replay, spill

if TYPE_CHECKING:
    from ..wire.client import MassivaClient

__all__ = ["StreamSummary", "send_stream"]

logger = logging.getLogger("massiva_frames.sending.campaign")

#: the journal's meta key of a chunk's record (its fingerprint follows)
_RECORD = "stream_chunk:"


@dataclass
class StreamSummary:
    """The figures of a streamed send; the rows' results are in the ``out`` dataset.

    Attributes
    ----------
    out : str
        The results dataset (a directory of ``part-NNNNN.parquet`` files, one per chunk).
    chunks, rows : int
        Chunks and rows read from the source.
    states : dict
        Rows by result state (as ``send``'s ``results["state"].value_counts()``).
    requests, messages, new_messages : int
        Requests made and messages sent by this run; messages it added to the journal.
    credits_needed : int
        Messages the pre-flight counted as still to send (one credit each).
    segments_needed : int
        Their segments (carriers bill long or UCS-2 texts per segment).
    credits_available : int or None
        The account's credits before the first request (None on a dry run without
        credentials).
    resumed_chunks : int
        Chunks an earlier run had completed: skipped (their parts kept).
    max_chunk_rows : int
        The most rows held at once (the largest chunk): memory is bounded by it.
    seconds : float
        Wall time of the run.
    dry_run : bool
        Only the pre-flight ran: nothing was sent nor written.
    """

    out: str
    chunks: int = 0
    rows: int = 0
    states: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    messages: int = 0
    new_messages: int = 0
    credits_needed: int = 0
    segments_needed: int = 0
    credits_available: int | None = None
    resumed_chunks: int = 0
    max_chunk_rows: int = 0
    seconds: float = 0.0
    dry_run: bool = False

    def results(self) -> pd.DataFrame:
        """The results dataset read back as one frame (it must fit in memory)."""
        return pd.read_parquet(self.out)


@dataclass
class _Context:
    """What every chunk of one streamed send shares."""

    jr: JournalBackend
    opts: SendOptions
    prepare: Callable[[Chunk], tuple[pd.DataFrame, pd.DataFrame]]
    settings: dict[str, Any]
    campaign_key: str
    key: str | None
    out: Path
    resend_unknown: bool


def send_stream(
    source: Any,
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
) -> StreamSummary:
    """Send a source bigger than memory chunk by chunk; write the results as parquet.

    Each chunk of ``chunk_rows`` rows is validated, journalled, sent and written as one
    part of the ``out`` dataset, so memory is bounded by the chunk, not the campaign.
    A chunk sent alone gives the results ``send`` gives for the same frame.

    Parameters
    ----------
    source : str, path, pyarrow.dataset.Dataset or iterable of DataFrames
        A parquet dataset (directory, file or glob), a CSV file or glob (cells read as
        text), or DataFrames one after another (``pd.read_csv(..., chunksize=...)``).
        Rows of a file source are labelled by their row number in it, from 0.
    out : str or path
        The results directory, one ``part-NNNNN.parquet`` per chunk (a part is replaced
        whole: temporary file, then rename; parts numbered beyond the source's chunks are
        removed at the end). ``pd.read_parquet(out)`` reads them all;
        ``results_from_journal`` refuses a journal whose latest send was streamed (it
        would hold the last chunk only) and names this dataset.
    chunk_rows : int
        Most rows per chunk (and so held in memory at once).
    journal : str or path, optional
        As ``send``. A re-run after a kill needs the same journal, source (in the same
        order) and ``chunk_rows``: it sends nothing twice, skips the chunks done and
        completes the rest.
    key : str, optional
        A column of stable row keys. Without it a row's key is campaign + phone + text
        (``send``'s), which does not depend on where the row is in the source.
    send_at : timestamp, str or column name, optional
        As ``send``; a sequence of times is refused (no chunk holds every row).
    progress : bool or callable
        A bar over the source's rows; a callable ``f(done_rows, total_rows)`` is called
        after each chunk instead.
    dry_run : bool
        Only the pre-flight: count the messages and credits, send and write nothing.
    client, phone, text, template, campaign, concurrency, rate, message_rate, window, \
group, allow_partial, resend_unknown, method, max_phones, now, **validate_options
        As :func:`~massiva_frames.sending.campaign.send`.

    Returns
    -------
    StreamSummary
        The run's figures (``states``, ``requests``, ``credits_needed``...).

    Raises
    ------
    InputError
        A bad source or chunk (a missing column, an empty source, an item that is not a
        DataFrame), naming the chunk, its rows and the column; raised by the
        pre-flight, before any request.
    InsufficientCreditsError
        The whole campaign needs more credits than the account has; nothing was sent.
    AccountError
        Refused mid-run: what was sent is journalled and the chunks done are written.

    Examples
    --------
    >>> summary = send_stream("audience/", out="results/", phone="telefono",
    ...                       template="Hola {nombre}", journal="sends.db",
    ...                       chunk_rows=50_000)  # doctest: +SKIP
    >>> summary.states  # doctest: +SKIP
    {'accepted': 4999990, 'invalid': 10}
    >>> pd.read_parquet("results/")["state"].value_counts()  # doctest: +SKIP
    """
    started = time.perf_counter()
    check_options(concurrency, max_phones)
    if isinstance(send_at, (list, tuple, pd.Series, pd.Index, np.ndarray)):
        raise InputError("a streamed send takes send_at as one time or a column name")
    win = parse_window(window)
    client, own_client, verb = open_client(client, method, dry_run=dry_run)
    campaign_key = "" if campaign is None else str(campaign)

    def prepare(chunk: Chunk) -> tuple[pd.DataFrame, pd.DataFrame]:
        try:
            return prepare_frame(
                chunk.frame,
                client=client,
                verb=verb,
                max_phones=max_phones,
                group=group,
                campaign_key=campaign_key,
                key=key,
                send_at=send_at,
                phone=phone,
                text=text,
                template=template,
                validate_options=validate_options,
            )
        except InputError as exc:
            raise InputError(f"{chunk.where}: {exc}") from exc

    # the chunks' own run is never a dry one (a dry run stops after the pre-flight)
    settings, opts = plan_run(
        client=client, verb=verb, window=win, clock=make_clock(now), progress=False,
        allow_partial=allow_partial, dry_run=False, campaign=campaign, phone=phone,
        text=text, template=template, key=key, validate_options=validate_options,
        max_phones=max_phones, group=group, concurrency=concurrency, rate=rate,
        message_rate=message_rate,
    )  # fmt: skip
    summary = StreamSummary(out=os.fspath(out), dry_run=dry_run)
    spilled = ""
    wheres: list[str] = []
    try:
        with contextlib.ExitStack() as stack, opened_journal(journal, dry_run) as jr:
            recovered = jr.recover() if not dry_run else 0
            if isinstance(jr, Journal):  # chunk after chunk: no rescan of older messages
                jr.key_prints = KeyPrints()
            ctx = _Context(
                jr, opts, prepare, settings, campaign_key, key, Path(out), resend_unknown
            )
            first = iter_chunks(source, chunk_rows=chunk_rows)
            if one_shot(source) and not dry_run:  # read once: kept on disk for pass 2
                ctx.out.mkdir(parents=True, exist_ok=True)
                spilled = stack.enter_context(
                    tempfile.TemporaryDirectory(prefix=".spill-", dir=ctx.out)
                )
                first = spill(first, Path(spilled), wheres)
            total, chunks = _preflight(ctx, first, summary)
            if summary.credits_needed and client is not None:
                try:
                    summary.credits_available = client.credits()
                except MassivaError:
                    if not dry_run:
                        raise
            available = summary.credits_available
            if dry_run:
                summary.rows, summary.chunks = total, chunks
                summary.seconds = round(time.perf_counter() - started, 3)
                return summary
            if available is not None and summary.credits_needed > available:
                if not allow_partial:
                    needed, segments = summary.credits_needed, summary.segments_needed
                    raise InsufficientCreditsError(
                        -6,
                        explanation=(
                            f"the send needs {needed} credits ({needed} messages, "
                            f"{segments} segments) but the account has {available}; nothing "
                            "was sent (allow_partial=True sends what fits)"
                        ),
                        needed=needed,
                        available=available,
                    )
                logger.warning(
                    "credits for %d of %d messages: the chunks send what fits, in order",
                    available,
                    summary.credits_needed,
                )
            ctx.out.mkdir(parents=True, exist_ok=True)
            run = jr.start_run("send")
            figures: dict[str, Any] = {"recovered_unknown": recovered, "streamed": True}
            try:
                second = (
                    replay(Path(spilled), wheres)
                    if spilled
                    else iter_chunks(source, chunk_rows=chunk_rows)
                )
                _send_chunks(ctx, second, summary, total, progress)
            finally:
                summary.seconds = round(time.perf_counter() - started, 3)
                figures.update(
                    {k: v for k, v in vars(summary).items() if k not in ("out", "seconds")}
                )
                figures["seconds"] = summary.seconds
                jr.finish_run(run, figures)
            return summary
    finally:
        if own_client and client is not None:
            client.close()


def _done(record: Any, resend_unknown: bool) -> bool:
    """Whether a chunk's record says a run completed it and there is nothing left."""
    if not isinstance(record, dict) or not record.get("done"):
        return False
    return not record.get("pending") and not (resend_unknown and record.get("unknown"))


def _duplicates(ctx: _Context, rows: pd.DataFrame, record: Any) -> np.ndarray[Any, Any]:
    """Positions of the chunk's ready rows the journal held before the chunk: recorded
    with the chunk on its first run, looked up otherwise."""
    if isinstance(record, dict):
        return np.asarray(record.get("duplicates", []), dtype=np.int64)
    keys = objects(rows["row_key"])
    ready = np.flatnonzero(pd.notna(keys))
    if not len(ready):
        return np.array([], dtype=np.int64)
    known = ctx.jr.pending_counts(keys[ready].tolist())
    if not known:
        return np.array([], dtype=np.int64)
    found = np.fromiter((k in known for k in keys[ready].tolist()), dtype=bool, count=len(ready))
    duplicates: np.ndarray[Any, Any] = ready[found]
    return duplicates


def _preflight(ctx: _Context, chunks: Iterator[Chunk], summary: StreamSummary) -> tuple[int, int]:
    """Pass 1: every chunk checked and keyed; the messages still to send counted (each
    distinct key once); returns the source's rows and chunks."""
    prefixes: list[np.ndarray[Any, Any]] = []
    weights: list[np.ndarray[Any, Any]] = []
    segments: list[np.ndarray[Any, Any]] = []
    rows_seen = chunks_seen = 0
    now = ctx.opts.clock()
    for chunk in chunks:
        rows_seen += len(chunk.frame)
        chunks_seen += 1
        summary.max_chunk_rows = max(summary.max_chunk_rows, len(chunk.frame))
        record = ctx.jr.get_meta(_RECORD + _fingerprint(ctx, chunk))
        if _done(record, ctx.resend_unknown):
            continue
        rows, _ = ctx.prepare(chunk)
        keys = objects(rows["row_key"])
        ready = pd.notna(keys)
        wanted = pd.Series(rows["send_at"].array)
        _, due = due_times(wanted, ctx.opts.window, now)
        at = np.flatnonzero(ready & due.to_numpy(dtype=bool))
        if not len(at):
            continue
        keys_at = keys[at].tolist()
        parts = rows["parts"].to_numpy(dtype=np.int64)[at].tolist()
        known = ctx.jr.pending_counts(keys_at)
        pairs = zip(keys_at, parts, strict=True)
        if isinstance(record, dict):  # journalled before: its own rows, minus duplicates
            weight = np.array([known.get(k, p) for k, p in pairs], dtype=np.int64)
            dup = np.asarray(record.get("duplicates", []), dtype=np.int64)
            weight[np.isin(at, dup)] = 0
        else:  # a key already journalled will be a duplicate
            weight = np.array([0 if k in known else p for k, p in pairs], dtype=np.int64)
        seg = pd.to_numeric(rows["segments"].iloc[at], errors="coerce").fillna(1).to_numpy()
        prefixes.append(np.array([int(k[:16], 16) for k in keys_at], dtype=np.uint64))
        weights.append(weight.astype(np.int64))
        segments.append(np.where(weight > 0, seg, 0).astype(np.int64))
    if prefixes:
        # A key repeated across chunks is sent once: count its first occurrence only.
        _, first = np.unique(np.concatenate(prefixes), return_index=True)
        summary.credits_needed = int(np.concatenate(weights)[first].sum())
        summary.segments_needed = int(np.concatenate(segments)[first].sum())
    return rows_seen, chunks_seen


def _fingerprint(ctx: _Context, chunk: Chunk) -> str:
    return chunk.fingerprint(ctx.campaign_key, str(ctx.key))


def _send_chunks(
    ctx: _Context, chunks: Iterator[Chunk], summary: StreamSummary, total: int,
    progress: ProgressArg,
) -> None:  # fmt: skip
    """Pass 2: each chunk journalled, sent and written; its record marked done."""
    bar: Any = None
    if progress is True and total:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="row", desc="massiva send", leave=True)
    try:
        for chunk in chunks:
            n = len(chunk.frame)
            summary.chunks += 1
            summary.rows += n
            summary.max_chunk_rows = max(summary.max_chunk_rows, n)
            name = _RECORD + _fingerprint(ctx, chunk)
            record = ctx.jr.get_meta(name)
            part = ctx.out / f"part-{chunk.number:05d}.parquet"
            if _done(record, ctx.resend_unknown) and part.exists():
                summary.resumed_chunks += 1
                _add_states(summary, record.get("states", {}))
            else:
                _send_chunk(ctx, chunk, name, record, part, summary)
            if bar is not None:
                bar.update(n)
            elif callable(progress):
                progress(summary.rows, total)
    finally:
        if bar is not None:
            bar.close()
    for stale in ctx.out.glob("part-*.parquet"):  # parts of a longer earlier source
        number = stale.stem.removeprefix("part-")
        if number.isdigit() and int(number) >= summary.chunks:
            stale.unlink()


def _add_states(summary: StreamSummary, states: dict[str, int]) -> None:
    for state, count in states.items():
        summary.states[state] = summary.states.get(state, 0) + int(count)
    summary.states = {s: summary.states[s] for s in STATES if summary.states.get(s)}


def _send_chunk(
    ctx: _Context, chunk: Chunk, name: str, record: Any, part: Path, summary: StreamSummary
) -> None:
    """One chunk as ``send`` does one frame, its duplicates of earlier chunks suppressed;
    its results part written once its outcomes are committed."""
    jr, df = ctx.jr, chunk.frame
    rows, messages = ctx.prepare(chunk)
    with jr.transaction():  # the rows, their messages and the chunk's record: one commit
        dup = _duplicates(ctx, rows, record)
        if len(dup):
            rows.loc[dup, "input_state"] = "suppressed"
            rows.loc[dup, "reason"] = "duplicate" if ctx.key is None else "duplicate_key"
            rows.loc[dup, "row_key"] = None
            rows.loc[dup, "parts"] = 1
            keep = ~messages["position"].isin(dup).to_numpy()
            messages = messages[keep].reset_index(drop=True)
        stored = stored_rows(rows, df.index)
        sending, others = stored.records()
        meta = {"index": index_meta(df.index), "settings": ctx.settings}
        meta["streamed"] = {"out": os.fspath(ctx.out)}  # its results: the out dataset
        meta[name] = {"chunk": chunk.number, "duplicates": dup.tolist(), "done": False}
        jr.replace_rows(others, meta, sending=sending)
        first, added = jr.insert_messages(
            *(messages[c].tolist() for c in ("row_key", "part", "phone", "text")),
            campaign=ctx.campaign_key,
        )
    fresh = added == len(messages) and not ctx.resend_unknown
    if ctx.resend_unknown:
        jr.requeue(set(rows["row_key"].dropna()), states=("unknown",))
    pending = pending_of(jr, messages, rows, first if fresh else None)
    figures, stop, answered = send_due(jr, pending, rows, ctx.opts)
    if fresh and not (stored.parts > 1).any():
        results = own_results(jr, stored, messages, first, df.index, answered)
    else:
        results = jr.results(index=df.index)
    _write_part(results, part)
    counts = results["state"].value_counts()
    states = {s: int(counts.get(s, 0)) for s in STATES if counts.get(s, 0)}
    jr.set_meta(
        {
            name: {
                "chunk": chunk.number,
                "duplicates": dup.tolist(),
                "done": True,
                "pending": states.get("scheduled", 0),
                "unknown": states.get("unknown", 0),
                "states": states,
            }
        }
    )
    _add_states(summary, states)
    summary.new_messages += added
    summary.requests += int(figures.get("requests") or 0)
    summary.messages += int(figures.get("messages") or 0)
    if stop is not None:
        stop.results = results  # type: ignore[attr-defined]
        stop.summary = summary  # type: ignore[attr-defined]
        raise stop


def _write_part(results: pd.DataFrame, part: Path) -> None:
    """Write a results part whole or not at all: a temporary file, synced, renamed."""
    results = results.copy(deep=False)
    results.attrs = {}
    tmp = part.with_name(f".{part.name}.tmp")
    results.to_parquet(tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, part)
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(part.parent, os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
