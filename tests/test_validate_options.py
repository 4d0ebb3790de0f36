"""validate()'s options instead of surprises: blank strings, plain template fields, cells
that are not one value, numbers abroad, repeated index labels (and the faces that forward
them: send, the accessor, the send form)."""

from __future__ import annotations

import dataclasses
import decimal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import massiva_frames.faces.accessor  # noqa: F401 - registers df.massiva
from massiva_frames.errors import InputError
from massiva_frames.prepare.reasons import Reason
from massiva_frames.prepare.validation import PARALLEL_ROWS, failure_cases, validate
from massiva_frames.sandbox import Sandbox, sandbox
from massiva_frames.sending.campaign import send
from massiva_frames.wire.client import MassivaClient

PHONES = ["04141234567", "04241234567", "04161234567", "04261234567"]


def customers(**columns: list[Any]) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    return pd.DataFrame({"tel": PHONES[:n], **columns})


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with sandbox(credits=100, callback_delay=60) as server:
        yield server


# -- blank strings ---------------------------------------------------------------------


def test_a_blank_value_is_missing_by_default_and_named_in_failure_cases() -> None:
    df = customers(nombre=["Ana", "Luis", "Eva", "Rosa"], nota=["", "   ", "\t", "Gracias"])
    out = validate(df, phone="tel", template="Hola {nombre}. {nota}")
    assert out["reason"].tolist() == ["text_missing_value"] * 3 + [pd.NA]
    assert out["text"].tolist() == [pd.NA] * 3 + ["Hola Rosa. Gracias"]
    cases = failure_cases(out)
    assert cases["column"].tolist() == ["nota"] * 3
    # the message says what a blank is taken for and how to keep it
    assert all("blank='keep'" in m and "'nota'" in m for m in cases["message"])


@pytest.mark.parametrize("blank", ["keep", {"nota": "keep"}, {"nota": "keep", "nombre": "missing"}])
def test_blank_keep_renders_blank_values_as_empty(blank: Any) -> None:
    df = customers(nombre=["Ana", "Luis", "", "Rosa"], nota=["", "   ", "x", "Gracias"])
    out = validate(df, phone="tel", template="Hola {nombre}. {nota}", blank=blank)
    # a kept blank leaves no space at the end of the text
    assert out.loc[[0, 1, 3], "text"].tolist() == ["Hola Ana.", "Hola Luis.", "Hola Rosa. Gracias"]
    assert out.loc[[0, 1, 3], "state"].tolist() == ["ready"] * 3
    assert out.loc[0, "segments"] == 1
    if blank == "keep":
        assert out.loc[2, "text"] == "Hola . x"  # every column keeps its blanks
    else:
        assert out.loc[2, "reason"] == "text_missing_value"  # nombre still may not be blank
        assert failure_cases(out)["column"].tolist() == ["nombre"]


def test_blank_keep_never_makes_nan_or_none_a_value() -> None:
    df = pd.DataFrame({"tel": PHONES, "nota": pd.Series([None, np.nan, "nan", ""], dtype=object)})
    out = validate(df, phone="tel", template="Hola. {nota}", blank="keep")
    assert out["reason"].tolist() == ["text_missing_value"] * 3 + [pd.NA]
    assert out["text"].iloc[3] == "Hola."


def test_a_template_of_blank_values_only_is_an_empty_text() -> None:
    df = customers(nota=["", "hola"])
    out = validate(df, phone="tel", template="{nota}", blank="keep")
    assert out["reason"].tolist() == ["text_empty", pd.NA]


def test_a_blank_in_a_formatted_column_is_missing_not_a_format_error() -> None:
    df = customers(saldo=["", "12.5", "abc"])
    out = validate(df, phone="tel", template="Saldo {saldo:,.2f}")
    assert out["reason"].tolist() == ["text_missing_value", pd.NA, "text_format_error"]
    kept = validate(df, phone="tel", template="Saldo {saldo:,.2f}", blank="keep")
    assert kept["text"].tolist()[:2] == ["Saldo", "Saldo 12.50"]


def test_blank_does_not_make_an_empty_text_column_sendable() -> None:
    df = customers(msg=["", "  ", "Hola"])
    for blank in ("missing", "keep"):
        out = validate(df, phone="tel", text="msg", blank=blank)
        assert out["reason"].tolist() == ["text_empty", "text_empty", pd.NA]


@pytest.mark.parametrize(
    ("blank", "match"),
    [
        ("empty", "blank: expected 'missing' or 'keep', got 'empty'"),
        (True, "blank: expected 'missing', 'keep' or a dict"),
        ({"notas": "keep"}, "blank: no column 'notas'"),
        ({"nota": "yes"}, "blank: column 'nota': expected 'missing' or 'keep', got 'yes'"),
    ],
)
def test_a_bad_blank_option_names_the_problem(blank: Any, match: str) -> None:
    df = customers(nota=["", "x"])
    with pytest.raises(InputError, match=match.replace("(", r"\(").replace(")", r"\)")):
        validate(df, phone="tel", template="Hola {nota}", blank=blank)
    with pytest.raises(InputError, match="blank"):
        validate(df, phone="tel", text="nota", blank=blank)


