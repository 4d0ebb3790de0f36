"""Delivery: each message's final status callback joined to the results (``attach_delivery``).

::

    results = attach_delivery(results, "callback-logs")      # + delivered/failed

The summaries are in :mod:`massiva_frames.analytics.summary`, replies and opt-outs in
:mod:`massiva_frames.analytics.inbound`, the plots in :mod:`massiva_frames.analytics.plots`
(matplotlib is imported only there); the shapes they share in
:mod:`massiva_frames.analytics.shapes`.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ..errors import InputError
from .duckdb_engine import final_status_log, use_duckdb
from .shapes import DEFAULT_TZ, as_state, read_log, require, resolution, to_utc, utc_numpy

__all__ = ["attach_delivery", "final_statuses"]

#: States of rows the provider accepted: the only ones a status callback may change.
_PROVIDER_ACCEPTED = ("accepted", "delivered", "failed")

#: The reason a row gets when its final status callback says it failed.
DELIVERY_FAILED = "delivery_failed"

#: Status values of a log (docs/protocol.md §2: raw ``estatus`` codes mean the same).
_STATUS_CODES = {"delivered": 1, "failed": 0, "1": 1, "2": 0}


class _Final(NamedTuple):
    """The final event of each message: aligned arrays, one entry per message id."""

    ids: np.ndarray[Any, Any]  # int64, unique
    delivered: np.ndarray[Any, Any]  # bool: delivered, else failed
    at: np.ndarray[Any, Any]  # datetime64[us], UTC
    # the line of entry i is ``lines.iloc[line_at[i]]``: the log's own column when it
    # has one (taken once, straight to the results' rows), else made per entry
    lines: pd.Series  # string
    line_at: np.ndarray[Any, Any]  # intp


def _int_ids(values: pd.Series, what: str) -> pd.Series:
    """Message ids as ``Int64`` (cheap when they already are integers)."""
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.astype("Int64")
    try:
        return pd.to_numeric(values, errors="coerce" if what == "log" else "raise").astype("Int64")
    except (ValueError, TypeError) as exc:
        raise InputError(f"{what} column 'message_id' must hold integer ids") from exc


def _final_events(log: pd.DataFrame, tz: str) -> tuple[_Final, dict[str, Any]]:
    """One entry per message id: its latest status event (docs/protocol.md §2, §5.9)."""
    require(log, ("message_id", "status", "updated_at"), "the status log")
    stats: dict[str, Any] = {"events": len(log)}
    mid = _int_ids(log["message_id"], "log")
    # normalise the few distinct status values, not the million rows
    codes, uniques = pd.factorize(log["status"])
    known = [_STATUS_CODES.get(str(u).strip().lower(), -1) for u in uniques]
    status = np.array([*known, -1], dtype=np.int8)[codes]  # code -1 (missing) -> -1
    usable = np.flatnonzero(mid.notna().to_numpy(dtype=bool) & (status >= 0))
    stats["unusable_events"] = len(log) - len(usable)

    at = utc_numpy(to_utc(log["updated_at"], naive_tz=tz))[usable]
    if "received_at" in log.columns:
        received = utc_numpy(to_utc(log["received_at"], naive_tz=tz))[usable]
    else:
        received = np.full(len(usable), np.datetime64("NaT", "us"))
    # Later events win: order by the provider's time, then by arrival (a repeated
    # callback, docs/protocol.md §3, is harmless), then by position in the log (lexsort is
    # stable). Events without a time lose to dated ones: NaT is the smallest int64.
    order = np.lexsort((received.view("int64"), at.view("int64")))
    ids = mid.to_numpy(dtype="int64", na_value=0)[usable][order]
    # (a Series, not an Index: the Index first hashes every id to learn if they repeat)
    last = ~pd.Series(ids).duplicated(keep="last").to_numpy()
    chosen = usable[order[last]]  # row positions in the log

    line_at = np.arange(len(chosen), dtype=np.intp)
    if "line" in log.columns:
        line = log["line"].astype("string")
        line_at = chosen
    elif "detail" in log.columns:
        # docs/protocol.md §2: on success ``detalle`` is the dispatching line (+58414xxxxxxx)
        detail = log["detail"].iloc[chosen].astype("string").str.strip()
        line = detail.where(detail.str.fullmatch(r"\+?\d{10,15}").fillna(False))
    else:
        line = pd.Series(pd.NA, index=range(len(chosen)), dtype="string")
    final = _Final(
        ids=ids[last],
        delivered=status[chosen] == 1,
        at=at[order[last]],
        lines=line.reset_index(drop=True),
        line_at=line_at,
    )
    stats["messages"] = len(chosen)
    return final, stats


def final_statuses(
    status_log: pd.DataFrame | str | os.PathLike[str], *, tz: str = DEFAULT_TZ
) -> pd.Series:
    """Each message's final status: ``"delivered"`` or ``"failed"``, by ``message_id``.

    The event that wins is the one :func:`attach_delivery` takes (the provider's latest,
    docs/protocol.md §2); events without a usable id or status are left out.

    Parameters
    ----------
    status_log : DataFrame or path
        A status log (``read_callbacks(..., kind="status")``) or the receiver's LOGDIR.
    tz : str
        The zone of naive ``updated_at`` values.

    Returns
    -------
    Series
        ``"delivered"``/``"failed"`` (object), indexed by the int64 message id.

    Examples
    --------
    >>> final_statuses("callback-logs").value_counts()  # doctest: +SKIP
    """
    final, _ = _final_events(read_log(status_log, "status", tz), tz)
    values = np.where(final.delivered, "delivered", "failed").astype(object)
    return pd.Series(values, index=pd.Index(final.ids, name="message_id"), name="status")


def attach_delivery(
    results: pd.DataFrame,
    status_log: pd.DataFrame | str | os.PathLike[str],
    *,
    tz: str = DEFAULT_TZ,
    engine: str = "auto",
) -> pd.DataFrame:
    """Add each message's final delivery status from the status-callback log.

    Rows the provider accepted (``state == "accepted"``) become ``delivered`` or
    ``failed`` when the log has a final status for their ``message_id``; rows with no
    callback yet stay ``accepted`` (pending). When several events exist for one message,
    the latest ``updated_at`` wins (ties: the latest ``received_at``). Rows in any other
    state (invalid, rejected, unknown...) never change, and events whose id matches no
    accepted row are ignored and counted. Running it again with a newer log updates the
    rows that were already ``delivered``/``failed`` too.

    Parameters
    ----------
    results : DataFrame
        The results frame of :func:`massiva_frames.send` (needs ``state`` and
        ``message_id``; ``sent_at`` for the latency).
    status_log : DataFrame or path
        The status log (``read_callbacks(logdir, kind="status")``), or the LOGDIR itself.
    tz : str, default "America/Caracas"
        Zone of naive ``updated_at``/``received_at`` values (docs/protocol.md §5).
    engine : {"auto", "pandas", "duckdb"}, default "auto"
        Who reads a LOGDIR: ``"duckdb"`` picks each message's final event out of core
        (:func:`massiva_frames.analytics.duckdb_engine.final_status_log`), the same
        answer; ``"auto"`` does so when the status parquet files exceed
        :data:`~massiva_frames.analytics.duckdb_engine.AUTO_BYTES` and DuckDB is installed.
        A log frame is read by pandas.

    Returns
    -------
    DataFrame
        A copy of ``results`` (same index and columns) with ``state`` updated (a
        categorical with every state), ``reason = "delivery_failed"`` on failed rows,
        and new columns ``status_at`` (UTC time of the final status), ``delivered_at``
        (``status_at`` of delivered rows), ``line`` (the line that dispatched it) and
        ``latency`` (send to delivery, at the precision of the provider's clock: see
        Notes). ``attrs["delivery"]`` counts the events read, the messages they cover,
        the matched rows and the ids that matched no accepted row, and gives the
        ``latency_resolution_s`` (1.0 for whole-second stamps, 0.001 for milliseconds).

    Notes
    -----
    The latency is the difference of two clocks' readings: ``sent_at`` is this
    machine's, with microseconds; ``delivered_at`` is the provider's ``updated_at``,
    stamped in whole seconds (docs/protocol.md §2). Subtracting an exact time from a
    truncated one gives a fraction that only says where in its second the message was
    sent (the ``.06`` of ``2.06 s``), not how long the delivery took. So ``sent_at`` is
    read at the resolution the provider's stamps show, found in the data: 1 s when every
    ``delivered_at`` is a whole second, else 1 ms or 1 µs. ``latency = delivered_at -
    floor(sent_at)``: with whole-second stamps it is a whole number of seconds, *n*
    meaning the delivery was stamped *n* clock ticks after the second of the send (the
    true delay is between *n* - 1 and *n* + 1 s); sub-second only when the stamps have
    it. A delivery stamped one tick before the send's tick (the clocks disagree by less
    than a tick) counts as 0; anything earlier is left negative, so a clock or zone
    problem stays visible.

    Examples
    --------
    >>> status = read_callbacks("callback-logs", kind="status")  # doctest: +SKIP
    >>> final = attach_delivery(results, status)                 # doctest: +SKIP
    >>> final["state"].value_counts()                            # doctest: +SKIP
    """
    require(results, ("state", "message_id"), "results")
    whole: dict[str, Any] = {}
    if isinstance(status_log, str | os.PathLike) and use_duckdb(engine, None, log=status_log):
        log = final_status_log(status_log, tz=tz)  # one event per message, picked by DuckDB
        whole = {str(k): v for k, v in log.attrs.items()}
    else:
        log = read_log(status_log, "status", tz)
    final, stats = _final_events(log, tz)
    stats.update(whole)  # the whole log's events, not the one per message

    out = results.copy()
    n = len(out)
    state = as_state(out["state"])
    mid = _int_ids(out["message_id"], "results")
    eligible = np.asarray(state.isin(_PROVIDER_ACCEPTED)) & mid.notna().to_numpy(dtype=bool)

    # A hash lookup of each row's id in the (unique) final ids: no sort of the results,
    # and the results' index and order stay as they are.
    pos = np.full(n, -1, dtype=np.intp)
    ids = mid.to_numpy(dtype="int64", na_value=0)
    pos[eligible] = pd.Index(final.ids).get_indexer(ids[eligible])
    hit = pos >= 0
    src = pos[hit]
    now_delivered = np.zeros(n, dtype=bool)
    now_delivered[hit] = final.delivered[src]
    now_failed = hit & ~now_delivered

    codes = state.codes.copy()
    cats = list(state.categories)
    codes[now_delivered] = cats.index("delivered")
    codes[now_failed] = cats.index("failed")
    new_state = pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(cats))
    out["state"] = pd.Series(new_state, index=out.index)

    if "reason" in out.columns:
        reason = out["reason"].astype("string")
    else:
        reason = pd.Series(pd.NA, index=out.index, dtype="string")
    out["reason"] = reason.mask(now_failed, DELIVERY_FAILED).mask(now_delivered, pd.NA)

    # Start from a previous attach's values, so rows without a new event keep them.
    if "status_at" in out.columns:
        status_at = utc_numpy(to_utc(out["status_at"], naive_tz="UTC")).copy()
    else:
        status_at = np.full(n, np.datetime64("NaT", "us"))
    status_at[hit] = final.at[src]
    out["status_at"] = pd.Series(status_at, index=out.index).dt.tz_localize("UTC")

    line_at = np.full(n, -1, dtype=np.intp)
    line_at[hit] = final.line_at[src]
    taken = pd.Series(final.lines.array.take(line_at, allow_fill=True), index=out.index)
    if "line" in out.columns:
        taken = taken.where(hit, out["line"].astype("string"))
    out["line"] = taken

    delivered = np.asarray(new_state == "delivered")
    out["delivered_at"] = out["status_at"].where(delivered)
    # docs/protocol.md §2: the provider stamps whole seconds; our clock is read at the
    # resolution its stamps show (see Notes), so the difference has no invented fraction
    tick = resolution(out["delivered_at"])
    if "sent_at" in out.columns:
        sent_at = to_utc(out["sent_at"], naive_tz="UTC").dt.floor(tick)
        latency = out["delivered_at"] - sent_at
        early = (latency < pd.Timedelta(0)) & (latency >= -tick)
        out["latency"] = latency.mask(early, pd.Timedelta(0))
    else:
        out["latency"] = pd.Series(pd.NaT, index=out.index, dtype="timedelta64[us]")

    matched = np.zeros(len(final.ids), dtype=bool)
    matched[src] = True
    stats["matched_rows"] = int(hit.sum())
    stats["unmatched_ids"] = int((~matched).sum())
    stats["latency_resolution_s"] = tick.total_seconds()  # a float: attrs go to parquet as JSON
    out.attrs["delivery"] = stats
    return out
