"""Texts: templates, missing values, checks, GSM-7/UCS-2 segments, transliteration."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from massiva_frames.errors import InputError
from massiva_frames.prepare.templates import (
    Rendered,
    TemplateField,
    column_text,
    template_fields,
)
from massiva_frames.prepare.templates import render_template as _render
from massiva_frames.prepare.texts import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    TEXT_REASONS,
    TRANSLITERATION,
    check_texts,
    segment_count,
    split_text,
    text_facts,
    transliterate,
)
from massiva_frames.prepare.validation import Reason


def render_template(df: pd.DataFrame, template: str, **kw: Any) -> tuple[Any, ...]:
    out: Rendered = _render(df, template, **kw)
    # the facts measured piece by piece equal the facts of the final text
    whole = text_facts(out.text)
    nulls = pd.isna(pd.Series(out.text.to_pylist(), dtype=object)).to_numpy()
    for name in ("length", "nbytes", "gsm", "flagged", "basic"):
        got, want = getattr(out.facts, name), getattr(whole, name)
        assert (got[~nulls] == want[~nulls]).all(), name
    return out.text, out.missing_at, out.failed_at, out.columns


def _reasons(texts: list[Any], **options: Any) -> list[str | None]:
    return check_texts(pa.array(texts, pa.large_string()), **options).reasons()


# -- templates -------------------------------------------------------------------------


def test_template_fields_split_literals_and_fields() -> None:
    lits, fields = template_fields("Hola {nombre}, su saldo es {saldo:,.2f} {{ok}}")
    assert lits == ["Hola ", ", su saldo es ", " {ok}"]
    assert [(f.column, f.spec) for f in fields] == [("nombre", ""), ("saldo", ",.2f")]


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ("Hola {nombre", "template"),
        ("Hola {}", "positional"),
        ("Hola {0}", "positional"),
        ("Hola {x:{w}}", "nested"),
        ("Hola {apellido}", "apellido"),
        ("Hola {saldo:zz}", "invalid format spec"),
    ],
)
def test_bad_templates_raise_naming_the_problem(template: str, match: str) -> None:
    df = pd.DataFrame({"nombre": ["a"], "saldo": [1.0], "x": [1], "w": [2]})
    with pytest.raises(InputError, match=match):
        render_template(df, template)


def test_template_must_be_a_string() -> None:
    with pytest.raises(InputError, match="template"):
        template_fields(42)  # type: ignore[arg-type]


def test_render_with_format_specs_and_missing_values() -> None:
    df = pd.DataFrame(
        {
            "nombre": ["Ana", None, "  Luis ", "nan", "", "José"],
            "saldo": [1234.5, 2.0, float("nan"), 3.0, 4.0, -0.004],
        }
    )
    text, missing, failed, cols = render_template(df, "Hola {nombre}, su saldo es {saldo:,.2f}")
    assert cols == ["nombre", "saldo"]
    assert text.to_pylist() == [
        "Hola Ana, su saldo es 1,234.50",
        None,
        None,
        None,
        None,
        "Hola José, su saldo es -0.00",
    ]
    # the first field at fault, by position in the template
    assert missing.tolist() == [-1, 0, 1, 0, 0, -1]
    assert (failed == -1).all()


def test_never_the_word_nan_in_a_text() -> None:
    df = pd.DataFrame(
        {
            "a": [np.nan, None, pd.NA, "NaN", "None", "<NA>", "NaT", "ok"],
            "b": pd.array([1, 1, 1, 1, 1, 1, 1, None], dtype="Int64"),
        },
        dtype=object,
    )
    text, missing, _, _ = render_template(df, "{a} {b}")
    assert text.to_pylist() == [None] * 8
    assert missing.tolist() == [0, 0, 0, 0, 0, 0, 0, 1]


def test_render_numbers_and_dates_with_format_specs() -> None:
    df = pd.DataFrame(
        {
            "n": pd.array([1, 1234567, None], dtype="Int64"),
            "f": pd.Series(pd.to_datetime(["2024-03-05", "2024-12-31", "2025-01-01"])),
            "s": ["x", "y", "z"],
        }
    )
    text, missing, failed, _ = render_template(df, "{n:,} {f:%d/%m/%Y} {s}")
    assert text.to_pylist()[:2] == ["1 05/03/2024 x", "1,234,567 31/12/2024 y"]
    assert missing.tolist() == [-1, -1, 0]


def test_numbers_stored_as_text_still_take_a_numeric_spec() -> None:
    df = pd.DataFrame({"saldo": ["1234.5", "abc", "7"]})
    text, missing, failed, _ = render_template(df, "{saldo:,.2f}")
    assert text.to_pylist() == ["1,234.50", None, "7.00"]
    assert failed.tolist() == [-1, 0, -1] and (missing == -1).all()


def test_template_without_fields_and_with_one_field_only() -> None:
    df = pd.DataFrame({"x": [1, 2]})
    assert render_template(df, "Hola")[0].to_pylist() == ["Hola", "Hola"]
    assert render_template(df, "¿Cómo está? {x}", translit=True)[0].to_pylist() == [
        "¿Como esta? 1",
        "¿Como esta? 2",
    ]
    assert render_template(df, "{x}")[0].to_pylist() == ["1", "2"]


def test_cells_that_are_not_one_value_are_never_rendered() -> None:
    df = pd.DataFrame({"x": [[1, 2], None, {"a": 1}, "ok", 7]})
    out = _render(df, "v={x}")
    assert out.text.to_pylist() == [None, None, None, "v=ok", "v=7"]
    assert out.odd_at.tolist() == [0, -1, 0, -1, -1]
    assert out.missing_at.tolist() == [-1, 0, -1, -1, -1]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False, min_value=-1e17, max_value=1e17),
            st.floats(min_value=0, max_value=1e6).map(lambda v: round(v, 3)),
            st.sampled_from([0.125, 2.675, 1.005, -0.0, 0.5, 1.5, 999.995, 1e15, 2.0**53]),
        ),
        min_size=1,
        max_size=50,
    ),
    st.sampled_from([",.2f", ".2f", ",.0f", ".3f", "f", ",.1f", ".0f", ",f", ".15f", ".20f"]),
)
@example([0.0, -0.0], ".20f")  # factorize holds -0.0 equal to 0.0
@example([-0.0, 0.0, 1.0], ",.2f")
def test_vectorised_number_formatting_matches_python(values: list[float], spec: str) -> None:
    piece = column_text(pd.Series(values), TemplateField("x", spec))
    assert piece.text.to_pylist() == [format(v, spec) for v in values]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(min_value=-(2**62), max_value=2**62), min_size=1, max_size=30),
    st.sampled_from([",", ",d", "d", ".2f", ""]),
)
def test_integer_formatting_matches_python(values: list[int], spec: str) -> None:
    piece = column_text(pd.Series(values, dtype="int64"), TemplateField("x", spec))
    assert piece.text.to_pylist() == [format(v, spec) for v in values]


# -- checks ----------------------------------------------------------------------------


def test_check_reasons_one_per_row() -> None:
    texts = [
        "Hola",
        "",
        "   ",
        "a|b",
        "x\ty",
        "line\nbreak",
        "crlf\r\nok",
        "\x85c1",
        "a" * 161,
        None,
    ]
    assert _reasons(texts) == [
        None,
        "text_empty",
        "text_empty",
        "text_separator",
        "text_control_chars",
        None,
        None,
        "text_control_chars",
        "text_too_long",
        "text_missing_value",
    ]
    assert set(TEXT_REASONS) <= {r.value for r in Reason}


def test_long_text_policies() -> None:
    long = "palabra " * 30  # 240 characters
    truncated = check_texts(pa.array([long.strip()]), long_text="truncate")
    (text,) = truncated.text.to_pylist()
    assert len(text) <= 160 and text.endswith("...") and truncated.code[0] == 0
    split = check_texts(pa.array([long.strip()]), long_text="split")
    assert split.code[0] == 0 and split.parts[0] == 2
    assert split.text.to_pylist() == [long.strip()]  # the full text is kept
    assert split.segments[0] == 2
    with pytest.raises(InputError, match="long_text"):
        check_texts(pa.array(["x"]), long_text="cut")


def test_transliteration_keeps_what_gsm_has() -> None:
    out = transliterate(pa.array(["¿Está en Mérida? “sí” — ñandú… ¡ÜÑ!", None]))
    assert out.to_pylist() == ['¿Esta en Mérida? "si" - ñandu... ¡ÜÑ!', None]
    for source, target in TRANSLITERATION.items():
        assert all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in target), source
        assert source not in GSM7_BASIC + GSM7_EXTENSION
    checked = check_texts(pa.array(["Acción en Mérida"]), do_transliterate=True)
    assert checked.text.to_pylist() == ["Accion en Mérida"] and bool(checked.gsm[0])


def test_transliterate_accepts_a_series() -> None:
    out = transliterate(pd.Series(["canción", None], index=["a", "b"]))
    assert out.tolist() == ["cancion", pd.NA] and list(out.index) == ["a", "b"]
    assert transliterate(["Ñandú"]).tolist() == ["Ñandu"]


def test_transliteration_of_mixed_rows_touches_only_what_it_replaces() -> None:
    texts = ["plain ascii", "tab\there", "back`tick", "Mérida sí", None, "ok", "“x”"]
    out = transliterate(pa.array(texts, pa.large_string()))
    assert out.to_pylist() == [
        "plain ascii",
        "tab here",
        "back'tick",
        "Mérida si",
        None,
        "ok",
        '"x"',
    ]
    assert transliterate(pa.array(["Mérida", "ñandu"])).to_pylist() == ["Mérida", "ñandu"]


def test_an_object_column_of_strings_fills_like_a_string_column() -> None:
    values = ["Ana", None, " nan ", "  ", "José", float("nan"), "Ana"]
    frame = pd.DataFrame(
        {"o": pd.Series(values, dtype=object), "s": pd.Series(values, dtype="string")}
    )
    by_object = _render(frame, "Hola {o}!", translit=True)
    by_string = _render(frame, "Hola {s}!", translit=True)
    assert by_object.text.to_pylist() == by_string.text.to_pylist()
    assert by_object.text.to_pylist() == [
        "Hola Ana!",
        None,
        None,
        None,
        "Hola José!",
        None,
        "Hola Ana!",
    ]
    assert by_object.missing_at.tolist() == by_string.missing_at.tolist()
    # bytes are not text: never rendered as b'...'
    odd = pd.DataFrame({"o": pd.Series(["Ana", b"Luis"], dtype=object)})
    rendered = _render(odd, "Hola {o}")
    assert rendered.text.to_pylist() == ["Hola Ana", None] and rendered.odd_at.tolist() == [-1, 0]


# -- encoding and segments -------------------------------------------------------------

SEGMENTS = [
    ("Hola", "GSM-7", 1),
    ("a" * 160, "GSM-7", 1),
    ("a" * 161, "GSM-7", 2),
    ("a" * 306, "GSM-7", 2),
    ("a" * 307, "GSM-7", 3),
    ("€" * 80, "GSM-7", 1),
    ("€" * 81, "GSM-7", 2),
    ("{" * 76 + "a" * 8, "GSM-7", 1),
    ("{" * 76 + "a" * 9, "GSM-7", 2),
    # 152 septets then an escape pair: it may not straddle the boundary -> 3 parts
    ("a" * 152 + "[" + "a" * 152, "GSM-7", 3),
    ("a" * 153 + "[" + "a" * 151, "GSM-7", 2),
    ("ñÑüÜéÉ¿¡àèìòù", "GSM-7", 1),
    ("Acción", "UCS-2", 1),
    ("á" * 70, "UCS-2", 1),
    ("á" * 71, "UCS-2", 2),
    ("á" * 134, "UCS-2", 2),
    ("á" * 135, "UCS-2", 3),
    ("😀" * 35, "UCS-2", 1),
    ("😀" * 36, "UCS-2", 2),
    # 66 units then a surrogate pair: it may not straddle the boundary
    ("á" * 66 + "😀" + "á" * 66, "UCS-2", 3),
    ("`", "UCS-2", 1),  # the backtick is not GSM-7
]


@pytest.mark.parametrize(("text", "encoding", "segments"), SEGMENTS)
def test_segment_table(text: str, encoding: str, segments: int) -> None:
    assert segment_count(text) == (encoding, segments)
    checked = check_texts(pa.array([text]), long_text="split")
    assert ("GSM-7" if checked.gsm[0] else "UCS-2") == encoding
    if len(text) <= 160:
        assert checked.segments[0] == segments


def _reference_segments(text: str) -> int:
    """Carrier count written independently: septets or UTF-16 units, no split pairs."""
    gsm = all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text)
    if gsm:
        units = [2 if c in GSM7_EXTENSION else 1 for c in text]
        single, part = 160, 153
    else:
        units = [len(c.encode("utf-16-le")) // 2 for c in text]
        single, part = 70, 67
    if sum(units) <= single:
        return 1
    parts, room = 0, 0
    for u in units:
        if u > room:
            parts, room = parts + 1, part
        room -= u
    return parts


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab {}€[áñ😀\n")), max_size=160))
def test_vectorised_segments_match_a_reference(text: str) -> None:
    checked = check_texts(pa.array([text]))
    if checked.code[0] == 0:
        assert checked.segments[0] == _reference_segments(text)
        assert math.isclose(checked.segments[0], segment_count(text)[1])


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=600))
def test_split_text_properties(text: str) -> None:
    parts = split_text(text)
    assert all(0 < len(p) <= 160 for p in parts)
    # only whitespace at the cuts is dropped: every other character stays, in order
    assert "".join("".join(parts).split()) == "".join(text.split())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.text(max_size=400)), min_size=1, max_size=20),
    st.sampled_from(["error", "truncate", "split"]),
    st.booleans(),
)
def test_checks_never_raise_and_give_one_reason(
    texts: list[str | None], policy: str, translit: bool
) -> None:
    checked = check_texts(
        pa.array(texts, pa.large_string()), long_text=policy, do_transliterate=translit
    )
    assert len(checked.code) == len(texts)
    for reason, out in zip(checked.reasons(), checked.text.to_pylist(), strict=True):
        if reason is None:
            assert out is not None and out.strip() and "|" not in out
            assert policy == "split" or len(out) <= 160
