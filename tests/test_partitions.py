"""The row-local entry point of validation, duplicate marking and the estimate (pandas only).

The engines (tests/test_engines.py) run these per partition; here they are held against
``validate`` on whole frames.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import massiva_frames as mf
from massiva_frames.errors import InputError
from massiva_frames.prepare.batching import plan_batches
from massiva_frames.prepare.lower_bound import minimum_requests
from massiva_frames.prepare.partitions import (
    check_rows,
    duplicate_key,
    empty_checked,
    estimate,
    finish_estimate,
    mark_duplicates,
    partition_counts,
)

PHONES = ["04141234567", "0414-123.45.67", "02125551234", "x", None, "+584241112233", "4161234567"]
TEXTS = ["Hola", "Hola ", "Cañón", "", "a|b", None, "x" * 170, "línea\nnueva"]


def messy(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "phone": rng.choice(np.array(PHONES, dtype=object), n),
            "msg": rng.choice(np.array(TEXTS, dtype=object), n),
            "nombre": rng.choice(np.array(["Ana", "Luis", None], dtype=object), n),
            "k": np.arange(n),
        },
        index=pd.RangeIndex(n) * 7,
    )


def later_copies(checked: pd.DataFrame, dedupe: str) -> np.ndarray:
    """What an engine's shuffle decides: later copies of a ready row's key."""
    keys = list(duplicate_key(dedupe))
    ready = checked["valid"].to_numpy(dtype=bool)
    flags = np.zeros(len(checked), dtype=bool)
    flags[ready] = checked.loc[ready, keys].duplicated(keep="first").to_numpy()
    return flags


@pytest.mark.parametrize("dedupe", ["phone+text", "phone", None])
@pytest.mark.parametrize("how", [{"text": "msg"}, {"template": "Hola {nombre}"}])
def test_row_checks_then_duplicates_give_validate(dedupe: str | None, how: dict) -> None:
    df = messy(400)
    expected = mf.validate(df, dedupe=dedupe, suppress=["04161234567"], **how)
    checked = check_rows(df, suppress=["04161234567"], **how)
    if dedupe is not None:
        assert later_copies(checked, dedupe).sum() > 0
        checked = mark_duplicates(checked, later_copies(checked, dedupe))
    pd.testing.assert_frame_equal(checked, expected)


def test_check_rows_refuses_dedupe() -> None:
    with pytest.raises(InputError, match="dedupe"):
        check_rows(messy(3), text="msg", dedupe="phone")


def test_empty_partition_has_validates_columns_and_dtypes() -> None:
    df = messy(20)
    full = mf.validate(df, template="{nombre}: {msg}")
    empty = check_rows(df.iloc[:0], template="{nombre}: {msg}")
    assert list(empty.columns) == list(full.columns)
    pd.testing.assert_series_equal(empty.dtypes, full.dtypes)
    assert len(empty) == 0


def test_empty_partition_still_refuses_a_wrong_option() -> None:
    with pytest.raises(InputError, match="nope"):
        empty_checked(messy(5).iloc[:0], text="nope")


def test_mark_duplicates_needs_one_flag_per_row() -> None:
    checked = check_rows(messy(5), text="msg")
    with pytest.raises(InputError, match="4 flags for 5 rows"):
        mark_duplicates(checked, [False] * 4)


def test_estimate_counts_messages_credits_and_requests() -> None:
    df = messy(3000, seed=3)
    validated = mf.validate(df, text="msg", long_text="split")
    got = estimate(validated, max_phones=50)
    ready = validated[validated["valid"]]
    assert got["ready"] == len(ready) > 0
    assert got["messages"] == got["credits"] == int(ready["parts"].sum()) > got["ready"]
    assert got["segments"] == int(ready["segments"].sum())
    assert got["rows"] == 3000
    assert got["invalid"] + got["suppressed"] + got["ready"] == 3000
    assert got["requests"] == minimum_requests(validated, method="POST", max_phones=50)
    planned = plan_batches(validated, method="POST", max_phones=50)
    assert planned["batch"].nunique() >= got["requests"]
    assert planned["batch"].nunique() <= got["requests"] + 1


def test_estimate_adds_up_over_partitions() -> None:
    validated = mf.validate(messy(500, seed=1), text="msg")
    parts = [partition_counts(validated.iloc[a : a + 123]) for a in range(0, 500, 123)]
    sums = pd.concat(parts).sum()
    assert finish_estimate(sums.to_dict(), max_phones=7) == estimate(validated, max_phones=7)


def test_finish_estimate_refuses_a_bad_max_phones() -> None:
    with pytest.raises(InputError, match="max_phones"):
        finish_estimate(
            dict.fromkeys(("rows", "ready", "invalid", "suppressed", "messages", "segments"), 1),
            max_phones=0,
        )


def test_a_missing_engine_skips_with_how_to_install_or_fails_when_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from conftest import SPARK_HOW, require_or_skip

    require_or_skip("spark", True, SPARK_HOW)  # available: nothing happens
    monkeypatch.delenv("MASSIVA_REQUIRE_SPARK", raising=False)
    with pytest.raises(pytest.skip.Exception, match="pip install 'massiva-frames\\[spark\\]'"):
        require_or_skip("spark", False, SPARK_HOW)
    monkeypatch.setenv("MASSIVA_REQUIRE_SPARK", "1")
    with pytest.raises(pytest.fail.Exception, match="MASSIVA_REQUIRE_SPARK is set"):
        require_or_skip("spark", False, SPARK_HOW)
