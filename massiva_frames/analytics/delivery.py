"""Delivery analytics: join results with the callback logs, summarise, find replies.

The verbs take and return DataFrames::

    results = attach_delivery(results, "callback-logs")      # + delivered/failed
    delivery_summary(results, by="operator")                  # counts and rates
    replies(results, "callback-logs")                         # inbound -> message sent
    opt_outs("callback-logs")                                 # suppression list

Shapes (DESIGN.md "Shapes that everything shares"): a results frame has ``phone``,
``text``, ``state`` (category), ``reason``, ``batch``, ``message_id`` (Int64), ``sid``,
``request_status``, ``api_message``, ``sent_at`` (UTC), ``encoding``, ``segments``; a
status log has ``message_id, status (delivered|failed), updated_at, user, detail, line,
received_at``; an inbound log has ``text, phone, line, email, received_at``.

The plots live in :mod:`massiva_frames.analytics.plots` (matplotlib is imported only there).
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Hashable, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

from ..errors import InputError
from ..prepare.phones import OPERATOR_NAMES

__all__ = [
    "DEFAULT_OPT_OUT_KEYWORDS",
    "DEFAULT_TZ",
    "OPERATORS",
    "STATES",
    "attach_delivery",
    "delivery_summary",
    "operator_of",
    "opt_outs",
    "replies",
]

#: docs/protocol.md §5: callback times carry no zone; Venezuelan local time.
DEFAULT_TZ = "America/Caracas"

#: Every value of the results' ``state`` column, in lifecycle order (DESIGN.md).
STATES: tuple[str, ...] = (
    "invalid",
    "suppressed",
    "scheduled",
    "accepted",
    "rejected",
    "unknown",
    "delivered",
    "failed",
)

#: States of rows the provider accepted: the only ones a status callback may change.
_PROVIDER_ACCEPTED = ("accepted", "delivered", "failed")

#: docs/protocol.md §1: Venezuelan mobile operator codes (the 3 digits after ``58``) and their
#: carriers, as phones.py knows them (422 is Digitel's newer range).
OPERATORS: dict[str, str] = dict(OPERATOR_NAMES)
_OPERATOR_ORDER = ("Movistar", "Digitel", "Movilnet", "other", "(none)")

#: Opt-out keywords (Spanish and English), matched accent- and case-insensitively as
#: whole words: "Baja por favor", "BAJA." and "dénme de baja" match, "bajar" does not.
DEFAULT_OPT_OUT_KEYWORDS: tuple[str, ...] = (
    "STOP",
    "BAJA",
    "SALIR",
    "CANCELAR",
    "DETENER",
    "PARAR",
    "DESUSCRIBIR",
    "DESUSCRIBIRME",
    "NO MAS",
    "UNSUBSCRIBE",
)

#: The reason a row gets when its final status callback says it failed.
DELIVERY_FAILED = "delivery_failed"

# The provider's timestamps have a one-second resolution (docs/protocol.md §2: hh:mm:ss): a
# delivery stamped in the same second as the send may look up to 1 s early.
_CLOCK_RESOLUTION = pd.Timedelta(seconds=1)

_US = "datetime64[us, UTC]"


# --------------------------------------------------------------------------- helpers


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"{what} must be a DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{what} has no column {', '.join(map(repr, missing))}")


def _read_log(log: Any, kind: Literal["status", "inbound"], tz: str) -> pd.DataFrame:
    """Accept a log frame, or a LOGDIR path that ``read_callbacks`` reads."""
    if isinstance(log, str | os.PathLike):
        from ..receiving import read_callbacks

        frame: pd.DataFrame = read_callbacks(log, kind=kind, tz=tz)
        return frame
    if not isinstance(log, pd.DataFrame):
        raise InputError(f"the {kind} log must be a DataFrame or a LOGDIR path")
    return log


def _to_utc(values: pd.Series, *, naive_tz: str) -> pd.Series:
    """Timestamps as ``datetime64[us, UTC]``; naive ones are read in ``naive_tz``."""
    s = values
    if not isinstance(s.dtype, pd.DatetimeTZDtype) and not pd.api.types.is_datetime64_dtype(
        s.dtype
    ):
        try:
            s = pd.to_datetime(s, errors="coerce", format="ISO8601")
        except (ValueError, TypeError):
            # mixed offsets: let pandas bring them all to UTC
            s = pd.to_datetime(s, errors="coerce", format="ISO8601", utc=True)
    if not isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_localize(naive_tz, ambiguous="NaT", nonexistent="NaT")
    utc: pd.Series = s.dt.tz_convert("UTC").astype(_US)
    return utc


def _utc_numpy(values: pd.Series) -> np.ndarray[Any, Any]:
    """A UTC timestamp Series as a plain ``datetime64[us]`` array (NaT kept)."""
    naive = values.dt.tz_convert("UTC").dt.tz_localize(None)
    array: np.ndarray[Any, Any] = naive.to_numpy(dtype="datetime64[us]")
    return array


def _as_state(values: pd.Series) -> pd.Categorical:
    """The ``state`` column as a categorical carrying every state in :data:`STATES`."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        current = pd.Categorical(values)  # the same codes, no refactorising
        extra = [c for c in current.categories if c not in STATES]
        wanted = [*STATES, *extra]
        if list(current.categories) == wanted:
            return current
        return current.set_categories(wanted)
    as_str = values.astype("string")
    extra = sorted(set(as_str.dropna().unique()) - set(STATES))
    return pd.Categorical(as_str, categories=[*STATES, *extra])