def test_send_the_accessor_and_the_form_forward_blank(sb: Sandbox, tmp_path: Path) -> None:
    df = customers(nombre=["Ana", "Luis"], nota=["", "Gracias"])
    options: dict[str, Any] = {"phone": "tel", "template": "Hola {nombre}. {nota}"}
    with MassivaClient(sb.usuario, sb.clave, sb.base_url) as client:
        strict = send(df, client=client, dry_run=True, progress=False, **options)
        assert strict["reason"].tolist() == ["text_missing_value", "dry_run"]
        results = df.massiva.send(
            client=client, journal=tmp_path / "j.db", progress=False, blank="keep", **options
        )
        assert results["state"].tolist() == ["accepted", "accepted"]
        assert results["text"].tolist() == ["Hola Ana.", "Hola Luis. Gracias"]
        assert sorted(sb.messages()["text"]) == ["Hola Ana.", "Hola Luis. Gracias"]
        checked = df.massiva.validate(blank={"nota": "keep"}, **options)
        assert checked["valid"].all()
        planned = df.massiva.plan(blank="keep", max_phones=1, **options)
        assert planned["batch"].tolist() == [0, 1]

        from massiva_frames.faces.widgets import SendWidget

        form = SendWidget(df, client, blank="keep", **options)
        assert form.validated is not None and form.validated["valid"].all()


# -- template fields -------------------------------------------------------------------


class Counted:
    """A cell that counts how often it is formatted."""

    calls = 0

    def __format__(self, spec: str) -> str:
        Counted.calls += 1
        return "x"


@pytest.mark.parametrize(
    ("template", "field", "rule"),
    [
        ("Hola {nombre.upper}", "{nombre.upper}", "attribute access is not allowed"),
        ("Hola {nombre.__class__}", "{nombre.__class__}", "attribute access"),
        ("{x[0]}", "{x[0]}", "indexing is not allowed"),
        ("{nombre!r}", "{nombre!r}", "conversions ('!r') are not allowed"),
        ("{nombre!s:>4}", "{nombre!s:>4}", "conversions ('!s')"),
        ("{nombre:{x}}", "{nombre:{x}}", "nested format fields are not allowed"),
        ("Hola {}", "{}", "positional fields are not supported"),
        ("Hola {0}", "{0}", "positional fields are not supported"),
    ],
)
def test_template_fields_are_plain_names_checked_before_any_row_is_rendered(
    template: str, field: str, rule: str
) -> None:
    n = PARALLEL_ROWS  # large enough for the two-thread path
    df = pd.DataFrame(
        {
            "tel": ["04141234567"] * n,
            "nombre": [Counted()] * n,
            "x": [[1, 2]] * n,
            0: ["cero"] * n,
        }
    )
    Counted.calls = 0
    with pytest.raises(InputError) as info:
        validate(df, phone="tel", template="{nombre} " + template)
    message = str(info.value)
    assert message.startswith(f"template field {field}: {rule}".split(" (")[0])
    assert "a template field is a column name with an optional format spec" in message
    assert Counted.calls == 0  # not one row was rendered


def test_plain_fields_with_format_specs_still_render() -> None:
    df = customers(
        nombre=["Ana", "Luis"],
        saldo=[1234.5, 2.0],
        vence=pd.to_datetime(["2024-03-05", "2024-12-31"]),
        **{"saldo total": [1, 2]},
    )
    out = validate(
        df, phone="tel", template="{nombre:>4} {saldo:,.2f} {vence:%d/%m/%Y} {saldo total:03d}"
    )
    assert out["text"].tolist() == ["Ana 1,234.50 05/03/2024 001", "Luis 2.00 31/12/2024 002"]


# -- cells that are not one value ------------------------------------------------------


@dataclasses.dataclass
class Point:
    x: int


class Bare:
    """An object with no text of its own: its str() is '<... object at 0x...>'."""


NOT_SCALAR = [
    [1, 2],
    (1, 2),
    {"a": 1},
    {1, 2},
    frozenset({3}),
    np.array([1, 2]),
    pd.Series([1]),
    pd.DataFrame({"a": [1, 2]}),
    b"bytes",
    np.bytes_(b"x"),
    Point(1),
    Bare(),
    range(3),
]


