"""Column values formatted as text, vectorised: ``format(value, spec)`` once per distinct value.

Fixed-point numbers (``{saldo:,.2f}``, ``{n:d}``, ``{n:,}``) take a numpy path that builds
the digits as bytes for the whole column; every other value is formatted by Python once
per *distinct* value and spread back to the rows by their codes. A value that is not
one value (a list, a dict, an array, bytes, an object with no text of its own) is never
formatted: its text would be its Python ``repr``.
"""

from __future__ import annotations

import datetime
import numbers
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .arrow import LARGE_STRING, unencodable

__all__ = ["fast_fixed", "format_table", "is_text_value"]


# Kinds whose text is what a reader expects (missing values are told apart elsewhere).
_TEXT_KINDS = (
    str,
    numbers.Number,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    np.generic,
    pd.Period,
    pd.Interval,
    type(None),
    type(pd.NA),
    type(pd.NaT),
)


def _kind_is_text(kind: type) -> bool:
    if issubclass(kind, bytes | bytearray | memoryview):
        return False  # b'...' is a repr (numpy's bytes_ too)
    if issubclass(kind, _TEXT_KINDS):
        return True
    if issubclass(kind, Iterable):
        return False  # containers, arrays, Series, frames: their text is a repr
    # An object prints as itself only if its class says how; else "<X object at 0x…>"
    # (or a dataclass's repr) would be sent.
    return kind.__format__ is not object.__format__ or kind.__str__ is not object.__str__


def is_text_value(values: Sequence[Any]) -> np.ndarray[Any, Any]:
    """Which values print as themselves: strings, numbers, dates, missing values, and
    objects whose class defines ``__str__``/``__format__`` (decided once per type)."""
    kinds = set(map(type, values))
    odd = {kind for kind in kinds if not _kind_is_text(kind)}
    if not odd:
        return np.ones(len(values), dtype=bool)
    return np.fromiter((type(v) not in odd for v in values), dtype=bool, count=len(values))


def _format_uniques(
    uniques: Sequence[Any], fmt: Callable[[Any], str]
) -> tuple[list[str | None], np.ndarray[Any, Any]]:
    try:
        # One C-level pass when every value formats (the usual case).
        return list(map(fmt, uniques)), np.zeros(len(uniques), dtype=bool)
    except (ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError):
        pass
    out: list[str | None] = []
    failed = np.zeros(len(uniques), dtype=bool)
    for i, value in enumerate(uniques):
        try:
            out.append(fmt(value))
        except (ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError):
            out.append(None)
            failed[i] = True
    return out, failed


_FIXED_SPEC = re.compile(r"^(?P<comma>,)?(?:\.(?P<decimals>\d{1,2}))?(?P<kind>[fd]?)$")


_POW10 = 10 ** np.arange(19, dtype=np.int64)


