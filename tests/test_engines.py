"""Spark and Dask validation: the same columns and values as ``validate`` on the same rows.

The engines run for real: PySpark in local mode on Java 17 (one session for the whole
test session) and a Dask ``LocalCluster`` with two worker processes. Missing engines
skip with a reason saying how to install them, unless ``MASSIVA_REQUIRE_SPARK=1`` /
``MASSIVA_REQUIRE_DASK=1`` (then they fail).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import massiva_frames as mf
from massiva_frames.errors import InputError
from massiva_frames.prepare.partitions import estimate as pandas_estimate

pytestmark = [
    # PySpark warns about pandas >= 3 on every pandas conversion, and its conversion code
    # still passes pandas' deprecated copy= keyword.
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

PHONES = [
    "04141234567",
    "0414-123.45.67",
    "+58 424 111 2233",
    "584161234567",
    "02125551234",
    "5.84141E+11",
    "x",
    "",
    None,
    "+1 202 555 0143",
    "4261234567",
]
TEXTS = ["Hola", "Hola ", "Cañón ñ", "", "a|b", None, "x" * 170, "línea\nnueva", "😀 hi"]
NAMES = ["Ana", "Luis", None, "José"]


def messy(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "phone": rng.choice(np.array(PHONES, dtype=object), n),
            "msg": rng.choice(np.array(TEXTS, dtype=object), n),
            "nombre": rng.choice(np.array(NAMES, dtype=object), n),
            "saldo": rng.choice(np.array([1.5, 1234.25, np.nan]), n),
            "k": np.arange(n, dtype=np.int64),
        }
    )


def plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Values as Python objects with None for missing: Spark and pandas dtypes differ."""
    out = frame.reset_index(drop=True).astype(object)
    out = out.where(frame.reset_index(drop=True).notna(), None)
    for name in ("segments", "parts"):
        out[name] = [None if v is None else int(v) for v in out[name]]
    return out


# --------------------------------------------------------------------------- Spark


