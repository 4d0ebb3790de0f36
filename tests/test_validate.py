"""validate(): one outcome per row, reasons, suppression, failure cases, summary, CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from massiva_frames.errors import InputError
from massiva_frames.faces.cli import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, main
from massiva_frames.prepare.validation import (
    OUTPUT_COLUMNS,
    Reason,
    failure_cases,
    validate,
    validation_summary,
)


@pytest.fixture
def customers() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "telefono": [
                "0414-123.45.67",
                "0212 5551234",
                "+58 424 1234567",
                584161234567.0,
                None,
                "0414 1234567",
                "0426-7654321",
            ],
            "nombre": ["Ana", "Luis", None, "José", "Eva", "Ana", "Pe|dro"],
            "saldo": [1234.5, 10.0, 3.0, float("nan"), 5.0, 1234.5, 7.0],
        },
        index=pd.Index(["c1", "c2", "c3", "c4", "c5", "c6", "c7"], name="cliente"),
    )


TEMPLATE = "Hola {nombre}, su saldo es {saldo:,.2f}"


def test_output_keeps_rows_columns_index_and_adds_the_contract(customers: pd.DataFrame) -> None:
    out = validate(customers, phone="telefono", template=TEMPLATE)
    assert out.index.equals(customers.index)
    assert list(out.columns) == [*customers.columns, *OUTPUT_COLUMNS]
    pd.testing.assert_frame_equal(out[customers.columns], customers)
    assert out["phone"].tolist() == [
        "584141234567",
        pd.NA,
        "584241234567",
        "584161234567",
        pd.NA,
        "584141234567",
        "584267654321",
    ]
    assert out["reason"].tolist() == [
        pd.NA,
        "phone_landline",
        "text_missing_value",
        "text_missing_value",
        "phone_missing",
        "duplicate",
        "text_separator",
    ]
    assert out["state"].tolist() == [
        "ready",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
        "suppressed",
        "invalid",
    ]
    assert out["valid"].tolist() == [True] + [False] * 6
    assert out.loc["c1", "text"] == "Hola Ana, su saldo es 1,234.50"
    assert out.loc["c3", "text"] is pd.NA
    dtypes = {c: str(out[c].dtype) for c in OUTPUT_COLUMNS}
    assert dtypes == {
        "phone": "string",
        "text": "string",
        "valid": "bool",
        "state": "category",
        "reason": "string",
        "encoding": "category",
        "segments": "Int64",
        "parts": "Int64",
    }
    assert out.loc["c1", "encoding"] == "GSM-7" and out.loc["c1", "segments"] == 1
    assert out.loc["c3", "segments"] is pd.NA


def test_exactly_one_outcome_per_row(customers: pd.DataFrame) -> None:
    out = validate(customers, phone="telefono", template=TEMPLATE)
    ready = out["state"] == "ready"
    assert (out["reason"].isna() == ready).all()
    assert (out["valid"] == ready).all()
    for reason, state in zip(out["reason"].dropna(), out.loc[~ready, "state"], strict=True):
        assert Reason(reason).state == state


def test_phone_and_text_columns_named_like_the_output_move_aside() -> None:
    df = pd.DataFrame({"phone": ["0414 1234567"], "text": ["  Hola  "]})
    out = validate(df, text="text")
    assert out["phone_input"].tolist() == ["0414 1234567"]
    assert out["text_input"].tolist() == ["  Hola  "]
    assert out["phone"].tolist() == ["584141234567"] and out["text"].tolist() == ["Hola"]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda df: validate([1, 2], text="msg"), "DataFrame"),  # type: ignore[arg-type]
        (lambda df: validate(df.iloc[:0], phone="tel", text="msg"), "empty"),
        (lambda df: validate(df, phone="telefono", text="msg"), "telefono"),
        (lambda df: validate(df, phone="tel", text="mensaje"), "mensaje"),
        (lambda df: validate(df, phone="tel"), "exactly one"),
        (lambda df: validate(df, phone="tel", text="msg", template="x"), "exactly one"),
        (lambda df: validate(df, phone="tel", template="Hola {apellido}"), "apellido"),
        (lambda df: validate(df, phone="tel", text="msg", dedupe="text"), "dedupe"),
        (lambda df: validate(df, phone="tel", text="msg", long_text="cut"), "long_text"),
        (lambda df: validate(df, phone="tel", text="msg", country="xx"), "country"),
        (lambda df: validate(df, phone="tel", text="msg", operators=["4"]), "operators"),
        (lambda df: validate(df, phone="tel", text="msg", suppress=42), "suppress"),
        (
            lambda df: validate(df, phone="tel", text="msg", suppress="/nonexistent.parquet"),
            "suppress",
        ),
        (
            lambda df: validate(
                df, phone="tel", text="msg", suppress=pd.DataFrame({"a": [1], "b": [2]})
            ),
            "phone",
        ),
        (lambda df: validate(df.assign(state=1), phone="tel", text="msg"), "state"),
        (lambda df: validate(df.assign(phone=1), phone="tel", text="msg"), "phone"),
    ],
)
def test_wrong_arguments_raise_naming_them(call: Any, match: str) -> None:
    df = pd.DataFrame({"tel": ["04141234567"], "msg": ["Hola"]})
    with pytest.raises(InputError, match=match):
        call(df)


def test_duplicate_column_names_are_refused() -> None:
    df = pd.DataFrame([["04141234567", "a", "b"]], columns=["tel", "msg", "msg"])
    with pytest.raises(InputError, match="not unique"):
        validate(df, phone="tel", text="msg")


def test_dedupe_modes() -> None:
    df = pd.DataFrame(
        {
            "tel": ["04141234567", "0414-1234567", "+584141234567", "04241234567"],
            "msg": ["Hola", "Chao", "Hola", "Hola"],
        }
    )
    both = validate(df, phone="tel", text="msg")
    assert both["reason"].tolist() == [pd.NA, pd.NA, "duplicate", pd.NA]
    phone_only = validate(df, phone="tel", text="msg", dedupe="phone")
    assert phone_only["reason"].tolist() == [pd.NA, "duplicate", "duplicate", pd.NA]
    none = validate(df, phone="tel", text="msg", dedupe=None)
    assert none["valid"].all()


def test_an_invalid_row_does_not_make_a_later_one_a_duplicate() -> None:
    df = pd.DataFrame({"tel": ["04141234567", "04141234567"], "msg": ["a|b", "a|b"]})
    assert validate(df, phone="tel", text="msg")["reason"].tolist() == ["text_separator"] * 2
    df = pd.DataFrame({"tel": ["04141234567", "04141234567"], "msg": ["", "Hola"]})
    assert validate(df, phone="tel", text="msg")["reason"].tolist() == ["text_empty", pd.NA]


@pytest.mark.parametrize(
    "kind", ["series", "list", "set", "frame", "single-column-frame", "parquet", "path"]
)
def test_suppression_inputs(kind: str, tmp_path: Path) -> None:
    blocked = ["0424-123.45.67", 584161234567, "+58 426 7654321"]
    suppress: Any
    if kind == "series":
        suppress = pd.Series(blocked, dtype=object)
    elif kind == "list":
        suppress = blocked
    elif kind == "set":
        suppress = {str(b) for b in blocked}
    elif kind == "frame":
        suppress = pd.DataFrame({"phone": [str(b) for b in blocked], "other": 1})
    elif kind == "single-column-frame":
        suppress = pd.DataFrame({"telefono": [str(b) for b in blocked]})
    else:
        path = tmp_path / "optouts.parquet"
        pd.DataFrame({"phone": [str(b) for b in blocked]}).to_parquet(path)
        suppress = str(path) if kind == "parquet" else path
    df = pd.DataFrame(
        {
            "tel": ["04241234567", "04161234567", "04141234567", "0426 765 4321", "02121234567"],
            "msg": ["Hola"] * 5,
        }
    )
    out = validate(df, phone="tel", text="msg", suppress=suppress)
    assert out["reason"].tolist() == [
        "opted_out",
        "opted_out",
        pd.NA,
        "opted_out",
        "phone_landline",
    ]
    assert out["state"].tolist() == ["suppressed", "suppressed", "ready", "suppressed", "invalid"]


def test_opt_out_wins_over_duplicate() -> None:
    df = pd.DataFrame({"tel": ["04141234567", "04141234567"], "msg": ["Hola", "Hola"]})
    out = validate(df, phone="tel", text="msg", suppress=["04141234567"])
    assert out["reason"].tolist() == ["opted_out", "opted_out"]


def test_long_texts_transliteration_and_segments() -> None:
    long = "Estimado cliente, " * 12  # 216 characters
    df = pd.DataFrame({"tel": ["04141234567", "04241234567"], "msg": [long, "Acción única"]})
    assert validate(df, phone="tel", text="msg")["reason"].tolist() == ["text_too_long", pd.NA]
    split = validate(df, phone="tel", text="msg", long_text="split")
    assert split["parts"].tolist() == [2, 1] and split["valid"].all()
    cut = validate(df, phone="tel", text="msg", long_text="truncate")
    assert len(cut.loc[0, "text"]) <= 160 and cut.loc[0, "text"].endswith("...")
    plain = validate(df, phone="tel", text="msg")
    assert plain.loc[1, "encoding"] == "UCS-2"
    gsm = validate(df, phone="tel", text="msg", transliterate=True)
    assert gsm.loc[1, "text"] == "Accion unica" and gsm.loc[1, "encoding"] == "GSM-7"


def test_failure_cases_have_fixed_columns_and_name_the_column(customers: pd.DataFrame) -> None:
    out = validate(customers, phone="telefono", template=TEMPLATE)
    cases = failure_cases(out)
    assert list(cases.columns) == ["index", "column", "reason", "message", "value"]
    by_index = cases.set_index("index")
    assert by_index.loc["c2", "column"] == "telefono"
    assert by_index.loc["c2", "value"] == "0212 5551234"
    assert by_index.loc["c3", "column"] == "nombre"
    assert "nombre" in by_index.loc["c3", "message"]
    assert by_index.loc["c4", "column"] == "saldo" and by_index.loc["c4", "value"] == "nan"
    assert by_index.loc["c5", "reason"] == "phone_missing"
    assert by_index.loc["c6", "reason"] == "duplicate"
    assert by_index.loc["c7", "column"] == "text"
    assert by_index.loc["c7", "value"] == "Hola Pe|dro, su saldo es 7.00"
    assert len(cases) == (out["state"] != "ready").sum()


def test_failure_values_are_short_and_printable() -> None:
    df = pd.DataFrame({"tel": ["x" * 500, "0414\x001234567"], "msg": ["a", "b"]})
    cases = failure_cases(validate(df, phone="tel", text="msg"))
    assert len(cases.loc[0, "value"]) <= 80
    assert "\x00" not in cases.loc[1, "value"]


def test_failure_cases_of_a_clean_frame_is_empty_with_the_columns() -> None:
    out = validate(pd.DataFrame({"tel": ["04141234567"], "msg": ["a"]}), phone="tel", text="msg")
    cases = failure_cases(out)
    assert cases.empty and list(cases.columns) == ["index", "column", "reason", "message", "value"]


def test_failure_cases_without_attrs_still_work(customers: pd.DataFrame) -> None:
    out = validate(customers, phone="telefono", template=TEMPLATE)
    out.attrs.clear()
    cases = failure_cases(out)
    assert set(cases["column"]) <= {"phone", "text"}
    assert len(cases) == 6


def test_summary_counts(customers: pd.DataFrame) -> None:
    summary = validation_summary(validate(customers, phone="telefono", template=TEMPLATE))
    assert list(summary.columns) == ["state", "reason", "message", "rows", "percent"]
    assert summary["rows"].sum() == len(customers)
    assert summary.iloc[0]["state"] == "ready" and summary.iloc[0]["reason"] is pd.NA
    assert summary["state"].tolist() == ["ready"] + ["invalid"] * 4 + ["suppressed"]
    row = summary.set_index("reason").loc["text_missing_value"]
    assert row["rows"] == 2 and row["message"] == Reason.TEXT_MISSING_VALUE.message
    assert abs(summary["percent"].sum() - 100) < 0.1


def test_every_reason_has_a_message() -> None:
    assert all(r.message for r in Reason)
    assert {r.state for r in Reason} == {"invalid", "suppressed"}


# -- properties ----------------------------------------------------------------------

anything = st.one_of(
    st.none(),
    st.just(float("nan")),
    st.just(pd.NA),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.text(min_size=150, max_size=400),
    st.sampled_from(["0414 1234567", "+58 424-123.45.67", "😀", "a|b", "x\ty", "02125551234"]),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(anything, anything, anything), min_size=1, max_size=25),
    st.sampled_from(["text", "template"]),
    st.sampled_from(["error", "truncate", "split"]),
    st.sampled_from(["phone+text", "phone", None]),
    st.booleans(),
)
def test_bad_rows_never_raise(
    rows: list[tuple[Any, Any, Any]], mode: str, policy: str, dedupe: str | None, translit: bool
) -> None:
    df = pd.DataFrame(rows, columns=["tel", "a", "b"], dtype=object)
    options: dict[str, Any] = {"long_text": policy, "dedupe": dedupe, "transliterate": translit}
    if mode == "text":
        out = validate(df, phone="tel", text="a", **options)
    else:
        out = validate(df, phone="tel", template="Hola {a}: {b}", **options)
    assert len(out) == len(df)
    assert (out["reason"].isna() == (out["state"] == "ready")).all()
    assert set(out["reason"].dropna()) <= {r.value for r in Reason}
    ready = out[out["valid"]]
    assert ready["phone"].notna().all() and ready["text"].notna().all()
    assert not ready["text"].str.contains("|", regex=False).any()
    assert not ready["text"].str.fullmatch(r"\s*").any()
    if mode == "template":
        assert not ready["text"].str.contains(r"\bnan\b|<NA>|None", regex=True).any()
    failure_cases(out)
    assert validation_summary(out)["rows"].sum() == len(df)


# -- CLI -------------------------------------------------------------------------------


def _csv(tmp_path: Path, rows: dict[str, list[Any]]) -> Path:
    path = tmp_path / "clientes.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_cli_writes_parquet_and_exits_partial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _csv(
        tmp_path,
        {"tel": ["04141234567", "02125551234"], "nombre": ["Ana", "Luis"], "saldo": [1.5, 2]},
    )
    out = tmp_path / "validated.parquet"
    code = main(["validate", str(src), "--phone", "tel", "--template", TEMPLATE, "--out", str(out)])
    assert code == EXIT_PARTIAL
    printed = capsys.readouterr().out
    assert "phone_landline" in printed and "1 of 2 rows ready" in printed
    written = pd.read_parquet(out)
    assert written["phone"].tolist() == ["584141234567", pd.NA]
    assert written["text"].tolist()[0] == "Hola Ana, su saldo es 1.50"


def test_cli_keeps_leading_zeros_and_exits_ok(tmp_path: Path) -> None:
    src = _csv(tmp_path, {"tel": ["04141234567", "04241234567"], "msg": ["Hola", "Chao"]})
    out = tmp_path / "validated.csv"
    assert main(["validate", str(src), "--phone", "tel", "--text", "msg", "--out", str(out)]) == (
        EXIT_OK
    )
    assert pd.read_csv(out, dtype=str)["tel"].tolist() == ["04141234567", "04241234567"]


def test_cli_reads_parquet_and_suppression_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.parquet"
    pd.DataFrame({"tel": ["04141234567", "04241234567"], "msg": ["a", "b"]}).to_parquet(src)
    optouts = tmp_path / "optouts.csv"
    pd.DataFrame({"phone": ["0424-1234567"]}).to_csv(optouts, index=False)
    args = ["validate", str(src), "--phone", "tel", "--text", "msg", "--suppress", str(optouts)]
    assert main(args) == EXIT_OK  # suppressed by design: not a row to look at
    assert "opted_out" in capsys.readouterr().out
    assert main([*args[:6], "--dedupe", "none"]) == EXIT_OK


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--phone", "nope", "--text", "msg"], EXIT_FAILURE, "nope"),
        (["--phone", "tel", "--template", "{x}"], EXIT_FAILURE, "x"),
        (["--phone", "tel", "--text", "msg", "--out", "x.json"], EXIT_USAGE, "--out"),
    ],
)
def test_cli_errors_are_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    message: str,
) -> None:
    src = _csv(tmp_path, {"tel": ["04141234567"], "msg": ["Hola"]})
    assert main(["validate", str(src), *args]) == code
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_missing_file_and_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "none.csv"), "--phone", "t", "--text", "m"]) == (
        EXIT_FAILURE
    )
    assert main(["validate", str(tmp_path / "in.xls"), "--phone", "t", "--text", "m"]) == (
        EXIT_USAGE
    )
    with pytest.raises(SystemExit) as exc:
        main(["validate", "x.csv", "--phone", "t"])  # neither --text nor --template
    assert exc.value.code == EXIT_USAGE
    capsys.readouterr()


def test_big_frame_validates_vectorised() -> None:
    n = 50_000
    rng = np.random.default_rng(0)
    ops = np.array(["412", "414", "416", "424", "426"])
    tel = [
        f"0{o}-{s:07d}"
        for o, s in zip(ops[rng.integers(0, 5, n)], rng.integers(0, 10**7, n), strict=True)
    ]
    df = pd.DataFrame(
        {"tel": tel, "nombre": rng.choice(["Ana", "Luis", None], n), "saldo": rng.random(n) * 1e4}
    )
    out = validate(df, phone="tel", template=TEMPLATE, dedupe="phone")
    missing = df["nombre"].isna().to_numpy()
    assert (out["reason"].to_numpy(dtype=object)[missing] == "text_missing_value").all()
    ready = out[out["valid"]]
    expected = [
        f"Hola {a}, su saldo es {b:,.2f}"
        for a, b in zip(ready["nombre"], ready["saldo"], strict=True)
    ]
    assert ready["text"].tolist() == expected


def test_very_long_texts_and_emoji_are_reasons_not_errors() -> None:
    df = pd.DataFrame(
        {
            "tel": ["04141234567", "04241234567", "04161234567"],
            "msg": ["😀" * 100_000, "a" * 1_000_000, "😀 hola"],
        }
    )
    out = validate(df, phone="tel", text="msg")
    assert out["reason"].tolist() == ["text_too_long", "text_too_long", pd.NA]
    split = validate(df, phone="tel", text="msg", long_text="split")
    assert split["parts"].tolist()[1] == 6250 and split["valid"].all()
    assert split.loc[2, "encoding"] == "UCS-2" and split.loc[2, "segments"] == 1
