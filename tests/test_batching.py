"""Batch planning: bounds, coverage, determinism, near-minimal request counts."""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import quote_plus, urlencode

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from massiva_frames.errors import InputError
from massiva_frames.prepare.batching import Batch, iter_batches, plan_batches
from massiva_frames.prepare.lower_bound import minimum_requests
from massiva_frames.prepare.texts import split_text
from massiva_frames.prepare.validation import validate
from massiva_frames.wire.client import MassivaClient

USER = "usuario@example.com"
CLAVE = "s3cr3t&clave=1"
BASE = "http://127.0.0.1:9/webservices"
GET = {"method": "GET", "usuario": USER, "clave": CLAVE, "base_url": BASE}


def _phones(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    ops = np.array(["412", "414", "416", "424", "426"])
    subs = rng.choice(10_000_000, size=n, replace=False)
    return [f"0{o}{s:07d}" for o, s in zip(ops[rng.integers(0, 5, n)], subs, strict=True)]


def _url_length(batch: Batch, group: str | None = None) -> int:
    """The GET URL as the provider receives it, built here with urllib only."""
    params = {
        "usuario": USER,
        "clave": CLAVE,
        "telefonos": ";".join(batch.phones),
        "texto": "|".join(batch.texts),
    }
    if group:
        params["grupo"] = group
    return len(f"{BASE}/SendSms?" + urlencode(params))


def _check_plan(planned: pd.DataFrame, max_phones: int, get: bool, group: str | None = None) -> int:
    """Every ready row once, at its position; every request within the bounds."""
    assert planned.index.is_unique
    batches = list(iter_batches(planned))
    assert [b.number for b in batches] == list(range(len(batches)))
    rows = {
        label: (batch, pos, phone, text, parts)
        for label, batch, pos, phone, text, parts in zip(
            planned.index,
            planned["batch"],
            planned["batch_pos"],
            planned["phone"],
            planned["text"],
            planned["parts"] if "parts" in planned else [1] * len(planned),
            strict=True,
        )
    }
    seen: Counter[Any] = Counter()
    for b in batches:
        assert 1 <= len(b.phones) <= max_phones
        assert len(b.texts) in (1, len(b.phones))
        assert len(b.index) == len(b.phones)
        if get:
            assert _url_length(b, group) <= 2048
        for pos, label in enumerate(b.index):
            if b.part is not None and b.part[pos] != 1:
                continue
            seen[label] += 1
            batch, batch_pos, phone, text, parts = rows[label]
            assert (batch, batch_pos, b.phones[pos]) == (b.number, pos, phone)
            if parts == 1:
                assert (b.texts[0] if len(b.texts) == 1 else b.texts[pos]) == text
    ready = planned.index[planned["valid"].to_numpy(dtype=bool)]
    assert set(seen) == set(ready) and all(v == 1 for v in seen.values())
    assert planned.loc[~planned["valid"].to_numpy(dtype=bool), "batch"].isna().all()
    return len(batches)


def test_rows_with_one_text_share_requests() -> None:
    df = pd.DataFrame({"tel": _phones(7), "msg": ["Hola"] * 5 + ["Chao", "Otro"]})
    planned = plan_batches(validate(df, phone="tel", text="msg"), max_phones=3)
    batches = list(iter_batches(planned))
    assert [len(b) for b in batches] == [3, 2, 2] or [len(b) for b in batches] == [3, 3, 1]
    assert batches[0].texts == ("Hola",) and batches[0].shared
    assert _check_plan(planned, 3, get=False) == minimum_requests(
        validate(df, phone="tel", text="msg"), max_phones=3
    )
    assert str(planned["batch"].dtype) == "Int64" and str(planned["batch_pos"].dtype) == "Int64"


def test_distinct_texts_are_paired_in_order() -> None:
    df = pd.DataFrame({"tel": _phones(4), "msg": ["uno", "dos", "tres", "cuatro"]})
    planned = plan_batches(validate(df, phone="tel", text="msg"))
    (batch,) = iter_batches(planned)
    assert not batch.shared
    assert batch.texts == ("uno", "dos", "tres", "cuatro")
    assert list(batch.index) == [0, 1, 2, 3]
    params = batch.params(USER, CLAVE, group="CLIENTES")
    assert params["texto"] == "uno|dos|tres|cuatro" and params["grupo"] == "CLIENTES"
    assert "clave" not in repr(batch) and "58" not in repr(batch)


def test_invalid_and_suppressed_rows_are_never_planned() -> None:
    df = pd.DataFrame(
        {
            "tel": ["04141234567", "02125551234", "04141234567", "04241234567"],
            "msg": ["Hola", "Hola", "Hola", "Hola"],
        },
        index=["a", "b", "c", "d"],
    )
    planned = plan_batches(validate(df, phone="tel", text="msg", suppress=["0424-1234567"]))
    assert planned["batch"].isna().tolist() == [False, True, True, True]
    assert planned["state"].tolist() == ["ready", "invalid", "suppressed", "suppressed"]
    (batch,) = iter_batches(planned)
    assert list(batch.index) == ["a"]


def test_plan_is_deterministic_and_keeps_the_index() -> None:
    rng = np.random.default_rng(1)
    index = pd.Index(rng.permutation(3000) * 7 + 1, name="id")
    df = pd.DataFrame(
        {"tel": _phones(3000, 2), "msg": rng.choice(["a", "b", "c", "dd", "é"], 3000)}, index=index
    )
    validated = validate(df, phone="tel", text="msg")
    first = plan_batches(validated, max_phones=40)
    second = plan_batches(validated.copy(), max_phones=40)
    pd.testing.assert_frame_equal(first, second)
    assert first.index.equals(index)
    _check_plan(first, 40, get=False)
    # batch numbers follow each batch's first row
    firsts = first.dropna(subset=["batch"]).reset_index().groupby("batch")["id"].first()
    order = [index.get_loc(label) for label in firsts]
    assert order == sorted(order)


def test_post_uses_exactly_the_minimum() -> None:
    rng = np.random.default_rng(4)
    df = pd.DataFrame({"tel": _phones(5000, 4), "msg": rng.choice(list("abcdefg"), 5000)})
    validated = validate(df, phone="tel", text="msg")
    for m in (1, 7, 100, 500, 10_000):
        planned = plan_batches(validated, max_phones=m)
        assert _check_plan(planned, m, get=False) == minimum_requests(validated, max_phones=m)


def test_get_respects_the_exact_url_length() -> None:
    rng = np.random.default_rng(5)
    texts = ["Hola señor, su pedido llegó 😀", "x" * 160, "á" * 150, "promo & más: 50% off"]
    df = pd.DataFrame({"tel": _phones(3000, 5), "msg": rng.choice(texts, 3000)})
    validated = validate(df, phone="tel", text="msg")
    planned = plan_batches(validated, max_phones=500, **GET)
    n = _check_plan(planned, 500, get=True)
    assert n <= 1.01 * minimum_requests(validated, max_phones=500, **GET)


def test_get_with_a_client_gives_the_same_plan() -> None:
    df = pd.DataFrame({"tel": _phones(800, 6), "msg": [f"Código {i % 37}" for i in range(800)]})
    validated = validate(df, phone="tel", text="msg")
    with MassivaClient(USER, CLAVE, BASE) as client:
        via_client = plan_batches(validated, method="GET", client=client, group="G1")
    via_args = plan_batches(validated, **GET, group="G1")
    pd.testing.assert_frame_equal(via_client, via_args)
    _check_plan(via_client, 500, get=True, group="G1")


@pytest.mark.parametrize(
    "make_texts",
    [
        lambda rng, n: [f"Promo {i}: descuento especial" for i in rng.integers(0, 300, n)],
        lambda rng, n: [f"Hola cliente {i}, su saldo es {i * 3.7:,.2f}" for i in range(n)],
        lambda rng, n: [f"Código {i % 500}" for i in range(n)],
        lambda rng, n: ["ñ" * int(k) for k in rng.integers(60, 160, n)],
        lambda rng, n: list(rng.choice(["Hola", "x" * 150, "á" * 150], n, p=[0.9, 0.05, 0.05])),
        lambda rng, n: [f"Mensaje {k}" for k in rng.zipf(1.5, n) % 5000],
    ],
    ids=["300-texts", "all-unique", "groups-of-20", "long-ucs", "few", "zipf"],
)
def test_get_request_count_within_one_percent_of_the_bound(make_texts: Any) -> None:
    rng = np.random.default_rng(8)
    n = 20_000
    df = pd.DataFrame({"tel": _phones(n, 8), "msg": make_texts(rng, n)})
    validated = validate(df, phone="tel", text="msg", dedupe=None)
    planned = plan_batches(validated, **GET)
    requests = int(planned["batch"].max()) + 1
    bound = minimum_requests(validated, **GET)
    assert bound <= requests <= max(bound + 1, 1.01 * bound)
    assert planned["batch"].notna().sum() == planned["valid"].sum() == n


def test_a_row_too_long_for_any_get_becomes_invalid() -> None:
    # 160 emoji take 1,920 URL characters: with the default base URL the row cannot fit
    df = pd.DataFrame({"tel": _phones(3), "msg": ["😀" * 160, "Hola", "Hola"]})
    validated = validate(df, phone="tel", text="msg")
    assert validated["valid"].all()
    assert plan_batches(validated, **GET)["valid"].all()  # short base URL: it fits
    planned = plan_batches(validated, method="GET", usuario=USER, clave=CLAVE)
    assert planned["state"].tolist() == ["invalid", "ready", "ready"]
    assert planned["reason"].tolist()[0] == "url_too_long"
    assert planned["valid"].tolist() == [False, True, True]
    assert validated["valid"].all() and "batch" not in validated  # the input is untouched
    assert list(iter_batches(planned))[0].index.tolist() == [1, 2]
    # POST has no URL: the same row is planned
    assert plan_batches(validated)["batch"].notna().all()


def test_split_rows_travel_whole_in_one_request() -> None:
    long = ("palabra " * 45).strip()  # 359 characters: three parts
    df = pd.DataFrame({"tel": _phones(3), "msg": [long, "Hola", "Hola"]})
    validated = validate(df, phone="tel", text="msg", long_text="split")
    assert validated["parts"].tolist() == [3, 1, 1]
    planned = plan_batches(validated)
    batches = list(iter_batches(planned))
    with_parts = [b for b in batches if b.part is not None]
    assert len(with_parts) == 1
    b = with_parts[0]
    positions = [i for i, label in enumerate(b.index) if label == 0]
    assert [b.part[i] for i in positions] == [1, 2, 3]
    assert [b.texts[i] for i in positions] == split_text(long)
    assert positions == list(range(positions[0], positions[0] + 3))
    assert planned.loc[0, "batch_pos"] == positions[0]
    assert sum(len(x) for x in batches) == 5
    get_planned = plan_batches(validated, **GET)
    _check_plan(get_planned, 500, get=True)
    assert minimum_requests(validated, max_phones=2) == 3  # 5 entries, 2 per request


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"method": "PUT"}, "method"),
        ({"max_phones": 0}, "max_phones"),
        ({"max_phones": 2.5}, "max_phones"),
        ({"method": "GET"}, "usuario"),
        ({**GET, "max_url": 100}, "max_url"),
    ],
)
def test_wrong_arguments_raise(options: dict[str, Any], match: str) -> None:
    validated = validate(pd.DataFrame({"tel": _phones(1), "msg": ["x"]}), phone="tel", text="msg")
    with pytest.raises(InputError, match=match):
        plan_batches(validated, **options)


