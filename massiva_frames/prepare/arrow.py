"""Arrow plumbing the preparation modules share: one-chunk arrays, boolean masks, UTF-8 checks.

Phones and texts are worked on as Arrow ``large_string`` arrays; these small helpers
turn Arrow results into the shapes the vectorised code expects.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "LARGE_STRING",
    "as_large_strings",
    "bool_mask",
    "is_string_dtype",
    "one_chunk",
    "scatter",
    "unencodable",
]

#: The Arrow type every text and phone column is cast to (64-bit offsets).
LARGE_STRING = pa.large_string()


def one_chunk(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``arr`` as one contiguous Arrow array (a chunked array is combined)."""
    if isinstance(arr, pa.ChunkedArray):
        return arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    return arr


def as_large_strings(series: pd.Series) -> pa.Array:
    """A pandas column as one ``large_string`` Arrow array (values cast to text)."""
    arr = pa.array(series.astype("string[pyarrow]").array)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.cast(LARGE_STRING)


def bool_mask(arr: pa.Array | pa.ChunkedArray) -> np.ndarray[Any, Any]:
    """A boolean Arrow array as numpy, nulls as False."""
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def scatter(base: pa.Array, mask: np.ndarray[Any, Any], values: pa.Array) -> pa.Array:
    """``base`` with the ``mask`` positions replaced by ``values`` (in order)."""
    if not mask.any():
        return base
    return one_chunk(
        pc.replace_with_mask(base, pa.array(mask), one_chunk(values).cast(LARGE_STRING))
    )


def is_string_dtype(dtype: Any) -> bool:
    """Is ``dtype`` a pandas string dtype (``string`` or an Arrow string)?"""
    return isinstance(dtype, pd.StringDtype) or (
        isinstance(dtype, pd.ArrowDtype) and pa.types.is_string(dtype.pyarrow_dtype)
    )


def unencodable(value: Any) -> bool:
    """A ``str`` with no UTF-8 form (a lone surrogate, from ``errors="surrogateescape"``)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