def _normalise_phone(values: pd.Series) -> pd.Series:
    """Callback phones to the canonical ``58XXXXXXXXXX`` form (digits only).

    Callbacks carry phones as the provider formats them (docs/protocol.md §3: ``58412123456``);
    a leading ``+``/``00`` is dropped and a national ``0414…`` gets the country code.
    """
    s = values.astype("string").str.replace(r"\.0$", "", regex=True)
    s = s.str.replace(r"\D", "", regex=True)
    s = s.str.replace(r"^00", "", regex=True)
    s = s.mask(s.str.len().eq(11) & s.str.startswith("0"), "58" + s.str.slice(1))
    s = s.mask(s.str.len().eq(10) & s.str.startswith("4"), "58" + s)
    return s.mask(s.eq(""))


def operator_of(phones: pd.Series, *, codes: bool = False) -> pd.Series:
    """The carrier of each normalised phone (``Movistar``, ``Digitel``, ``Movilnet``).

    Parameters
    ----------
    phones : Series
        Normalised phones (``58`` + operator code + 7 digits, docs/protocol.md §1).
    codes : bool, default False
        Return the 3-digit operator code (``"414"``) instead of the carrier name.

    Returns
    -------
    Series
        Categorical carrier names; ``other`` for numbers outside the Venezuelan mobile
        plan, ``(none)`` for a missing phone. With ``codes=True``, strings (<NA> when the
        phone is not a Venezuelan mobile number).

    Examples
    --------
    >>> operator_of(pd.Series(["584141234567", "584261234567", None])).tolist()
    ['Movistar', 'Movilnet', '(none)']
    """
    s = phones.astype("string")
    venezuelan = s.str.len().eq(12) & s.str.startswith("58")
    code = s.str.slice(2, 5).where(venezuelan.fillna(False))
    code = code.where(code.isin(list(OPERATORS)))
    if codes:
        return code.rename("prefix")
    name = code.map(OPERATORS).astype("string")
    name = name.mask(name.isna() & s.notna(), "other").fillna("(none)")
    return pd.Series(
        pd.Categorical(name, categories=list(_OPERATOR_ORDER)), index=phones.index, name="operator"
    )


# ---------------------------------------------------------------- attach_delivery


#: Status values of a log (docs/protocol.md §2: raw ``estatus`` codes mean the same).
_STATUS_CODES = {"delivered": 1, "failed": 0, "1": 1, "2": 0}


class _Final(NamedTuple):
    """The final event of each message: aligned arrays, one entry per message id."""

    ids: np.ndarray[Any, Any]  # int64, unique
    delivered: np.ndarray[Any, Any]  # bool: delivered, else failed
    at: np.ndarray[Any, Any]  # datetime64[us], UTC
    line: pd.Series  # string


def _int_ids(values: pd.Series, what: str) -> pd.Series:
    """Message ids as ``Int64`` (cheap when they already are integers)."""
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.astype("Int64")
    try:
        return pd.to_numeric(values, errors="coerce" if what == "log" else "raise").astype("Int64")
    except (ValueError, TypeError) as exc:
        raise InputError(f"{what} column 'message_id' must hold integer ids") from exc