def test_frames_that_were_not_validated_are_refused() -> None:
    with pytest.raises(InputError, match="valid"):
        plan_batches(pd.DataFrame({"phone": ["1"], "text": ["x"]}))
    with pytest.raises(InputError, match="batch"):
        list(iter_batches(pd.DataFrame({"phone": ["1"], "text": ["x"]})))
    with pytest.raises(InputError, match="DataFrame"):
        plan_batches([1, 2])  # type: ignore[arg-type]


def test_nothing_to_plan() -> None:
    df = pd.DataFrame({"tel": ["02125551234"], "msg": ["x"]})
    planned = plan_batches(validate(df, phone="tel", text="msg"))
    assert planned["batch"].isna().all()
    assert list(iter_batches(planned)) == []
    assert minimum_requests(validate(df, phone="tel", text="msg"), **GET) == 0


def test_a_minimal_frame_from_another_module_plans() -> None:
    frame = pd.DataFrame(
        {
            "phone": ["584141234567", "584241234567"],
            "text": ["a", "a"],
            "valid": True,
            "state": "ready",
            "reason": pd.NA,
        }
    )
    (batch,) = iter_batches(plan_batches(frame, **GET))
    assert batch.phones == ("584141234567", "584241234567") and batch.texts == ("a",)


texts_strategy = st.one_of(
    st.sampled_from(["Hola", "Chao", "x" * 160, "ñ" * 150, "😀" * 100, "a b c", "&=?%+"]),
    st.text(alphabet="abcñé😀 &%", min_size=1, max_size=160).filter(lambda t: t.strip()),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(texts_strategy, min_size=1, max_size=120),
    st.integers(1, 60),
    st.booleans(),
    st.sampled_from([None, "GRUPO", "grupo con espacios"]),
)
def test_bounds_and_coverage_hold_for_any_frame(
    texts: list[str], max_phones: int, get: bool, group: str | None
) -> None:
    df = pd.DataFrame({"tel": _phones(len(texts), len(texts)), "msg": texts})
    validated = validate(df, phone="tel", text="msg")
    options: dict[str, Any] = dict(GET, group=group) if get else {}
    planned = plan_batches(validated, max_phones=max_phones, **options)
    requests = _check_plan(planned, max_phones, get=get, group=group)
    bound = minimum_requests(validated, max_phones=max_phones, **options)
    assert bound <= requests
    if not get:
        assert requests == bound
    else:
        assert requests <= max(bound + 2, 1.01 * bound)