def _fixed_strings(
    units: np.ndarray[Any, Any],
    decimals: int,
    comma: bool,
    negative: np.ndarray[Any, Any],
    null: np.ndarray[Any, Any],
) -> pa.Array:
    """Decimal text of ``units / 10**decimals`` (units >= 0, < 2**53), built as bytes.

    What ``format(v, ",.2f")`` prints, assembled right-aligned in a byte matrix (one
    column pass per output character) and packed into an Arrow string array.
    """
    n = len(units)
    integer = units // _POW10[decimals]
    fraction = units % _POW10[decimals]
    digits = np.maximum(1, np.searchsorted(_POW10, integer, side="right"))
    commas = (digits - 1) // 3 if comma else np.zeros(n, dtype=np.int64)
    length = negative + digits + commas + (decimals + 1 if decimals else 0)
    width = int(length.max()) if n else 0
    out = np.zeros((n, width), dtype=np.uint8)
    col = width - 1
    for k in range(decimals):
        out[:, col] = 48 + (fraction // _POW10[k]) % 10
        col -= 1
    if decimals:
        out[:, col] = 46  # "."
        col -= 1
    for t in range(int(digits.max()) if n else 0):
        here = t < digits
        if comma and t and t % 3 == 0:
            out[here, col] = 44  # ","
            col -= 1
        out[here, col] = 48 + (integer[here] // _POW10[t]) % 10
        col -= 1
    sign = np.flatnonzero(negative)
    out[sign, width - length[sign]] = 45  # "-"
    length = np.where(null, 0, length)
    keep = np.arange(width) >= (width - length)[:, None]
    data = out[keep]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(length, out=offsets[1:])
    validity = pa.array(~null).buffers()[1] if null.any() else None
    return pa.Array.from_buffers(
        LARGE_STRING, n, [validity, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def fast_fixed(series: pd.Series, spec: str) -> tuple[pa.Array, np.ndarray[Any, Any]] | None:
    """``format(v, ",.2f")`` and friends for a numeric column, vectorised.

    Returns the text (null where the value is missing) and the rows left to Python
    (values whose rounding is too close to call in binary, or too large), or None when
    the spec or dtype is not one this path handles.
    """
    match = _FIXED_SPEC.match(spec)
    dtype = series.dtype
    if match is None or not spec or pd.api.types.is_bool_dtype(dtype):
        return None
    kind, decimals_text = match["kind"], match["decimals"]
    if pd.api.types.is_integer_dtype(dtype) and kind in ("d", "") and decimals_text is None:
        ints = series.to_numpy(dtype="float64", na_value=np.nan)
        decimals = 0
        if kind == "" and not match["comma"]:
            return None
    elif pd.api.types.is_float_dtype(dtype) or pd.api.types.is_integer_dtype(dtype):
        if kind != "f" and not (kind == "" and decimals_text is None and match["comma"]):
            return None
        if kind == "":
            return None  # "," alone on floats prints repr digits: Python's job
        ints = series.to_numpy(dtype="float64", na_value=np.nan)
        decimals = int(decimals_text) if decimals_text is not None else 6
        if decimals > 15:
            return None  # 10**decimals stops being exact in binary: Python's job
    else:
        return None
    values = ints
    missing = np.isnan(values)
    magnitude = np.abs(np.where(missing, 0.0, values))
    scale = 10.0**decimals
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = magnitude * scale
        rounded = np.rint(scaled)
        # The float product may sit on the other side of a .5 boundary than the exact
        # value Python rounds: leave those (and anything past 2**53) to format().
        near_half = np.abs(scaled - np.floor(scaled) - 0.5) <= 4e-16 * np.maximum(scaled, 1.0)
        python = ~missing & (~np.isfinite(scaled) | (scaled >= 2.0**53) | near_half)
    whole_units = np.where(python | missing, 0.0, rounded).astype(np.int64)
    negative = np.signbit(np.where(missing, 0.0, values)).astype(np.int64)
    text = _fixed_strings(whole_units, decimals, bool(match["comma"]), negative, missing)
    return text, python


def format_table(
    series: pd.Series, fmt: Callable[[Any], str]
) -> tuple[pa.Array, np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Distinct values formatted once.

    Returns ``(table, codes, failed, odd)``: the text of each distinct value (null where
    it failed or is odd), each row's code into it (-1 = missing), and per entry whether
    ``fmt`` failed and whether the value is not one value (see :func:`is_text_value`),
    which is never formatted.
    """
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy().astype(np.int64)
        uniques: Any = list(series.cat.categories)
    else:
        try:
            raw_codes, found = pd.factorize(series, use_na_sentinel=True)
            codes, uniques = raw_codes.astype(np.int64), list(found)
            if pd.api.types.is_float_dtype(series.dtype):
                # factorize holds -0.0 equal to 0.0, but format() prints "-0.00"
                floats = series.to_numpy(dtype="float64", na_value=np.nan)
                negative_zero = (floats == 0.0) & np.signbit(floats)
                if negative_zero.any():
                    zero_code = codes[np.flatnonzero(floats == 0.0)[0]]
                    uniques[zero_code] = 0.0  # the first zero seen may have been -0.0
                    codes[negative_zero] = len(uniques)
                    uniques.append(-0.0)
        except TypeError:  # unhashable cells (lists, dicts): one by one
            values = series.to_numpy(dtype=object)
            keep = ~pd.isna(pd.Series(values)).to_numpy(dtype=bool)
            codes = np.full(len(values), -1, dtype=np.int64)
            codes[keep] = np.arange(int(keep.sum()))
            uniques = list(values[keep])
    odd_u = ~is_text_value(uniques)
    if odd_u.any():
        kept = np.flatnonzero(~odd_u)
        done, done_failed = _format_uniques([uniques[i] for i in kept], fmt)
        out: list[str | None] = [None] * len(uniques)
        failed_u = np.zeros(len(uniques), dtype=bool)
        for i, text, bad in zip(kept, done, done_failed, strict=True):
            out[i] = text
            failed_u[i] = bad
    else:
        out, failed_u = _format_uniques(uniques, fmt)
    try:
        table = pa.array(out, type=LARGE_STRING)
    except UnicodeEncodeError:
        # A lone surrogate (text decoded with errors="surrogateescape") has no UTF-8
        # form, so no SMS can carry it: that value fails like one that cannot be
        # formatted, and the other rows go on.
        odd = np.fromiter((unencodable(v) for v in out), dtype=bool, count=len(out))
        failed_u = failed_u | odd
        table = pa.array(
            [None if bad else v for v, bad in zip(out, odd, strict=True)], LARGE_STRING
        )
    return table, codes, failed_u, odd_u