def _final_events(log: pd.DataFrame, tz: str) -> tuple[_Final, dict[str, int]]:
    """One entry per message id: its latest status event (docs/protocol.md §2; later events win)."""
    _require(log, ("message_id", "status", "updated_at"), "the status log")
    stats = {"events": len(log)}
    mid = _int_ids(log["message_id"], "log")
    # normalise the few distinct status values, not the million rows
    codes, uniques = pd.factorize(log["status"])
    known = [_STATUS_CODES.get(str(u).strip().lower(), -1) for u in uniques]
    status = np.array([*known, -1], dtype=np.int8)[codes]  # code -1 (missing) -> -1
    usable = np.flatnonzero(mid.notna().to_numpy(dtype=bool) & (status >= 0))
    stats["unusable_events"] = len(log) - len(usable)

    at = _utc_numpy(_to_utc(log["updated_at"], naive_tz=tz))[usable]
    if "received_at" in log.columns:
        received = _utc_numpy(_to_utc(log["received_at"], naive_tz=tz))[usable]
    else:
        received = np.full(len(usable), np.datetime64("NaT", "us"))
    # Later events win: order by the provider's time, then by arrival (a repeated
    # callback, docs/protocol.md §3, is harmless), then by position in the log (lexsort is
    # stable). Events without a time lose to dated ones: NaT is the smallest int64.
    order = np.lexsort((received.view("int64"), at.view("int64")))
    ids = mid.to_numpy(dtype="int64", na_value=0)[usable][order]
    last = ~pd.Index(ids).duplicated(keep="last")
    chosen = usable[order[last]]  # row positions in the log

    if "line" in log.columns:
        line = log["line"].iloc[chosen].astype("string")
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
        line=line.reset_index(drop=True),
    )
    stats["messages"] = len(chosen)
    return final, stats


