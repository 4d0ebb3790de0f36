"""Validation on Dask: each partition checked by pandas, duplicates found by a shuffle.

::

    import dask.dataframe as dd
    from massiva_frames.engines import dask as mf_dask

    audience = dd.read_parquet("audience/")
    checked = mf_dask.validate(audience, phone="tel", template="Hola {nombre}")
    mf_dask.estimate(checked)            # {'requests': ..., 'credits': ..., ...}
    checked.to_parquet("validated/")     # never collected to the client

Every partition goes through :func:`massiva_frames.prepare.partitions.check_rows` (the
row-local part of :func:`massiva_frames.validate`); the ready rows' keys are shuffled so
that every copy of a key meets in one partition, the later copies (by input position)
are sent back to the partitions they came from, and marked there. The result has the
partitions, index, columns and values ``massiva_frames.validate`` gives on the same
rows. Needs ``pip install 'massiva-frames[dask]'``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from ..prepare.partitions import (
    COUNT_COLUMNS,
    check_options,
    check_rows,
    duplicate_key,
    empty_checked,
    estimate_columns,
    finish_estimate,
    mark_duplicates,
    partition_counts,
)
from ..prepare.sizing import DEFAULT_MAX_PHONES
from .common import DUPLICATE_COLUMN, POSITION_BITS, POSITION_COLUMN, check_engine_options

__all__ = ["estimate", "validate"]


def _dd() -> Any:
    try:
        import dask.dataframe as dd
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "massiva_frames.engines.dask needs Dask: pip install 'massiva-frames[dask]'"
        ) from exc
    return dd


def _check_partition(
    part: pd.DataFrame, options: dict[str, Any], partition_info: dict[str, Any] | None = None
) -> pd.DataFrame:
    """Row-local checks of one partition, plus each row's input position."""
    number = 0 if partition_info is None else int(partition_info["number"])
    checked = check_rows(part, **options)
    position = (np.int64(number) << np.int64(POSITION_BITS)) + np.arange(len(part), dtype=np.int64)
    checked[POSITION_COLUMN] = position
    return checked


def _later_copies(part: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The positions of rows repeating an earlier row's key (all copies are here)."""
    ordered = part.sort_values(POSITION_COLUMN, kind="stable")
    later = ordered.duplicated(subset=keys, keep="first").to_numpy(dtype=bool)
    return pd.DataFrame(
        {
            POSITION_COLUMN: ordered[POSITION_COLUMN].to_numpy(dtype=np.int64)[later],
            DUPLICATE_COLUMN: np.ones(int(later.sum()), dtype=bool),
        }
    )


def _mark(part: pd.DataFrame, later: pd.DataFrame) -> pd.DataFrame:
    flags = part[POSITION_COLUMN].isin(later.index).to_numpy(dtype=bool)
    marked = mark_duplicates(part, flags)
    return marked.drop(columns=[POSITION_COLUMN])


def validate(ddf: Any, *, dedupe: str | None = "phone+text", **options: Any) -> Any:
    """:func:`massiva_frames.validate` on a Dask DataFrame, computed by Dask.

    Parameters
    ----------
    ddf : dask.dataframe.DataFrame
        The input rows, in any number of partitions.
    dedupe : {"phone+text", "phone", None}, default "phone+text"
        As for ``validate``: a ready row repeating an earlier ready row's phone and text
        (or phone) is ``suppressed`` with reason ``duplicate``; "earlier" is the input's
        order (partition by partition).
    **options
        ``validate``'s other keyword options (``phone``, ``text``, ``template``,
        ``country``, ``operators``, ``long_text``, ``transliterate``, ``suppress``,
        ``allow_international``). A ``suppress`` list is sent to every partition.

    Returns
    -------
    dask.dataframe.DataFrame
        Lazy: the same partitions and index as ``ddf``, with the columns and values
        ``validate`` gives on the same rows. A wrong option (missing column, unknown
        template field) raises :class:`~massiva_frames.errors.InputError` here, before
        anything runs.

    Examples
    --------
    >>> import dask.dataframe as dd  # doctest: +SKIP
    >>> out = validate(dd.from_pandas(df, npartitions=4), phone="tel", text="msg")  # doctest: +SKIP
    >>> out.compute()  # doctest: +SKIP
    """
    dd = _dd()
    if not isinstance(ddf, dd.DataFrame):
        raise InputError(f"ddf: expected a dask DataFrame, got {type(ddf).__name__}")
    check_options(dedupe)
    check_engine_options(list(ddf.columns), options)
    meta = empty_checked(ddf._meta, **options)  # wrong options raise here, on the client
    positioned = meta.assign(**{POSITION_COLUMN: pd.Series([], dtype="int64", index=meta.index)})
    checked = ddf.map_partitions(_check_partition, options, meta=positioned)
    if dedupe is None:
        return checked.drop(columns=[POSITION_COLUMN])
    keys = list(duplicate_key(dedupe))
    ready = checked[checked["valid"]][[*keys, POSITION_COLUMN]]
    # Every copy of a key meets in one partition: the engine's own shuffle.
    later = ready.shuffle(on=keys).map_partitions(
        _later_copies,
        keys,
        meta=pd.DataFrame(
            {
                POSITION_COLUMN: pd.Series([], dtype="int64"),
                DUPLICATE_COLUMN: pd.Series([], dtype=bool),
            }
        ),
    )
    # Back to the partitions the rows came from: a range partitioning on the position.
    n = ddf.npartitions
    bounds = [i << POSITION_BITS for i in range(n)] + [(n << POSITION_BITS) - 1]
    back = later.set_index(POSITION_COLUMN, divisions=bounds)
    return dd.map_partitions(_mark, checked, back, align_dataframes=False, meta=meta)


def estimate(validated: Any, *, max_phones: int = DEFAULT_MAX_PHONES) -> dict[str, int]:
    """Requests and credits of a validated Dask DataFrame, summed by Dask.

    Parameters
    ----------
    validated : dask.dataframe.DataFrame
        What :func:`validate` returned.
    max_phones : int, default 500
        Phones per request.

    Returns
    -------
    dict
        ``rows``, ``ready``, ``invalid``, ``suppressed``, ``messages``, ``segments``,
        ``credits`` and ``requests``, as
        :func:`massiva_frames.prepare.partitions.finish_estimate` documents.
    """
    dd = _dd()
    if not isinstance(validated, dd.DataFrame):
        raise InputError(f"validated: expected a dask DataFrame, got {type(validated).__name__}")
    read = estimate_columns(validated.columns)
    meta = pd.DataFrame({c: pd.Series([], dtype="int64") for c in COUNT_COLUMNS})
    sums = validated[read].map_partitions(partition_counts, meta=meta).sum().compute()
    return finish_estimate(sums, max_phones=max_phones)
