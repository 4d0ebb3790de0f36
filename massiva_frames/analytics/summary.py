"""Summaries: counts and rates of a results frame per group (``delivery_summary``).

::

    delivery_summary(results, by="operator")                  # counts and rates

Also the carrier of each phone (``operator_of``), the default grouping.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from ..prepare.phones import OPERATOR_NAMES
from .duckdb_engine import use_duckdb
from .shapes import DEFAULT_TZ, STATES, as_state, require, to_utc

__all__ = ["OPERATORS", "delivery_summary", "observed_quantiles", "operator_of"]

#: docs/protocol.md §1: Venezuelan mobile operator codes (the 3 digits after ``58``) and their
#: carriers, as phones.py knows them (422 is Digitel's newer range).
OPERATORS: dict[str, str] = dict(OPERATOR_NAMES)
_OPERATOR_ORDER = ("Movistar", "Digitel", "Movilnet", "other", "(none)")


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
    venezuelan = (s.str.len().eq(12) & s.str.startswith("58")).to_numpy(bool, na_value=False)
    prefix = s.str.slice(2, 5)
    # a million phones hold few distinct prefixes: decide per prefix, then take
    position, distinct = pd.factorize(prefix)  # -1: missing phone
    uniques = [str(u) for u in distinct]
    known = np.array([u in OPERATORS for u in uniques] + [False])[position] & venezuelan
    if codes:
        return prefix.where(pd.Series(known, index=prefix.index)).rename("prefix")
    other, none = _OPERATOR_ORDER.index("other"), _OPERATOR_ORDER.index("(none)")
    name_of = [_OPERATOR_ORDER.index(OPERATORS[u]) if u in OPERATORS else other for u in uniques]
    name = np.where(known, np.array([*name_of, other])[position], other)
    name[position < 0] = none
    return pd.Series(
        pd.Categorical.from_codes(
            name.astype(np.int8), dtype=pd.CategoricalDtype(list(_OPERATOR_ORDER))
        ),
        index=phones.index,
        name="operator",
    )


_SUMMARY_COLUMNS = (
    "rows",
    "invalid",
    "suppressed",
    "scheduled",
    "cancelled",
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
        require(frame, ("phone",), "the frame")
        return operator_of(frame["phone"], codes=key == "prefix")
    if key in ("hour", "date"):
        require(frame, ("sent_at",), "the frame")
        local = to_utc(frame["sent_at"], naive_tz="UTC").dt.tz_convert(tz)
        derived: pd.Series = (
            local.dt.hour.astype("Int64") if key == "hour" else local.dt.date
        ).rename(key)
        return derived
    if key == "attempt":  # results written before follow-up sends: first attempts only
        require(frame, ("message_id",), "the frame")
        first = pd.Series(1, index=frame.index, dtype="Int64", name="attempt")
        return first.where(frame["message_id"].notna().to_numpy(dtype=bool))
    if key == "campaign":
        send_info = frame.attrs.get("send")
        name = frame.attrs.get("campaign")
        if name is None and isinstance(send_info, dict):
            name = send_info.get("campaign")
        if name is not None:
            return pd.Series(str(name), index=frame.index, name="campaign")
        raise InputError("cannot group by 'campaign': the frame has no 'campaign' column")
    raise InputError(
        f"cannot group by {key!r}: not a column, nor one of operator, prefix, hour, date, "
        "attempt, campaign"
    )


def observed_quantiles(
    values: np.ndarray[Any, Any], group: np.ndarray[Any, Any], ngroups: int, qs: Sequence[float]
) -> np.ndarray[Any, Any]:
    """Per group and share ``q``: the smallest value that at least ``q`` of its values do
    not exceed.

    The empirical quantile without interpolation (numpy's ``method="inverted_cdf"``): an
    observed value, so it has the precision of the data (whole seconds stay whole).
    NaN values are left out; a group without values gets NaN. One sort for every ``q``.

    Returns
    -------
    ndarray
        Shape ``(ngroups, len(qs))``.

    Examples
    --------
    >>> observed_quantiles(np.array([4.0, 10.0, 3.0]), np.array([0, 0, 1]), 3, [0.5, 0.9])
    array([[ 4., 10.],
           [ 3.,  3.],
           [nan, nan]])
    """
    keep = ~np.isnan(values)
    v, g = values[keep], group[keep]
    order = np.lexsort((v, g)) if ngroups > 1 else np.argsort(v, kind="stable")
    v = v[order]
    n = np.bincount(g, minlength=ngroups)
    start = np.cumsum(n) - n
    has = n > 0
    out = np.full((ngroups, len(qs)), np.nan)
    for j, q in enumerate(qs):
        # rank ceil(q * n), 1-based; the epsilon keeps 0.9 * 10 from rounding up to 10
        rank = np.maximum(np.ceil(q * n - 1e-9).astype(np.intp), 1)
        out[has, j] = v[start[has] + rank[has] - 1]
    return out


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
        "cancelled": n["cancelled"],
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
    engine: str = "auto",
) -> pd.DataFrame:
    """Counts and rates per group of a results frame (after
    :func:`~massiva_frames.analytics.delivery.attach_delivery`).

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
        of ``sent_at``), ``"attempt"`` (1 for a row's first send, N after N - 1
        follow-up sends: ``resend``; a frame without the column has first attempts
        only), or any column name. A column of that name always wins. A list
        groups by several keys; ``None`` gives one overall row.
    tz : str, default "America/Caracas"
        Zone for ``hour`` and ``date``.
    total : bool, default False
        Append a ``total`` row over every group.
    engine : {"auto", "pandas", "duckdb"}, default "auto"
        ``"duckdb"`` counts with DuckDB (:mod:`massiva_frames.analytics.duckdb_engine`):
        then ``frame`` may also be a parquet file, directory or glob of results larger
        than memory. ``"auto"`` uses DuckDB for such a path, pandas for a frame.

    Returns
    -------
    DataFrame
        One row per group (missing keys form their own group), with columns ``rows``,
        ``invalid``, ``suppressed``, ``scheduled``, ``cancelled`` (taken out by
        ``cancel``, never sent), ``rejected``, ``unknown``, ``sent``
        (accepted by the provider: delivered + failed + pending), ``delivered``,
        ``failed``, ``pending`` (accepted, no final callback yet), ``delivery_rate`` =
        delivered / sent, ``failure_rate`` = failed / sent, ``pending_rate`` = pending /
        sent (NaN when nothing was sent), and ``median_latency_s`` / ``p90_latency_s``
        (seconds from send to delivery of the delivered rows: the smallest latency that
        at least half, or 90 %, of them did not exceed; an observed value, so whole
        seconds when the provider's stamps are, see
        :func:`~massiva_frames.analytics.delivery.attach_delivery`).

    Examples
    --------
    >>> delivery_summary(attach_delivery(results, status), by="operator")  # doctest: +SKIP
              rows  invalid  ...  delivery_rate  ...  median_latency_s
    operator
    Movistar   612        0  ...          0.912  ...               4.0
    """
    keys: list[Hashable]
    if by is None:
        keys = []
    elif isinstance(by, str) or not isinstance(by, Sequence):
        keys = [by]
    else:
        keys = list(by)
    if use_duckdb(engine, frame):
        return _duckdb_summary(frame, keys, tz, total, None)
    require(frame, ("state",), "the frame")
    state = as_state(frame["state"])
    if "latency" in frame.columns:
        seconds = pd.to_timedelta(frame["latency"], errors="coerce").dt.total_seconds()
        latency_s = seconds.to_numpy(dtype=float, na_value=np.nan)
    else:
        latency_s = np.full(len(frame), np.nan)
    # latency is a delivered-row measure (attach_delivery leaves the others NaT)
    latency_s = np.where(np.asarray(state == "delivered"), latency_s, np.nan)

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
    latency = pd.DataFrame(
        observed_quantiles(latency_s, group, ngroups, (0.5, 0.9)), columns=["median", "p90"]
    )
    table = pd.DataFrame(_summary_table(counts, rows, latency), index=index)

    if total and keys:
        one = np.zeros(len(frame), dtype=np.intp)
        median, p90 = observed_quantiles(latency_s, one, 1, (0.5, 0.9))[0]
        table = _with_total(table, counts, len(frame), median, p90, keys)
    return table[list(_SUMMARY_COLUMNS)]


def _with_total(
    table: pd.DataFrame,
    counts: np.ndarray[Any, Any],
    rows: int,
    median: float,
    p90: float,
    keys: list[Hashable],
) -> pd.DataFrame:
    """``table`` with a ``total`` row over every group."""
    total_latency = pd.DataFrame({"median": [median], "p90": [p90]})
    index = table.index
    label: Any = ("total", *[""] * (len(keys) - 1)) if len(keys) > 1 else "total"
    index_total = (
        pd.MultiIndex.from_tuples([label], names=index.names)
        if len(keys) > 1
        else pd.Index([label], name=index.name)
    )
    extra = pd.DataFrame(
        _summary_table(counts.sum(axis=0, keepdims=True), np.array([rows]), total_latency),
        index=index_total,
    )
    return pd.concat([table, extra])


def _duckdb_summary(
    source: Any, keys: list[Hashable], tz: str, total: bool, memory_limit: str | None
) -> pd.DataFrame:
    """:func:`delivery_summary` with DuckDB counting: the group labels come from the same
    key functions, applied to one sample row per group."""
    from .duckdb_engine import summary_groups

    got = summary_groups(source, keys, tz=tz, memory_limit=memory_limit)
    counts, rows = got["counts"], got["rows"]
    latency = pd.DataFrame({"median": got["median"], "p90": got["p90"]})
    index: pd.Index = pd.Index(["all"])
    if keys:
        sample = got["sample"]
        names = [str(k) for k in keys]
        grouping = pd.DataFrame(
            {
                n: _group_key(sample, k, tz).reset_index(drop=True)
                for n, k in zip(names, keys, strict=True)
            }
        )
        grouped = grouping.groupby(names, dropna=False, observed=True, sort=True)
        order = np.argsort(grouped.ngroup().to_numpy(), kind="stable")
        counts, rows = counts[order], rows[order]
        latency = latency.iloc[order].reset_index(drop=True)
        index = grouped.size().index
    table = pd.DataFrame(_summary_table(counts, rows, latency), index=index)
    if total and keys:
        total_rows = int(rows.sum())
        table = _with_total(table, counts, total_rows, got["total_median"], got["total_p90"], keys)
    return table[list(_SUMMARY_COLUMNS)]
