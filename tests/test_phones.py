"""Phone normalisation: a table of messy phones, dtypes, options, properties, phonenumbers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import phonenumbers
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from massiva_frames.errors import InputError
from massiva_frames.prepare.phones import (
    DEFAULT_OPERATORS,
    OPERATOR_NAMES,
    PHONE_REASONS,
    check_country,
    check_operators,
    normalize_phones,
)
from massiva_frames.prepare.validation import Reason

OK = None
P = "584141234567"

# (input, expected phone or None, expected reason or None)
CORPUS: list[tuple[Any, str | None, str | None]] = [
    # the formats of the issue
    ("584141234567", P, OK),
    ("+58 414-123.45.67", P, OK),
    ("0414 1234567", P, OK),
    ("(0414) 123-4567", P, OK),
    ("4141234567", P, OK),
    ("00584141234567", P, OK),
    (584141234567, P, OK),
    (584141234567.0, P, OK),
    ("584141234567.0", P, OK),
    (4141234567, P, OK),
    (4141234567.0, P, OK),
    # stray spaces, non-breaking and other Unicode spaces, dots, dashes
    (" 0414 123 4567 ", P, OK),
    ("0414\u00a01234567", P, OK),
    ("\u00a00414-1234567\u00a0", P, OK),
    ("0414\u2009123\u202f4567", P, OK),
    ("0414.123.45.67", P, OK),
    ("0414-123-45-67", P, OK),
    ("0414\u2013123\u20144567", P, OK),
    ("0414/1234567", P, OK),
    ("+58(414)1234567", P, OK),
    ("+58 (0) 414 1234567", P, OK),
    ("+5804141234567", P, OK),
    ("58 0414 1234567", P, OK),
    ("0058 414 123 4567", P, OK),
    ("'04141234567", P, OK),  # Excel's text apostrophe
    ('"0414-1234567"', P, OK),
    ("\t0414 1234567\n", P, OK),
    ("\ufeff04141234567", P, OK),
    # Excel floats: ".0", ".00", scientific notation with every digit
    ("584141234567.00", P, OK),
    ("4141234567.0", P, OK),
    ("5.84141234567E+11", P, OK),
    ("5.84141234567e11", P, OK),
    ("5,84141234567E+11", P, OK),
    (Decimal("584141234567"), P, OK),
    (np.int64(584141234567), P, OK),
    (np.float64(584141234567.0), P, OK),
    # dotted groups ending in zeros are digits, not an Excel float ("…57.00" pitfall)
    ("0414.123.57.00", "584141235700", OK),
    ("0414-123.57.00", "584141235700", OK),
    ("+58 414 123.57.00", "584141235700", OK),
    # every operator of the spec
    ("04121234567", "584121234567", OK),
    ("04161234567", "584161234567", OK),
    ("04241234567", "584241234567", OK),
    ("04261234567", "584261234567", OK),
    # missing
    (None, None, "phone_missing"),
    (float("nan"), None, "phone_missing"),
    (pd.NA, None, "phone_missing"),
    (pd.NaT, None, "phone_missing"),
    ("", None, "phone_missing"),
    ("   ", None, "phone_missing"),
    ("nan", None, "phone_missing"),
    ("N/A", None, "phone_missing"),
    ("None", None, "phone_missing"),
    ("--", None, "phone_missing"),
    # not a number
    ("abc", None, "phone_not_a_number"),
    ("0414-CALL-NOW", None, "phone_not_a_number"),
    ("0414 1234567 ext 2", None, "phone_not_a_number"),
    ("04141234567;04241234567", None, "phone_not_a_number"),
    (True, None, "phone_not_a_number"),
    (-4141234567, None, "phone_not_a_number"),
    (4141234567.5, None, "phone_not_a_number"),
    (float("inf"), None, "phone_not_a_number"),
    ("😀", None, "phone_not_a_number"),
    ([4141234567], None, "phone_not_a_number"),
    ({"tel": 1}, None, "phone_not_a_number"),
    (b"04141234567", None, "phone_not_a_number"),
    ("-4141234567", None, "phone_not_a_number"),
    ("0414+1234567", None, "phone_not_a_number"),
    # Excel lost digits: never guess a number
    ("5.84141E+11", None, "phone_truncated"),
    ("5.8414123456E+11", None, "phone_truncated"),
    # wrong length
    ("1234567", None, "phone_wrong_length"),
    ("0414123456", None, "phone_wrong_length"),
    ("041412345678", None, "phone_wrong_length"),
    ("58414123456", None, "phone_wrong_length"),
    ("580414123456", None, "phone_wrong_length"),
    ("+58414123456", None, "phone_wrong_length"),
    ("04141234567 / 04241234567", None, "phone_wrong_length"),
    ("5.84141234567E+25", None, "phone_wrong_length"),
    # landlines: Venezuelan geographic area codes
    ("0212 5551234", None, "phone_landline"),
    ("+58 212 555 1234", None, "phone_landline"),
    ("02617771234", None, "phone_landline"),
    ("0241-8001234", None, "phone_landline"),
    # unknown operator codes
    ("04151234567", None, "phone_unknown_operator"),
    ("04221234567", None, "phone_unknown_operator"),
    ("08001234567", None, "phone_unknown_operator"),
    ("584181234567", None, "phone_unknown_operator"),
    # other countries (allow_international=False by default): a valid one is refused as
    # international, an invalid one keeps its own reason
    ("+1 305 555 1234", None, "phone_international"),
    ("+57 300 123 4567", None, "phone_international"),
    ("0044 7911 123456", None, "phone_international"),
    ("+49 1512 3456789", None, "phone_international"),
    ("+41 44 668 1800", None, "phone_landline"),
    ("+999 1234567", None, "phone_unknown_country"),
    ("+1 555", None, "phone_wrong_length"),
]

#: Numbers of other countries with allow_international=True: (value, phone, reason).
ABROAD: list[tuple[str, str | None, str | None]] = [
    ("+1 305 555 1234", "13055551234", OK),
    ("+57 300 123 4567", "573001234567", OK),
    ("+44 7911 123456", "447911123456", OK),
    ("0044 7911 123456", "447911123456", OK),
    ("+49 1512 3456789", None, "phone_too_long"),
    ("+41 44 668 1800", None, "phone_landline"),
    ("+999 1234567", None, "phone_unknown_country"),
    ("+1 555", None, "phone_wrong_length"),
    ("+58 414 1234567", P, OK),
]


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 60
    assert {reason for _, _, reason in CORPUS if reason} >= set(PHONE_REASONS) - {"phone_too_long"}
    assert "phone_too_long" in {reason for _, _, reason in ABROAD}


@pytest.mark.parametrize(
    ("value", "phone", "reason"), CORPUS, ids=[repr(c[0])[:40] for c in CORPUS]
)
def test_corpus_one_by_one(value: Any, phone: str | None, reason: str | None) -> None:
    out = normalize_phones(pd.Series([value], dtype=object))
    got_phone = out["phone"].iloc[0]
    got_reason = out["reason"].iloc[0]
    assert (None if got_phone is pd.NA else got_phone) == phone
    assert (None if got_reason is pd.NA else got_reason) == reason


def test_corpus_as_one_column_keeps_index_and_order() -> None:
    values = [v for v, _, _ in CORPUS]
    index = pd.Index([f"row{i}" for i in range(len(values))][::-1])
    out = normalize_phones(pd.Series(values, index=index, dtype=object))
    assert out.index.equals(index)
    assert list(out.columns) == ["phone", "reason"]
    assert str(out["phone"].dtype) == "string" and str(out["reason"].dtype) == "string"
    expected_phone = [p if p is not None else pd.NA for _, p, _ in CORPUS]
    expected_reason = [r if r is not None else pd.NA for _, _, r in CORPUS]
    assert out["phone"].tolist() == expected_phone
    assert out["reason"].tolist() == expected_reason


@pytest.mark.parametrize(
    "series",
    [
        pd.Series(["0414 1234567", None, "02125551234"]),
        pd.Series(["0414 1234567", None, "02125551234"], dtype="string[pyarrow]"),
        pd.Series(["0414 1234567", None, "02125551234"], dtype="string[python]"),
        pd.Series(["0414 1234567", None, "02125551234"], dtype="category"),
        pd.Series([4141234567, None, 2125551234], dtype="Int64"),
        pd.Series([4141234567.0, np.nan, 2125551234.0]),
        pd.Series([584141234567, 0, 582125551234], dtype="int64"),
        pd.Series([584141234567.0, None, 582125551234.0], dtype="Float64"),
        pd.Series(["0414 1234567", None, "02125551234"], dtype=object),
        pd.Series(["0414 1234567", None, "02125551234"], dtype=pd.ArrowDtype(pa.string())),
    ],
    ids=[
        "str",
        "string-pyarrow",
        "string-python",
        "category",
        "Int64",
        "float",
        "int64",
        "Float64",
        "object",
        "arrow",
    ],
)
def test_every_dtype(series: pd.Series) -> None:
    out = normalize_phones(series)
    assert out["phone"].iloc[0] == P
    assert out["reason"].iloc[2] == "phone_landline"
    assert out["phone"].iloc[1] is pd.NA
    assert out["reason"].iloc[1] in ("phone_missing", "phone_wrong_length")


def test_bool_and_datetime_columns_are_not_numbers() -> None:
    assert (
        normalize_phones(pd.Series([True, False]))["reason"].tolist() == ["phone_not_a_number"] * 2
    )
    dates = pd.Series(pd.to_datetime(["2024-01-01", None]))
    assert normalize_phones(dates)["reason"].tolist() == ["phone_not_a_number", "phone_missing"]


def test_lists_arrays_and_index_inputs() -> None:
    assert normalize_phones(["04141234567"])["phone"].tolist() == [P]
    assert normalize_phones(np.array(["04141234567"]))["phone"].tolist() == [P]
    idx = pd.Index(["04141234567", "x"])
    assert normalize_phones(idx)["reason"].tolist()[1] == "phone_not_a_number"
    with pytest.raises(InputError, match="DataFrame"):
        normalize_phones(pd.DataFrame({"a": [1]}))  # type: ignore[arg-type]


def test_huge_integers_in_object_column() -> None:
    out = normalize_phones(pd.Series([2**70, -(2**70), 584141234567], dtype=object))
    assert out["reason"].tolist()[:2] == ["phone_wrong_length", "phone_not_a_number"]
    assert out["phone"].iloc[2] == P


def test_operators_are_configurable() -> None:
    values = ["04221234567", "04141234567"]
    default = normalize_phones(values)
    assert default["reason"].tolist() == ["phone_unknown_operator", pd.NA]
    with_422 = normalize_phones(values, operators=[*DEFAULT_OPERATORS, 422])
    assert with_422["phone"].tolist() == ["584221234567", P]
    only_424 = normalize_phones(values, operators=("424",))
    assert only_424["reason"].tolist() == ["phone_unknown_operator", "phone_unknown_operator"]
    assert set(DEFAULT_OPERATORS) <= set(OPERATOR_NAMES)


def test_bad_operator_and_country_arguments_raise_naming_them() -> None:
    with pytest.raises(InputError, match="operators"):
        check_operators(["41"])
    with pytest.raises(InputError, match="operators"):
        check_operators([])
    with pytest.raises(InputError, match="country"):
        check_country("999")
    with pytest.raises(InputError, match="country"):
        normalize_phones(["1"], country="ve")
    assert check_country("+58") == "58" and check_country(57) == "57"


def test_numbers_abroad_are_accepted_only_when_allowed() -> None:
    values = pd.Series([v for v, _, _ in ABROAD], dtype=object)
    allowed = normalize_phones(values, allow_international=True)
    assert allowed["phone"].tolist() == [pd.NA if p is None else p for _, p, _ in ABROAD]
    assert allowed["reason"].tolist() == [pd.NA if r is None else r for _, _, r in ABROAD]
    refused = normalize_phones(values)  # the default
    expected = ["phone_international" if r in (None, "phone_too_long") else r for _, _, r in ABROAD]
    expected[-1] = pd.NA  # +58 is home
    assert refused["reason"].tolist() == expected
    assert refused["phone"].tolist() == [pd.NA] * (len(ABROAD) - 1) + [P]
    assert normalize_phones(values, allow_international=False).equals(refused)


def test_the_international_reason_says_how_to_opt_in() -> None:
    message = Reason("phone_international").message
    assert "allow_international=True" in message and "Venezuelan" in message


def test_other_default_country_goes_through_phonenumbers() -> None:
    out = normalize_phones(
        ["300 123 4567", "+58 414 1234567", "601 555 1234"], country="57", allow_international=True
    )
    assert out["phone"].tolist()[:2] == ["573001234567", P]
    assert out["reason"].iloc[2] == "phone_landline"
    refused = normalize_phones(["300 123 4567", "+58 414 1234567", "+58 212 5551234"], country=57)
    # home numbers pass; a valid +58 mobile is abroad; a +58 landline stays a landline
    assert refused["reason"].tolist() == [pd.NA, "phone_international", "phone_landline"]
    assert refused["phone"].tolist() == ["573001234567", pd.NA, pd.NA]


def test_repeated_international_numbers_are_parsed_once_per_value() -> None:
    values = ["+1 305 555 1234"] * 50 + ["+44 7911 123456"] * 50
    out = normalize_phones(values, allow_international=True)
    assert out["phone"].nunique() == 2 and out["reason"].isna().all()
    refused = normalize_phones(values)
    assert (refused["reason"] == "phone_international").all()


def test_every_reason_code_is_a_reason_member() -> None:
    assert set(PHONE_REASONS) <= {r.value for r in Reason}


# -- properties ---------------------------------------------------------------------

cells = st.one_of(
    st.none(),
    st.just(float("nan")),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=False),
    st.text(max_size=40),
    st.text(alphabet="0123456789 +-.()/\u00a0eE", max_size=25),
    st.from_regex(r"\A(\+58|0058|0|58)?4(12|14|16|24|26)[ .-]?\d{3}[ .-]?\d{4}\Z"),
    st.text(min_size=2000, max_size=5000, alphabet="0123456789"),
    st.binary(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.sampled_from(["😀", "٠٤١٤", "\x00", "0414\x001234567", "+", "00", "()"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(cells, min_size=1, max_size=30))
def test_never_raises_and_every_row_gets_exactly_one_outcome(values: list[Any]) -> None:
    series = pd.Series(values, dtype=object)
    out = normalize_phones(series)
    assert len(out) == len(values)
    has_phone = out["phone"].notna().to_numpy()
    has_reason = out["reason"].notna().to_numpy()
    assert (has_phone ^ has_reason).all()
    assert set(out["reason"].dropna()) <= set(PHONE_REASONS)
    for phone in out["phone"].dropna():
        assert phone.isdigit() and len(phone) <= 12


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=30), st.integers()), min_size=1, max_size=20))
def test_same_answer_one_by_one_and_as_a_column(values: list[Any]) -> None:
    column = normalize_phones(pd.Series(values, dtype=object))
    for i, value in enumerate(values):
        single = normalize_phones(pd.Series([value], dtype=object))
        assert single["phone"].iloc[0] is column["phone"].iloc[i] or (
            single["phone"].iloc[0] == column["phone"].iloc[i]
        )
        assert str(single["reason"].iloc[0]) == str(column["reason"].iloc[i])


# -- cross-check against phonenumbers ------------------------------------------------

AREA_CODES = [
    "412",
    "414",
    "416",
    "424",
    "426",
    "415",
    "417",
    "418",
    "422",
    "212",
    "241",
    "261",
    "295",
    "213",
    "400",
    "500",
    "800",
    "900",
    "312",
    "999",
]


def _shapes(national: str, style: int) -> str:
    op, sub = national[:3], national[3:]
    return [
        f"58{national}",
        f"+58 {op}-{sub[:3]}.{sub[3:5]}.{sub[5:]}",
        f"0{op} {sub}",
        f"(0{op}) {sub[:3]}-{sub[3:]}",
        national,
        f"0058{national}",
        f"+58 (0) {op} {sub}",
    ][style]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(AREA_CODES), st.integers(0, 9_999_999), st.integers(0, 6)),
        min_size=1,
        max_size=40,
    )
)
def test_venezuelan_numbers_agree_with_phonenumbers(rows: list[tuple[str, int, int]]) -> None:
    nationals = [f"{area}{sub:07d}" for area, sub, _ in rows]
    out = normalize_phones(
        [_shapes(n, style) for n, (_, _, style) in zip(nationals, rows, strict=True)]
    )
    phones = out["phone"].astype(object).where(out["phone"].notna(), None)
    reasons = out["reason"].astype(object).where(out["reason"].notna(), None)
    for national, phone, reason in zip(nationals, phones, reasons, strict=True):
        number = phonenumbers.parse("+58" + national)
        kind = phonenumbers.number_type(number)
        mobile = (
            phonenumbers.is_valid_number(number) and kind == phonenumbers.PhoneNumberType.MOBILE
        )
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
        if national[:3] in DEFAULT_OPERATORS:
            assert mobile, national  # the spec's operators are mobile for phonenumbers too
            assert phone == e164 and reason is None
        else:
            assert phone is None
        if kind == phonenumbers.PhoneNumberType.FIXED_LINE and national.startswith("2"):
            assert reason == "phone_landline"
        if reason == "phone_landline":
            assert national.startswith("2")
        if phone is not None:
            assert mobile


def test_a_slice_of_generated_numbers_matches_phonenumbers_e164() -> None:
    rng = np.random.default_rng(7)
    ops = rng.choice(list(DEFAULT_OPERATORS), 2000)
    subs = rng.integers(0, 10_000_000, 2000)
    nationals = [f"{o}{s:07d}" for o, s in zip(ops, subs, strict=True)]
    out = normalize_phones([f"0{n[:3]}-{n[3:]}" for n in nationals])
    expected = [
        phonenumbers.format_number(
            phonenumbers.parse("0" + n, "VE"), phonenumbers.PhoneNumberFormat.E164
        )[1:]
        for n in nationals
    ]
    assert out["phone"].tolist() == expected


def test_very_long_values_do_not_crash() -> None:
    out = normalize_phones(["9" * 100_000, "x" * 100_000, "+" + "5" * 50_000, "0414 " * 20_000])
    assert out["reason"].tolist() == [
        "phone_wrong_length",
        "phone_not_a_number",
        "phone_wrong_length",
        "phone_wrong_length",
    ]