def spark_equal(spark: Any, df: pd.DataFrame, partitions: int = 2, **options: Any) -> None:
    from massiva_frames.engines import spark as mf_spark

    sdf = spark.createDataFrame(df).coalesce(partitions)
    # the same rows, in the order the engine reads them
    rows = sdf.toPandas()
    expected = mf.validate(rows, **options)
    got = mf_spark.validate(sdf, **options).toPandas().sort_values("k")
    assert list(got.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(plain(got), plain(expected))


OPTIONS = [
    {"text": "msg"},
    {"text": "msg", "dedupe": "phone", "suppress": ["04241112233"]},
    {"template": "Hola {nombre}, saldo {saldo:,.2f}", "long_text": "split"},
    {"text": "msg", "dedupe": None, "transliterate": True, "allow_international": False},
]


@pytest.mark.parametrize("options", OPTIONS, ids=["text", "phone-dedupe", "template", "none"])
def test_spark_validate_equals_pandas(spark_session: Any, options: dict[str, Any]) -> None:
    spark_equal(spark_session, messy(300, seed=len(str(options))), **options)


def test_spark_empty_partitions_and_numeric_phones(spark_session: Any) -> None:
    from massiva_frames.engines import spark as mf_spark

    rows = [(4141234567, "a", 0), (584241112233, "b", 1), (None, "c", 2), (2125551234, "d", 3)]
    rows.append((4141234567, "a", 4))
    # 5 rows in 8 slices: three partitions are empty
    rdd = spark_session.sparkContext.parallelize(rows, 8)
    sdf = spark_session.createDataFrame(rdd, schema="tel long, msg string, k long")
    expected = mf.validate(sdf.toPandas(), phone="tel", text="msg")
    got = mf_spark.validate(sdf, phone="tel", text="msg").toPandas().sort_values("k")
    pd.testing.assert_frame_equal(plain(got), plain(expected))
    assert plain(got)["reason"].tolist() == [
        None,
        None,
        "phone_missing",
        "phone_landline",
        "duplicate",
    ]


def test_spark_estimate_equals_pandas(spark_session: Any) -> None:
    from massiva_frames.engines import spark as mf_spark

    df = messy(500, seed=5)
    sdf = spark_session.createDataFrame(df)
    checked = mf_spark.validate(sdf, text="msg", long_text="split")
    expected = pandas_estimate(
        mf.validate(sdf.toPandas(), text="msg", long_text="split"), max_phones=7
    )
    assert mf_spark.estimate(checked, max_phones=7) == expected
    assert expected["ready"] > 0 and expected["messages"] > expected["ready"]


def test_spark_wrong_options_raise_before_any_job(spark_session: Any) -> None:
    from massiva_frames.engines import spark as mf_spark

    sdf = spark_session.createDataFrame(messy(5))
    with pytest.raises(InputError, match="nope"):
        mf_spark.validate(sdf, text="nope")
    with pytest.raises(InputError, match="unknown"):
        mf_spark.validate(sdf, template="{unknown}")
    with pytest.raises(InputError, match="dedupe"):
        mf_spark.validate(sdf, text="msg", dedupe="text")
    with pytest.raises(InputError, match="pyspark DataFrame"):
        mf_spark.validate(messy(5), text="msg")


# --------------------------------------------------------------------------- Dask


def dask_equal(df: pd.DataFrame, partitions: int, **options: Any) -> Any:
    import dask.dataframe as dd

    from massiva_frames.engines import dask as mf_dask

    ddf = dd.from_pandas(df, npartitions=partitions, sort=False)
    rows = ddf.compute()  # the same rows, with the dtypes Dask gives them
    got = mf_dask.validate(ddf, **options)
    assert got.npartitions == ddf.npartitions
    computed = got.compute()
    pd.testing.assert_frame_equal(computed, mf.validate(rows, **options))
    return got


@pytest.mark.parametrize("options", OPTIONS, ids=["text", "phone-dedupe", "template", "none"])
def test_dask_validate_equals_pandas(dask_client: Any, options: dict[str, Any]) -> None:
    df = messy(400, seed=len(str(options)))
    df.index = pd.RangeIndex(400) * 3 + 10  # the index is kept
    dask_equal(df, 4, **options)


def test_dask_runs_on_the_worker_processes(dask_client: Any) -> None:
    import dask.dataframe as dd
    from distributed import get_task_stream

    from massiva_frames.engines import dask as mf_dask

    ddf = dd.from_pandas(messy(200), npartitions=4)
    with get_task_stream(dask_client) as stream:
        mf_dask.validate(ddf, text="msg").compute()
    workers = {t["worker"] for t in stream.data}
    pids = set(dask_client.run(os.getpid).values())
    assert len(workers) >= 1 and workers <= set(dask_client.scheduler_info()["workers"])
    assert len(pids) == 2 and os.getpid() not in pids  # worker processes, not this one


def test_dask_estimate_equals_pandas(dask_client: Any) -> None:
    import dask.dataframe as dd

    from massiva_frames.engines import dask as mf_dask

    df = messy(600, seed=9)
    ddf = dd.from_pandas(df, npartitions=3)
    checked = mf_dask.validate(ddf, text="msg", long_text="split")
    expected = pandas_estimate(
        mf.validate(ddf.compute(), text="msg", long_text="split"), max_phones=9
    )
    assert mf_dask.estimate(checked, max_phones=9) == expected


def test_dask_wrong_options_raise_before_compute(dask_client: Any) -> None:
    import dask.dataframe as dd

    from massiva_frames.engines import dask as mf_dask

    ddf = dd.from_pandas(messy(10), npartitions=2)
    with pytest.raises(InputError, match="nope"):
        mf_dask.validate(ddf, text="nope")
    with pytest.raises(InputError, match="reserved"):
        mf_dask.validate(ddf.assign(__massiva_position=1), text="msg")
    with pytest.raises(InputError, match="dask DataFrame"):
        mf_dask.validate(messy(5), text="msg")


# --------------------------------------------------------------------------- property

phone_values = st.sampled_from(PHONES) | st.text(alphabet="0123456789+- ", max_size=14)
text_values = st.sampled_from(TEXTS) | st.text(max_size=12)
rows_strategy = st.lists(
    st.tuples(phone_values, text_values, st.sampled_from(NAMES)), min_size=1, max_size=30
)


def frame_of(rows: list[tuple[Any, Any, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "phone": pd.Series([r[0] for r in rows], dtype=object),
            "msg": pd.Series([r[1] for r in rows], dtype=object),
            "nombre": pd.Series([r[2] for r in rows], dtype=object),
            "k": np.arange(len(rows), dtype=np.int64),
        }
    )


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=rows_strategy, partitions=st.integers(1, 3), mode=st.sampled_from(["phone+text", "phone"])
)
def test_engines_validate_like_pandas_on_messy_rows(
    spark_session: Any,
    dask_client: Any,
    rows: list[tuple[Any, Any, Any]],
    partitions: int,
    mode: str,
) -> None:
    df = frame_of(rows)
    spark_equal(spark_session, df, partitions, text="msg", dedupe=mode)
    dask_equal(df, partitions, template="{nombre}: {msg}", dedupe=mode)


# --- the Large audiences guide's examples ----------------------------------------------


def guide_block(engine: str) -> str:
    """The ``docs/guide/scale.md`` block that validates on ``engine`` (marked: run here)."""
    from test_docs import DOCS, code_blocks

    found = [
        b.code
        for b in code_blocks(DOCS / "guide" / "scale.md")
        if b.not_run and "tests/test_engines.py" in b.not_run
        if f"from massiva_frames.engines import {engine} as" in b.code
    ]
    assert len(found) == 1, f"scale.md: one {engine} block marked as run by test_engines.py"
    return found[0]


def audience(folder: Any) -> pd.DataFrame:
    """The sample campaign as a parquet folder of two files, as a lake holds it."""
    df = mf.load_sample_campaign(300)
    folder.mkdir()
    df.iloc[:170].to_parquet(folder / "part-0.parquet", index=False)
    df.iloc[170:].to_parquet(folder / "part-1.parquet", index=False)
    return df


def test_the_guide_spark_example_runs(
    spark_session: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    df = audience(tmp_path / "audience")
    namespace: dict[str, Any] = {"spark": spark_session}
    # the JVM resolves relative paths against its own working folder: give it ours
    code = guide_block("spark")
    for folder in ("audience/", "validated/"):
        assert f'"{folder}"' in code
        code = code.replace(f'"{folder}"', f'"{tmp_path / folder}/"')
    exec(compile(code, "scale.md", "exec"), namespace)
    expected = mf.validate(df, phone="telefono", template="Hola {nombre}")
    got = namespace["checked"].groupBy("state").count().toPandas()
    assert dict(zip(got["state"], got["count"], strict=True)) == {
        str(k): int(v) for k, v in expected["state"].value_counts().items() if v
    }
    written = pd.read_parquet(tmp_path / "validated")
    assert len(written) == len(df) and int(written["valid"].sum()) == int(expected["valid"].sum())


def test_the_guide_dask_example_runs(
    dask_client: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    df = audience(tmp_path / "audience")
    namespace: dict[str, Any] = {}
    exec(compile(guide_block("dask"), "scale.md", "exec"), namespace)
    expected = mf.validate(df, phone="telefono", template="Hola {nombre}")
    got = namespace["checked"].compute()
    assert got["state"].astype(str).tolist() == expected["state"].astype(str).tolist()
    assert len(pd.read_parquet(tmp_path / "validated-dask")) == len(df)