@pytest.mark.parametrize("cell", NOT_SCALAR, ids=[type(c).__name__ for c in NOT_SCALAR])
def test_a_cell_that_is_not_one_value_is_a_row_reason_never_its_repr(cell: Any) -> None:
    values = pd.Series([cell, "Ana"], dtype=object)
    df = pd.DataFrame({"tel": PHONES[:2], "nombre": values, "msg": values})
    for options in ({"template": "Hola {nombre}"}, {"template": "{nombre:>3}"}, {"text": "msg"}):
        out = validate(df, phone="tel", **options)
        assert out["reason"].tolist() == ["text_not_scalar", pd.NA], options
        assert out["text"].iloc[0] is pd.NA
        cases = failure_cases(out)
        assert cases["reason"].tolist() == ["text_not_scalar"]
        assert cases["column"].tolist() == ["nombre" if "template" in options else "msg"]
        assert "\n" not in cases["value"].iloc[0] and len(cases["value"].iloc[0]) <= 80
    assert "not a single value" in Reason.TEXT_NOT_SCALAR.message


def test_values_with_a_text_of_their_own_still_render() -> None:
    key = uuid.UUID(int=1)
    df = pd.DataFrame(
        {
            "tel": PHONES,
            "v": pd.Series(
                [key, decimal.Decimal("1.50"), pd.Timestamp("2024-01-02"), np.int64(7)],
                dtype=object,
            ),
        }
    )
    out = validate(df, phone="tel", template="v={v}")
    assert out["text"].tolist() == [f"v={key}", "v=1.50", "v=2024-01-02 00:00:00", "v=7"]


def test_a_missing_value_is_told_before_a_cell_that_is_not_one_value() -> None:
    df = pd.DataFrame(
        {"tel": PHONES[:2], "a": pd.Series([[1], [2]], dtype=object), "b": [None, "x"]}
    )
    out = validate(df, phone="tel", template="{a} {b}")
    assert out["reason"].tolist() == ["text_missing_value", "text_not_scalar"]
    assert failure_cases(out)["column"].tolist() == ["b", "a"]


def test_tuples_as_categories_are_not_one_value() -> None:
    df = pd.DataFrame({"tel": PHONES[:2], "c": pd.Series([(1, 2), "ok"], dtype="category")})
    out = validate(df, phone="tel", template="{c}")
    assert out["reason"].tolist() == ["text_not_scalar", pd.NA]


# -- numbers abroad --------------------------------------------------------------------


def test_numbers_abroad_are_refused_by_default_with_a_reason_that_says_how_to_opt_in() -> None:
    df = pd.DataFrame(
        {
            "tel": ["+1 305 555 0123", "+57 300 1234567", "+49 176 12345678", "0414 1234567"],
            "msg": ["Hola"] * 4,
        }
    )
    out = validate(df, phone="tel", text="msg")
    assert out["reason"].tolist() == ["phone_international"] * 3 + [pd.NA]
    assert out["state"].tolist() == ["invalid"] * 3 + ["ready"]
    cases = failure_cases(out)
    assert cases["column"].tolist() == ["tel"] * 3
    assert "allow_international=True" in cases["message"].iloc[0]
    allowed = validate(df, phone="tel", text="msg", allow_international=True)
    assert allowed["phone"].tolist() == ["13055550123", "573001234567", pd.NA, "584141234567"]
    assert allowed["reason"].tolist() == [pd.NA, pd.NA, "phone_too_long", pd.NA]


def test_an_opt_out_abroad_is_suppressed_when_sending_abroad() -> None:
    df = pd.DataFrame({"tel": ["+1 305 555 0123", "0414 1234567"], "msg": ["Hola"] * 2})
    out = validate(
        df, phone="tel", text="msg", allow_international=True, suppress=["+1 (305) 555-0123"]
    )
    assert out["reason"].tolist() == ["opted_out", pd.NA]


# -- repeated index labels -------------------------------------------------------------


def test_repeated_index_labels_are_refused_naming_a_few_and_the_fix() -> None:
    df = pd.DataFrame(
        {"tel": ["04141234567"] * 16, "msg": ["Hola"] * 16},
        index=[0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 8],
    )
    with pytest.raises(InputError) as info:
        validate(df, phone="tel", text="msg")
    message = str(info.value)
    assert "repeats labels (0, 1, 2, 3, 4 and 2 more)" in message
    assert "df.reset_index()" in message and "df.index.is_unique" in message
    with pytest.raises(InputError, match="repeats labels"):
        df.massiva.validate(phone="tel", text="msg")
    with pytest.raises(InputError, match=r"repeats labels \(\('a', 1\)\)"):
        validate(df.iloc[:3].set_axis(pd.MultiIndex.from_tuples([("a", 1)] * 3)), phone="tel",
                 text="msg")  # fmt: skip
    out = validate(df.reset_index(drop=True), phone="tel", text="msg")
    assert out.index.is_unique and len(out) == 16


def test_the_validation_guide_join_keeps_one_row_per_input_row() -> None:
    df = pd.DataFrame({"tel": PHONES, "msg": ["Hola"] * 4}, index=["a", "b", "c", "d"])
    results = send(df, phone="tel", text="msg", dry_run=True, progress=False)
    joined = df.join(results[["state", "reason"]])
    assert len(joined) == 4 and joined.index.equals(df.index)