@pytest.mark.slow
def test_large_plan_many_batches_of_500() -> None:
    n = 200_000
    rng = np.random.default_rng(11)
    df = pd.DataFrame(
        {"tel": _phones(n, 11), "msg": rng.choice([f"Texto {i}" for i in range(50)], n)}
    )
    validated = validate(df, phone="tel", text="msg")
    planned = plan_batches(validated)
    batches = list(iter_batches(planned))
    assert len(batches) == minimum_requests(validated) == 400
    assert sum(len(b) for b in batches) == n
    assert all(len(b) <= 500 for b in batches)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=80), min_size=1, max_size=10))
def test_quoted_lengths_match_quote_plus(texts: list[str]) -> None:
    import pyarrow as pa

    from massiva_frames.prepare.sizing import quoted_lengths

    got = quoted_lengths(pa.array(texts, pa.large_string()), "utf-8").tolist()
    assert got == [len(quote_plus(t, safe="")) for t in texts]
    latin = [t for t in texts if all(ord(c) < 256 for c in t)]
    if latin:
        got = quoted_lengths(pa.array(latin, pa.large_string()), "iso8859-1").tolist()
        assert got == [len(quote_plus(t, safe="", encoding="latin-1")) for t in latin]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(["abcdefgh-MIDDLE-1-ijklmnop", "abcdefgh-MIDDLE-2-ijklmnop", "a", ""]),
            st.text(max_size=30),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_text_groups_are_exact(texts: list[str]) -> None:
    import pyarrow as pa

    from massiva_frames.prepare.batching import _text_codes

    arr = pa.array(["prefix", *texts], pa.large_string()).slice(1)  # a non-zero offset
    rows = np.arange(len(texts))
    codes, n_groups = _text_codes(arr, rows)
    assert n_groups == len(set(texts))
    for i in range(len(texts)):
        for j in range(len(texts)):
            assert (codes[i] == codes[j]) == (texts[i] == texts[j])
    rows = np.arange(len(texts))[1::2]  # some rows only, as plan_batches passes them
    codes, n_groups = _text_codes(arr, rows)
    assert n_groups == len({texts[i] for i in rows})
    for a, i in enumerate(rows):
        for b, j in enumerate(rows):
            assert (codes[a] == codes[b]) == (texts[i] == texts[j])


def test_rows_without_phone_or_text_are_not_planned_even_if_marked_valid() -> None:
    frame = pd.DataFrame(
        {
            "phone": pd.array(["584141234567", None, "584241234567"], dtype="string"),
            "text": pd.array(["a", "a", None], dtype="string"),
            "valid": True,
            "state": "ready",
            "reason": pd.NA,
        }
    )
    planned = plan_batches(frame)
    assert planned["batch"].notna().tolist() == [True, False, False]
