"""Validation on Spark: each partition checked by pandas, duplicates found by a window.

::

    from massiva_frames.engines import spark as mf_spark

    audience = spark.read.parquet("audience/")
    checked = mf_spark.validate(audience, phone="tel", template="Hola {nombre}")
    mf_spark.estimate(checked)           # {'requests': ..., 'credits': ..., ...}
    checked.write.parquet("validated/")  # never collected to the driver

Every partition goes through :func:`massiva_frames.prepare.partitions.check_rows` (the
row-local part of :func:`massiva_frames.validate`) in ``mapInPandas``; a window over
the ready rows' key, ordered by each row's input position, marks every copy after the
first as a duplicate. The result has the columns and values ``massiva_frames.validate``
gives on the same rows (a Spark frame has no index and no row order: join or sort on a
column of yours). ``state`` and ``encoding`` are strings, ``segments``/``parts`` longs.
Needs ``pip install 'massiva-frames[spark]'`` and Java 17.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import pandas as pd

from ..errors import InputError
from ..prepare.partitions import (
    COUNT_COLUMNS,
    DUPLICATE_REASON,
    DUPLICATE_STATE,
    check_options,
    check_rows,
    duplicate_key,
    empty_checked,
    estimate_columns,
    finish_estimate,
    partition_counts,
)
from ..prepare.sizing import DEFAULT_MAX_PHONES
from .common import POSITION_COLUMN, check_engine_options

__all__ = ["estimate", "validate"]

# Spark SQL types of the columns validate adds.
_ADDED_TYPES = {
    "phone": "string",
    "text": "string",
    "valid": "boolean",
    "state": "string",
    "reason": "string",
    "encoding": "string",
    "segments": "long",
    "parts": "long",
}


def _sql() -> Any:
    try:
        import pyspark.sql
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "massiva_frames.engines.spark needs PySpark: pip install 'massiva-frames[spark]' "
            "(and Java 17: apt-get install openjdk-17-jre-headless)"
        ) from exc
    return pyspark.sql


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Categoricals as strings, for Arrow and Spark."""
    for name in ("state", "encoding"):
        frame[name] = frame[name].astype("string")
    return frame


def _check_batches(
    batches: Iterator[pd.DataFrame], options: dict[str, Any]
) -> Iterator[pd.DataFrame]:
    for batch in batches:
        yield _plain(check_rows(batch, **options))


def _count_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        yield partition_counts(batch)


def _schema(sdf: Any, columns: list[str]) -> Any:
    types = _sql().types
    fields = []
    known = {f.name: f.dataType for f in sdf.schema.fields}
    for name in columns:
        if name in _ADDED_TYPES:
            kind = types._parse_datatype_string(_ADDED_TYPES[name])
        elif name == "phone_input" and name not in known:
            kind = known["phone"]
        elif name == "text_input" and name not in known:
            kind = known["text"]
        else:
            kind = known[name]
        fields.append(types.StructField(name, kind, True))
    return types.StructType(fields)


def validate(sdf: Any, *, dedupe: str | None = "phone+text", **options: Any) -> Any:
    """:func:`massiva_frames.validate` on a Spark DataFrame, computed by Spark.

    Parameters
    ----------
    sdf : pyspark.sql.DataFrame
        The input rows. Column names must be strings (Spark's are).
    dedupe : {"phone+text", "phone", None}, default "phone+text"
        As for ``validate``: a ready row repeating an earlier ready row's phone and text
        (or phone) is ``suppressed`` with reason ``duplicate``; "earlier" is the order of
        ``sdf`` (partition by partition), read once.
    **options
        ``validate``'s other keyword options (``phone``, ``text``, ``template``,
        ``country``, ``operators``, ``long_text``, ``transliterate``, ``suppress``,
        ``allow_international``). A ``suppress`` list is shipped to every task.

    Returns
    -------
    pyspark.sql.DataFrame
        Lazy: the input columns (``phone``/``text`` renamed as ``validate`` does) plus
        ``phone``, ``text``, ``valid``, ``state``, ``reason``, ``encoding``, ``segments``,
        ``parts``. A wrong option (missing column, unknown template field) raises
        :class:`~massiva_frames.errors.InputError` here, before any job runs.

    Examples
    --------
    >>> out = validate(spark.createDataFrame(df), phone="tel", text="msg")  # doctest: +SKIP
    >>> out.groupBy("state").count().show()  # doctest: +SKIP
    """
    sql = _sql()
    functions, window = sql.functions, sql.Window
    if not isinstance(sdf, sql.DataFrame):
        raise InputError(f"sdf: expected a pyspark DataFrame, got {type(sdf).__name__}")
    check_options(dedupe)
    check_engine_options(list(sdf.columns), options)
    probe = pd.DataFrame({c: pd.Series([], dtype=object) for c in [*sdf.columns, POSITION_COLUMN]})
    shape = empty_checked(probe, **options)  # wrong options raise here, on the driver
    columns = [str(c) for c in shape.columns]
    positioned = sdf.withColumn(POSITION_COLUMN, functions.monotonically_increasing_id())
    checked = positioned.mapInPandas(
        functools.partial(_check_batches, options=options), _schema(positioned, columns)
    )
    output = [c for c in columns if c != POSITION_COLUMN]
    if dedupe is None:
        return checked.select(*output)
    col, when = functions.col, functions.when
    valid = col("valid")
    keys = [when(valid, col(k)) for k in duplicate_key(dedupe)]
    # Ready rows group by key; every other row is a window of its own (its position).
    by_key = window.partitionBy(valid, *keys, when(~valid, col(POSITION_COLUMN))).orderBy(
        POSITION_COLUMN
    )
    duplicate = valid & (functions.row_number().over(by_key) > 1)
    marked = checked.withColumn("__massiva_duplicate", duplicate)
    flag = col("__massiva_duplicate")
    replaced = {
        "valid": valid & ~flag,
        "state": when(flag, functions.lit(DUPLICATE_STATE)).otherwise(col("state")),
        "reason": when(flag, functions.lit(DUPLICATE_REASON)).otherwise(col("reason")),
    }
    return marked.select(*[replaced[c].alias(c) if c in replaced else col(c) for c in output])


def estimate(validated: Any, *, max_phones: int = DEFAULT_MAX_PHONES) -> dict[str, int]:
    """Requests and credits of a validated Spark DataFrame, summed by Spark.

    Parameters
    ----------
    validated : pyspark.sql.DataFrame
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
    sql = _sql()
    if not isinstance(validated, sql.DataFrame):
        raise InputError(f"validated: expected a pyspark DataFrame, got {type(validated)}")
    read = estimate_columns(validated.columns)
    schema = ", ".join(f"{c} long" for c in COUNT_COLUMNS)
    counts = validated.select(*read).mapInPandas(_count_batches, schema)
    row = counts.agg(*[sql.functions.sum(c).alias(c) for c in COUNT_COLUMNS]).collect()[0]
    return finish_estimate(row.asDict(), max_phones=max_phones)
