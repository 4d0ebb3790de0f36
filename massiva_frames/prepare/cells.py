"""Phone cells as text: whatever a phone column holds, as Arrow digit text to normalise.

Spreadsheets hand over phones as strings, integers, floats (``584141234567.0``),
Decimals, booleans or junk objects, often mixed in one object column. Each kind takes a
vectorised path; only the odd remainder goes cell by cell. A cell that cannot be a
phone number (negative, fractional, a date, ``True``) is flagged "not a number"; a
missing cell stays null.
"""

from __future__ import annotations

import math
import numbers
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .arrow import LARGE_STRING, is_string_dtype, one_chunk, scatter, unencodable

__all__ = ["cells_as_text"]


def _scalar_float_text(value: float) -> tuple[str | None, bool]:
    """An integral, non-negative float as digits; anything else is not a number."""
    if math.isnan(value):
        return None, False
    if not math.isfinite(value) or value < 0 or value != math.floor(value) or value >= 1e17:
        return None, True
    return str(int(value)), False


def _scalar_text(value: Any) -> tuple[str | None, bool]:
    """Turn one non-``str`` cell into digits text; the flag says "not a number"."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None, False
    if isinstance(value, str):
        return str(value), False
    if isinstance(value, bool | np.bool_):
        return None, True
    if isinstance(value, numbers.Integral):
        number = int(value)
        return (None, True) if number < 0 else (str(number), False)
    if isinstance(value, float | np.floating):
        return _scalar_float_text(float(value))
    if isinstance(value, Decimal):
        try:
            if value.is_nan():
                return None, False
            if not value.is_finite() or value < 0 or value != value.to_integral_value():
                return None, True
            return str(int(value)), False
        except (InvalidOperation, ValueError, OverflowError):
            return None, True
    try:
        if bool(pd.isna(value)):
            return None, False
    except (TypeError, ValueError):
        pass
    return None, True


def _digits_of_ints(values: np.ndarray[Any, Any], null: Any = None) -> pa.Array:
    """Integers as decimal text (null where ``null`` is True)."""
    return pa.array(values, type=pa.int64(), mask=null).cast(LARGE_STRING)


def _float_text(floats: np.ndarray[Any, Any]) -> tuple[pa.Array, np.ndarray[Any, Any]]:
    """Integral non-negative floats as digits; NaN is missing; the rest is not a number."""
    missing = np.isnan(floats)
    with np.errstate(invalid="ignore"):
        good = np.isfinite(floats) & (floats >= 0) & (floats < 1e17)
        good &= floats == np.floor(floats)
    ints = np.where(good, floats, 0).astype("int64")
    return _digits_of_ints(ints, ~good), ~good & ~missing


def _kind(kinds: Any, cls: type) -> np.ndarray[Any, Any]:
    """Cells whose type is exactly ``cls`` (not a subclass: bool is not an int here)."""
    same: Any = kinds == cls
    return np.asarray(same, dtype=bool)


def _arrow_strings(values: Any) -> tuple[pa.Array, np.ndarray[Any, Any]]:
    """Arrow text of str/None cells, and a mask of the cells Arrow cannot hold.

    A lone surrogate (text decoded with ``errors="surrogateescape"``) has no UTF-8 form:
    that cell becomes missing and is flagged "not a number" instead of failing the frame.
    """
    try:
        return pa.array(values, type=LARGE_STRING, from_pandas=True), np.zeros(len(values), bool)
    except UnicodeEncodeError:
        odd = np.fromiter((unencodable(v) for v in values), dtype=bool, count=len(values))
        kept = np.asarray(values, dtype=object).copy()
        kept[odd] = None
        return pa.array(kept, type=LARGE_STRING, from_pandas=True), odd


def _object_text(arr: np.ndarray[Any, Any]) -> tuple[pa.Array, np.ndarray[Any, Any]]:
    """Mixed cells (Excel): strings, ints and floats each take a vectorised path; only
    the odd remainder (Decimal, bool, junk objects) goes cell by cell."""
    n = len(arr)
    if pd.api.types.infer_dtype(arr, skipna=True) in ("string", "empty"):
        return _arrow_strings(arr)
    kinds: Any = np.frompyfunc(type, 1, 1)(arr)
    is_str, is_int, is_float = (_kind(kinds, cls) for cls in (str, int, float))
    strings = arr.copy()
    strings[~is_str] = None
    text, bad = _arrow_strings(strings)
    # Non-string cells are converted per kind, then put back in one pass.
    pieces: list[tuple[np.ndarray[Any, Any], pa.Array]] = []
    if is_int.any():
        ints = arr[is_int]
        try:
            as_int = ints.astype(np.int64)
        except OverflowError:  # beyond 64 bits: certainly not a phone, but say why
            as_text: Any = pa.array([str(v) if v >= 0 else None for v in ints], LARGE_STRING)
            bad[is_int] = [v < 0 for v in ints]
        else:
            as_text = _digits_of_ints(as_int, as_int < 0)
            bad[np.flatnonzero(is_int)[as_int < 0]] = True
        pieces.append((np.flatnonzero(is_int), as_text))
    if is_float.any():
        float_text, float_bad = _float_text(arr[is_float].astype(np.float64))
        pieces.append((np.flatnonzero(is_float), float_text))
        bad[is_float] = float_bad
    other = ~(is_str | is_int | is_float)
    if other.any():
        settled = [_scalar_text(v) for v in arr[other]]
        other_text, odd = _arrow_strings([t for t, _ in settled])
        pieces.append((np.flatnonzero(other), other_text))
        bad[other] = np.array([b for _, b in settled], dtype=bool) | odd
    if pieces:
        positions = np.concatenate([rows for rows, _ in pieces])
        values = pa.concat_arrays([one_chunk(v).cast(LARGE_STRING) for _, v in pieces])
        mask = np.zeros(n, dtype=bool)
        mask[positions] = True
        text = scatter(text, mask, values.take(pa.array(np.argsort(positions, kind="stable"))))
    return text, bad


def cells_as_text(series: pd.Series) -> tuple[pa.Array, np.ndarray[Any, np.dtype[np.bool_]]]:
    """Cells as Arrow text (null = missing) and a mask of cells that are not numbers.

    Parameters
    ----------
    series : Series
        A phone column of any dtype.

    Returns
    -------
    (pyarrow.Array, ndarray of bool)
        ``large_string`` text, digits for numeric cells and the string itself for text
        cells (null where missing or not a number), and the "not a number" mask.
    """
    n = len(series)
    dtype = series.dtype
    if is_string_dtype(dtype):
        return one_chunk(pa.array(series.array).cast(LARGE_STRING)), np.zeros(n, dtype=bool)
    if pd.api.types.is_bool_dtype(dtype):
        return pa.nulls(n, LARGE_STRING), ~series.isna().to_numpy(dtype=bool)
    if pd.api.types.is_integer_dtype(dtype):
        missing = series.isna().to_numpy(dtype=bool)
        ints = series.to_numpy(dtype="int64", na_value=0)
        bad = (ints < 0) & ~missing
        return _digits_of_ints(ints, missing | bad), bad
    if pd.api.types.is_float_dtype(dtype):
        return _float_text(series.to_numpy(dtype="float64", na_value=np.nan))
    if dtype == np.dtype(object):
        return _object_text(series.to_numpy(dtype=object))
    # datetimes, periods, intervals, complex...: never a phone
    return pa.nulls(n, LARGE_STRING), ~series.isna().to_numpy(dtype=bool)
