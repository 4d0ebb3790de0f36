"""Validation one partition at a time: the row-local checks, duplicates marked, the estimate.

``validate`` decides each row from that row alone (phone, text, opt-out list), except
for duplicates, which compare rows with each other. An engine that holds a campaign in
many partitions (Spark, Dask: :mod:`massiva_frames.engines`) runs :func:`check_rows` on
every partition -- the same function :func:`~massiva_frames.prepare.validation.validate`
is, with duplicates left out -- finds the duplicates itself (a shuffle on
:func:`duplicate_key`), and marks them with :func:`mark_duplicates`. The rules live
once, in :mod:`.validation`.

:func:`partition_counts` and :func:`finish_estimate` give the requests and credits a
validated frame needs, from sums an engine adds up over its partitions.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from .sizing import DEFAULT_MAX_PHONES
from .validation import DEDUPE_MODES, ENCODING_DTYPE, STATE_DTYPE, Reason, validate

__all__ = [
    "COUNT_COLUMNS",
    "DUPLICATE_REASON",
    "DUPLICATE_STATE",
    "ESTIMATE_COLUMNS",
    "check_options",
    "check_rows",
    "duplicate_key",
    "empty_checked",
    "estimate",
    "estimate_columns",
    "finish_estimate",
    "mark_duplicates",
    "partition_counts",
]

#: What a duplicate row gets (``valid`` becomes False).
DUPLICATE_REASON: str = Reason.DUPLICATE.value
DUPLICATE_STATE: str = Reason.DUPLICATE.state

#: The sums :func:`partition_counts` returns, in order.
COUNT_COLUMNS = ("rows", "ready", "invalid", "suppressed", "messages", "segments")
#: The columns of a validated frame :func:`partition_counts` reads, in order.
ESTIMATE_COLUMNS = ("valid", "state", "parts", "segments")

# The dtypes validate gives the columns it adds (see validation._assemble).
_STRING = pd.StringDtype("pyarrow")
_ADDED_DTYPES: dict[str, Any] = {
    "phone": _STRING,
    "text": _STRING,
    "valid": np.dtype(bool),
    "state": STATE_DTYPE,
    "reason": _STRING,
    "encoding": ENCODING_DTYPE,
    "segments": pd.Int64Dtype(),
    "parts": pd.Int64Dtype(),
}


def check_options(dedupe: str | None) -> None:
    """Raise :class:`InputError` for a ``dedupe`` value ``validate`` would refuse."""
    if dedupe not in (*DEDUPE_MODES, None):
        raise InputError(f"dedupe: expected 'phone+text', 'phone' or None, got {dedupe!r}")


def duplicate_key(dedupe: str) -> tuple[str, ...]:
    """The output columns whose equal values make a later ready row a duplicate.

    Examples
    --------
    >>> duplicate_key("phone+text")
    ('phone', 'text')
    """
    check_options(dedupe)
    return ("phone",) if dedupe == "phone" else ("phone", "text")


def empty_checked(df: pd.DataFrame, **options: Any) -> pd.DataFrame:
    """The zero-row frame :func:`check_rows` gives for an empty partition of ``df``'s shape.

    ``validate`` refuses an empty frame; an engine's partition may be empty. The columns
    are found by checking one row of missing values (so a wrong option still raises).
    """
    probe = pd.DataFrame({c: pd.Series([None], dtype=object) for c in df.columns})
    shape = check_rows(probe, **options)
    out: dict[Hashable, pd.Series] = {}
    for name in shape.columns:
        if name in _ADDED_DTYPES:
            out[name] = pd.Series([], dtype=_ADDED_DTYPES[name], index=df.index[:0])
        else:
            source = _source_name(name, options)
            out[name] = df[source].iloc[:0]
    frame = pd.DataFrame(out, index=df.index[:0])
    frame.attrs = shape.attrs
    return frame


def _source_name(name: Hashable, options: Mapping[str, Any]) -> Hashable:
    """The input column an output column came from (``phone_input`` <- ``phone``)."""
    if name == "phone_input" and options.get("phone", "phone") == "phone":
        return "phone"
    if name == "text_input" and options.get("text") == "text":
        return "text"
    return name


def check_rows(df: pd.DataFrame, **options: Any) -> pd.DataFrame:
    """Validate each row on its own: :func:`validate` with ``dedupe=None``.

    Parameters
    ----------
    df : DataFrame
        One partition of the input (may be empty).
    **options
        :func:`~massiva_frames.prepare.validation.validate`'s keyword options except
        ``dedupe`` (``phone``, ``text``, ``template``, ``country``, ``suppress``...).

    Returns
    -------
    DataFrame
        What ``validate(df, dedupe=None, **options)`` returns; duplicates are not marked.

    Examples
    --------
    >>> df = pd.DataFrame({"tel": ["04141234567", "04141234567"], "msg": ["Hola", "Hola"]})
    >>> check_rows(df, phone="tel", text="msg")["state"].tolist()
    ['ready', 'ready']
    """
    if "dedupe" in options:
        raise InputError("check_rows: duplicates are decided across partitions; no dedupe=")
    if isinstance(df, pd.DataFrame) and len(df) == 0:
        return empty_checked(df, **options)
    return validate(df, dedupe=None, **options)


def mark_duplicates(checked: pd.DataFrame, duplicate: Any) -> pd.DataFrame:
    """Mark the rows where ``duplicate`` is True as duplicates, as ``validate`` does.

    Parameters
    ----------
    checked : DataFrame
        What :func:`check_rows` returned for a partition.
    duplicate : array-like of bool
        One flag per row: a ready row repeating an earlier ready row's key.

    Returns
    -------
    DataFrame
        ``checked`` with ``valid=False``, ``state="suppressed"`` and
        ``reason="duplicate"`` on the flagged rows (a new frame when any is flagged).
    """
    flags = np.asarray(duplicate, dtype=bool)
    if len(flags) != len(checked):
        raise InputError(f"duplicate: {len(flags)} flags for {len(checked)} rows")
    if not flags.any():
        return checked
    out = checked.copy(deep=False)
    out["valid"] = out["valid"].to_numpy(dtype=bool) & ~flags
    state = out["state"].copy()
    state[flags] = DUPLICATE_STATE
    out["state"] = state
    out["reason"] = out["reason"].mask(flags, DUPLICATE_REASON)
    return out


def estimate_columns(columns: Iterable[Hashable]) -> list[str]:
    """The columns an estimate reads (:data:`ESTIMATE_COLUMNS`), once ``columns`` (a
    validated frame's, in any engine) are known to hold them all.

    Raises
    ------
    InputError
        Naming the first one missing: the frame is not what ``validate`` returns.
    """
    present = set(columns)
    missing = [c for c in ESTIMATE_COLUMNS if c not in present]
    if missing:
        raise InputError(f"validated: column {missing[0]!r} missing; pass what validate returns")
    return list(ESTIMATE_COLUMNS)


def partition_counts(validated: pd.DataFrame) -> pd.DataFrame:
    """The sums behind :func:`finish_estimate` for one partition (a one-row frame).

    ``messages`` are the ``parts`` of ready rows (one per SMS the API takes, one credit
    each); ``segments`` the carrier segments of ready rows.
    """
    valid = validated["valid"].to_numpy(dtype=bool)
    state = validated["state"].astype("string")
    parts = pd.to_numeric(validated["parts"]).fillna(1).to_numpy(dtype=np.int64)
    segments = pd.to_numeric(validated["segments"]).fillna(0).to_numpy(dtype=np.int64)
    row = {
        "rows": len(validated),
        "ready": int(valid.sum()),
        "invalid": int((state == "invalid").sum()),
        "suppressed": int((state == "suppressed").sum()),
        "messages": int(parts[valid].sum()),
        "segments": int(segments[valid].sum()),
    }
    return pd.DataFrame({k: pd.Series([v], dtype="int64") for k, v in row.items()})


def finish_estimate(
    sums: Mapping[str, int | None] | pd.Series, *, max_phones: int = DEFAULT_MAX_PHONES
) -> dict[str, int]:
    """Requests and credits from the sums of :func:`partition_counts` over every partition.

    Parameters
    ----------
    sums : mapping or Series
        ``rows``, ``ready``, ``invalid``, ``suppressed``, ``messages``, ``segments``
        (a sum of None, what Spark gives over no rows, counts as 0).
    max_phones : int, default 500
        Phones per request, as for :func:`~massiva_frames.prepare.batching.plan_batches`.

    Returns
    -------
    dict
        The sums, plus ``credits`` (one per message: the provider takes one credit per
        accepted SMS) and ``requests``: the fewest POST requests that carry the messages,
        ``ceil(messages / max_phones)`` (what
        :func:`~massiva_frames.prepare.lower_bound.minimum_requests` gives for POST; a
        plan may need a few more when split rows must stay together).
    """
    if not isinstance(max_phones, int) or max_phones < 1:
        raise InputError(f"max_phones: expected a positive integer, got {max_phones!r}")
    out = {name: int(sums[name] or 0) for name in COUNT_COLUMNS}
    out["credits"] = out["messages"]
    out["requests"] = math.ceil(out["messages"] / max_phones)
    return out


def estimate(validated: pd.DataFrame, *, max_phones: int = DEFAULT_MAX_PHONES) -> dict[str, int]:
    """Requests and credits a validated pandas frame needs (what the engines compute).

    Examples
    --------
    >>> df = pd.DataFrame({"tel": ["04141234567", "04241234567", "x"], "msg": ["Hola"] * 3})
    >>> estimate(validate(df, phone="tel", text="msg"), max_phones=500)["credits"]
    2
    """
    return finish_estimate(partition_counts(validated).iloc[0], max_phones=max_phones)