def attach_delivery(
    results: pd.DataFrame,
    status_log: pd.DataFrame | str | os.PathLike[str],
    *,
    tz: str = DEFAULT_TZ,
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

    Returns
    -------
    DataFrame
        A copy of ``results`` (same index and columns) with ``state`` updated (a
        categorical with every state), ``reason = "delivery_failed"`` on failed rows,
        and new columns ``status_at`` (UTC time of the final status), ``delivered_at``
        (``status_at`` of delivered rows), ``line`` (the line that dispatched it) and
        ``latency`` (``delivered_at - sent_at``; the provider's 1-second clock may make
        it look up to 1 s negative, which is clipped to 0). ``attrs["delivery"]`` counts
        the events read, the messages they cover, the matched rows, and the ids that
        matched no accepted row.

    Examples
    --------
    >>> status = read_callbacks("callback-logs", kind="status")  # doctest: +SKIP
    >>> final = attach_delivery(results, status)                 # doctest: +SKIP
    >>> final["state"].value_counts()                            # doctest: +SKIP
    """
    _require(results, ("state", "message_id"), "results")
    log = _read_log(status_log, "status", tz)
    final, stats = _final_events(log, tz)

    out = results.copy()
    n = len(out)
    state = _as_state(out["state"])
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
        status_at = _utc_numpy(_to_utc(out["status_at"], naive_tz="UTC")).copy()
    else:
        status_at = np.full(n, np.datetime64("NaT", "us"))
    status_at[hit] = final.at[src]
    out["status_at"] = pd.Series(status_at, index=out.index).dt.tz_localize("UTC")

    taken = pd.Series(final.line.array.take(pos, allow_fill=True), index=out.index)
    if "line" in out.columns:
        taken = taken.where(hit, out["line"].astype("string"))
    out["line"] = taken

    delivered = np.asarray(new_state == "delivered")
    out["delivered_at"] = out["status_at"].where(delivered)
    if "sent_at" in out.columns:
        sent_at = _to_utc(out["sent_at"], naive_tz="UTC")
        latency = out["delivered_at"] - sent_at
        # the provider stamps whole seconds: a same-second delivery may look early
        early = (latency < pd.Timedelta(0)) & (latency > -_CLOCK_RESOLUTION)
        out["latency"] = latency.mask(early, pd.Timedelta(0))
    else:
        out["latency"] = pd.Series(pd.NaT, index=out.index, dtype="timedelta64[us]")

    matched = np.zeros(len(final.ids), dtype=bool)
    matched[src] = True
    stats["matched_rows"] = int(hit.sum())
    stats["unmatched_ids"] = int((~matched).sum())
    out.attrs["delivery"] = stats
    return out


# --------------------------------------------------------------- delivery_summary

_SUMMARY_COLUMNS = (
    "rows",
    "invalid",
    "suppressed",
    "scheduled",
    "rejected",
    "unknown",
    "sent",
    "delivered",
    "failed",
    "pending",
    "delivery_rate",
    "failure_rate",
    "pending_rate",
    "median_latency_s",
    "p90_latency_s",
)


def _group_key(frame: pd.DataFrame, key: Hashable, tz: str) -> pd.Series:
    """The grouping Series for one ``by`` entry (a frame column always wins)."""
    if key in frame.columns:
        return frame[key]
    if key in ("operator", "prefix"):
        _require(frame, ("phone",), "the frame")
        return operator_of(frame["phone"], codes=key == "prefix")
    if key in ("hour", "date"):
        _require(frame, ("sent_at",), "the frame")
        local = _to_utc(frame["sent_at"], naive_tz="UTC").dt.tz_convert(tz)
        derived: pd.Series = (
            local.dt.hour.astype("Int64") if key == "hour" else local.dt.date
        ).rename(key)
        return derived
    if key == "campaign":
        send_info = frame.attrs.get("send")
        name = frame.attrs.get("campaign")
        if name is None and isinstance(send_info, dict):
            name = send_info.get("campaign")
        if name is not None:
            return pd.Series(str(name), index=frame.index, name="campaign")
        raise InputError("cannot group by 'campaign': the frame has no 'campaign' column")
    raise InputError(
        f"cannot group by {key!r}: not a column, nor one of operator, prefix, hour, date"
    )


def _summary_table(
    counts: np.ndarray[Any, Any], rows: np.ndarray[Any, Any], latency: pd.DataFrame
) -> dict[str, Any]:
    """Summary columns from per-group state counts (groups x STATES)."""
    n = {s: counts[:, i] for i, s in enumerate(STATES)}
    sent = n["accepted"] + n["delivered"] + n["failed"]
    table: dict[str, Any] = {
        "rows": rows,
        "invalid": n["invalid"],
        "suppressed": n["suppressed"],
        "scheduled": n["scheduled"],
        "rejected": n["rejected"],
        "unknown": n["unknown"],
        "sent": sent,
        "delivered": n["delivered"],
        "failed": n["failed"],
        "pending": n["accepted"],
    }
    with np.errstate(invalid="ignore", divide="ignore"):
        denominator = np.where(sent > 0, sent, np.nan)
        table["delivery_rate"] = n["delivered"] / denominator
        table["failure_rate"] = n["failed"] / denominator
        table["pending_rate"] = n["accepted"] / denominator
    table["median_latency_s"] = latency["median"].to_numpy(dtype=float)
    table["p90_latency_s"] = latency["p90"].to_numpy(dtype=float)
    return table


def delivery_summary(
    frame: pd.DataFrame,
    by: Hashable | Sequence[Hashable] | None = "operator",
    *,
    tz: str = DEFAULT_TZ,
    total: bool = False,
) -> pd.DataFrame:
    """Counts and rates per group of a results frame (after :func:`attach_delivery`).

    Parameters
    ----------
    frame : DataFrame
        A results frame, usually with delivery attached (needs ``state``).
    by : str, list of str or None, default "operator"
        ``"operator"`` (carrier from the phone's code: Movistar 414/424, Digitel 412,
        Movilnet 416/426), ``"prefix"`` (the 3-digit code), ``"batch"``,
        ``"campaign"`` (a ``campaign`` column, else ``frame.attrs["campaign"]`` or
        ``frame.attrs["send"]["campaign"]``),
        ``"hour"`` (hour of day of ``sent_at`` in ``tz``, 0-23), ``"date"`` (local day
        of ``sent_at``), or any column name. A column of that name always wins. A list
        groups by several keys; ``None`` gives one overall row.
    tz : str, default "America/Caracas"
        Zone for ``hour`` and ``date``.
    total : bool, default False
        Append a ``total`` row over every group.

    Returns
    -------
    DataFrame
        One row per group (missing keys form their own group), with columns ``rows``,
        ``invalid``, ``suppressed``, ``scheduled``, ``rejected``, ``unknown``, ``sent``
        (accepted by the provider: delivered + failed + pending), ``delivered``,
        ``failed``, ``pending`` (accepted, no final callback yet), ``delivery_rate`` =
        delivered / sent, ``failure_rate`` = failed / sent, ``pending_rate`` = pending /
        sent (NaN when nothing was sent), and ``median_latency_s`` / ``p90_latency_s``
        (seconds from send to delivery, delivered rows).

    Examples
    --------
    >>> delivery_summary(attach_delivery(results, status), by="operator")  # doctest: +SKIP
              rows  invalid  ...  delivery_rate  ...  median_latency_s
    operator
    Movistar   612        0  ...          0.912  ...               4.0
    """
    _require(frame, ("state",), "the frame")
    state = _as_state(frame["state"])
    if "latency" in frame.columns:
        seconds = pd.to_timedelta(frame["latency"], errors="coerce").dt.total_seconds()
        latency_s = seconds.to_numpy(dtype=float, na_value=np.nan)
    else:
        latency_s = np.full(len(frame), np.nan)
    # latency is a delivered-row measure (attach_delivery leaves the others NaT)
    latency_s = np.where(np.asarray(state == "delivered"), latency_s, np.nan)

    keys: list[Hashable]
    if by is None:
        keys = []
    elif isinstance(by, str) or not isinstance(by, Sequence):
        keys = [by]
    else:
        keys = list(by)

    if keys:
        series = [_group_key(frame, k, tz) for k in keys]
        names = [str(k) for k in keys]
        grouping = pd.DataFrame(
            {n: s.reset_index(drop=True) for n, s in zip(names, series, strict=True)}
        )
        grouped = grouping.groupby(names, dropna=False, observed=True, sort=True)
        group = grouped.ngroup().to_numpy()
        index: pd.Index = grouped.size().index
        ngroups = len(index)
    else:
        group = np.zeros(len(frame), dtype=np.intp)
        index = pd.Index(["all"])
        ngroups = 1

    # one pass over the rows: a (group x state) count matrix
    codes = state.codes.astype(np.intp)
    nstates = len(STATES)
    known = (codes >= 0) & (codes < nstates)
    flat = np.bincount(group[known] * nstates + codes[known], minlength=ngroups * nstates)
    counts = flat.reshape(ngroups, nstates)
    rows = np.bincount(group, minlength=ngroups)
    lat = pd.Series(latency_s).groupby(group)
    latency = pd.DataFrame({"median": lat.median(), "p90": lat.quantile(0.9)}).reindex(
        range(ngroups)
    )
    table = pd.DataFrame(_summary_table(counts, rows, latency), index=index)

    if total and keys:
        overall = pd.Series(latency_s).dropna()
        total_latency = pd.DataFrame(
            {
                "median": [overall.median() if len(overall) else np.nan],
                "p90": [overall.quantile(0.9) if len(overall) else np.nan],
            }
        )
        label: Any = ("total", *[""] * (len(keys) - 1)) if len(keys) > 1 else "total"
        index_total = (
            pd.MultiIndex.from_tuples([label], names=index.names)
            if len(keys) > 1
            else pd.Index([label], name=index.name)
        )
        extra = pd.DataFrame(
            _summary_table(
                counts.sum(axis=0, keepdims=True), np.array([len(frame)]), total_latency
            ),
            index=index_total,
        )
        table = pd.concat([table, extra])
    return table[list(_SUMMARY_COLUMNS)]


# ------------------------------------------------------------------------ replies

#: States of rows that may have reached the phone (a failed message never did).
_REACHABLE = ("accepted", "delivered", "unknown")


def replies(
    results: pd.DataFrame,
    inbound_log: pd.DataFrame | str | os.PathLike[str],
    *,
    tz: str = DEFAULT_TZ,
    within: pd.Timedelta | str | None = None,
) -> pd.DataFrame:
    """Attribute each inbound SMS to the last message sent to that phone before it.

    Parameters
    ----------
    results : DataFrame
        A results frame (``phone``, ``state``, ``sent_at``; ``message_id``/``text``).
        Only rows that may have reached the phone count as sent: ``accepted``,
        ``delivered`` and ``unknown`` (a ``failed`` message never arrived).
    inbound_log : DataFrame or path
        The inbound log (``read_callbacks(logdir, kind="inbound")``) or the LOGDIR.
    tz : str, default "America/Caracas"
        Zone of naive ``received_at`` values.
    within : Timedelta or str, optional
        Only attribute a reply received at most this long after the send (``"3D"``).

    Returns
    -------
    DataFrame
        The inbound log (its index and columns; ``received_at`` in UTC), plus ``row``
        (the results' index label of the message replied to), ``message_id``,
        ``sent_text``, ``sent_at`` and ``reply_delay``, and ``batch``/``campaign`` when
        the results have them. An inbound text with no earlier send to its phone is
        kept, with <NA> in those columns.

    Examples
    --------
    >>> inbound = read_callbacks("callback-logs", kind="inbound")  # doctest: +SKIP
    >>> replies(results, inbound)[["phone", "text", "row", "sent_text"]]  # doctest: +SKIP
    """
    _require(results, ("phone", "state", "sent_at"), "results")
    inbound = _read_log(inbound_log, "inbound", tz)
    _require(inbound, ("phone", "received_at"), "the inbound log")

    received = _to_utc(inbound["received_at"], naive_tz=tz)
    left = pd.DataFrame(
        {
            "_pos": np.arange(len(inbound)),
            "_phone": _normalise_phone(inbound["phone"]).to_numpy(),
            "_t": _utc_numpy(received),
        }
    )
    left = left[left["_phone"].notna() & left["_t"].notna()].sort_values("_t", kind="stable")

    state = _as_state(results["state"])
    sent_at = _to_utc(results["sent_at"], naive_tz="UTC")
    right = pd.DataFrame(
        {
            "_row": np.arange(len(results)),
            "_phone": _normalise_phone(results["phone"]).to_numpy(),
            "_t": _utc_numpy(sent_at),
        }
    )
    reachable = np.asarray(state.isin(_REACHABLE))
    right = right[reachable & right["_phone"].notna().to_numpy() & right["_t"].notna().to_numpy()]
    right = right.sort_values("_t", kind="stable")
    # one dtype on both sides, whatever pandas inferred for an empty side
    left["_phone"] = left["_phone"].astype(object)
    right["_phone"] = right["_phone"].astype(object)

    tolerance = None if within is None else pd.Timedelta(within)
    matched = pd.merge_asof(
        left, right, on="_t", by="_phone", direction="backward", tolerance=tolerance
    )
    row_pos = np.full(len(inbound), -1, dtype=np.intp)
    found = matched["_row"].notna().to_numpy()
    row_pos[matched["_pos"].to_numpy()[found]] = matched["_row"].to_numpy()[found].astype(np.intp)
    has = row_pos >= 0
    take = row_pos[has]

    out = inbound.copy()
    out["received_at"] = received
    rows = np.full(len(out), None, dtype=object)
    rows[has] = np.asarray(results.index, dtype=object)[take]
    out["row"] = pd.Series(rows, index=out.index, dtype=object)

    def pick(column: str, dtype: Any) -> pd.Series:
        source = results[column].reset_index(drop=True)
        values = source.take(np.where(has, row_pos, 0)).to_numpy(dtype=object)
        values[~has] = None
        return pd.Series(values, index=out.index).astype(dtype)

    if "message_id" in results.columns:
        out["message_id"] = pick("message_id", "Int64")
    if "text" in results.columns:
        out["sent_text"] = pick("text", "string")
    sent = _utc_numpy(sent_at)[np.where(has, row_pos, 0)]
    sent[~has] = np.datetime64("NaT")
    out["sent_at"] = pd.Series(sent, index=out.index).dt.tz_localize("UTC")
    out["reply_delay"] = out["received_at"] - out["sent_at"]
    for column, dtype in (("batch", "Int64"), ("campaign", "string")):
        if column in results.columns:
            out[column] = pick(column, dtype)
    return out


# ---------------------------------------------------------------------- opt_outs


def _fold(text: str) -> str:
    """Case- and accent-insensitive form: ``"Báj́a"`` -> ``"baja"``."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _fold_series(values: pd.Series) -> pd.Series:
    s = values.astype("string").str.normalize("NFKD")
    s = s.str.replace(r"[\u0300-\u036f]", "", regex=True)
    return s.str.casefold()


def opt_outs(
    inbound_log: pd.DataFrame | str | os.PathLike[str],
    *,
    keywords: Sequence[str] = DEFAULT_OPT_OUT_KEYWORDS,
    match: Literal["word", "start", "exact"] = "word",
    tz: str = DEFAULT_TZ,
) -> pd.DataFrame:
    """The suppression list: phones that texted an opt-out keyword.

    Matching ignores case and accents (``"Bája"`` = ``"BAJA"``) and works on whole
    words: with ``match="word"`` a keyword anywhere in the text counts ("por favor
    BAJA", "Stop."), but not inside a longer word ("bajar", "stopped"). ``"start"``
    requires the text to begin with the keyword; ``"exact"`` requires the keyword to
    be all there is (punctuation and spaces aside). Multi-word keywords (``"NO MAS"``)
    match across any spacing or punctuation.

    Parameters
    ----------
    inbound_log : DataFrame or path
        The inbound log (``text``, ``phone``, ``received_at``) or the LOGDIR.
    keywords : sequence of str, default :data:`DEFAULT_OPT_OUT_KEYWORDS`
        The opt-out keywords.
    match : {"word", "start", "exact"}, default "word"
        How strict the match is (above).
    tz : str, default "America/Caracas"
        Zone of naive ``received_at`` values.

    Returns
    -------
    DataFrame
        One row per phone, columns ``phone`` (normalised), ``keyword`` (as given in
        ``keywords``), ``text`` and ``received_at`` of its first opt-out message, sorted
        by time. ``validate(df, suppress=opt_outs(...))`` accepts it as it is.

    Examples
    --------
    >>> inbound = pd.DataFrame({"phone": ["584141234567", "584241234567"],
    ...                         "text": ["Baja por favor", "Gracias"],
    ...                         "received_at": pd.Timestamp("2024-05-01 10:00", tz="UTC")})
    >>> opt_outs(inbound)[["phone", "keyword"]].to_dict("records")
    [{'phone': '584141234567', 'keyword': 'BAJA'}]
    """
    if isinstance(keywords, str):
        keywords = [keywords]
    if match not in ("word", "start", "exact"):
        raise InputError(f"match must be 'word', 'start' or 'exact', not {match!r}")
    inbound = _read_log(inbound_log, "inbound", tz)
    _require(inbound, ("phone", "text"), "the inbound log")
    empty = pd.DataFrame(
        {
            "phone": pd.Series(dtype="string"),
            "keyword": pd.Series(dtype="string"),
            "text": pd.Series(dtype="string"),
            "received_at": pd.Series(dtype=_US),
        }
    )
    folded_kw: dict[str, str] = {}
    for kw in keywords:
        words = re.findall(r"[0-9a-z]+", _fold(str(kw)))
        if words:
            folded_kw.setdefault(" ".join(words), str(kw))
    if not folded_kw or inbound.empty:
        return empty

    # longest first, so "no mas" is tried before a shorter keyword it contains
    alternatives = "|".join(
        r"[^0-9a-z]+".join(map(re.escape, k.split()))
        for k in sorted(folded_kw, key=len, reverse=True)
    )
    edge = r"(?:[^0-9a-z]|$)"
    pattern = {
        "word": rf"(?:^|[^0-9a-z])({alternatives}){edge}",
        "start": rf"^[^0-9a-z]*({alternatives}){edge}",
        "exact": rf"^[^0-9a-z]*({alternatives})[^0-9a-z]*$",
    }[match]
    folded = _fold_series(inbound["text"])
    found = folded.str.extract(pattern, expand=False)
    hit = found.notna().to_numpy(bool)
    if not hit.any():
        return empty

    if "received_at" in inbound.columns:
        received = _to_utc(inbound["received_at"], naive_tz=tz)
    else:
        received = pd.Series(pd.NaT, index=inbound.index, dtype=_US)
    keyword = found[hit].str.replace(r"[^0-9a-z]+", " ", regex=True).map(folded_kw)
    out = pd.DataFrame(
        {
            "phone": _normalise_phone(inbound["phone"])[hit].to_numpy(),
            "keyword": keyword.astype("string").to_numpy(),
            "text": inbound["text"].astype("string")[hit].to_numpy(),
            "received_at": received[hit].to_numpy(),
        }
    )
    out = out[out["phone"].notna()]
    out = out.sort_values("received_at", kind="stable", na_position="last")
    out = out.drop_duplicates("phone", keep="first").reset_index(drop=True)
    return out.astype({"phone": "string", "keyword": "string", "text": "string"})
