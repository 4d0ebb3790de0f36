"""Campaign files as they really come: encodings, separators, Excel, parquet, file lines.

Every file is made here: a cp1252 ``;`` CSV with accents and a non-breaking space (what
a Spanish Excel export writes), workbooks written with openpyxl, broken files.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from massiva_frames.errors import InputError
from massiva_frames.faces.cli import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, main
from massiva_frames.faces.inputs import read_input, read_phone_list

NBSP = "\xa0"
#: a Spanish export: ';', accents, a phone with a non-breaking space, a landline
SPANISH = (
    "telefono;nombre;nota\r\n"
    "0414-1234567;José Peña;Mañana\r\n"
    f"0424{NBSP}1234568;Ángela Núñez;señora\r\n"
    "0212-5551234;Fijo;x\r\n"
    "04161234569;Eva María;\r\n"
)


def spanish_csv(tmp_path: Path, encoding: str = "cp1252", name: str = "clientes.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(SPANISH.encode(encoding))
    return path


def workbook(path: Path, sheets: dict[str, list[list[object]]]) -> Path:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# -- CSV: encodings ------------------------------------------------------------------


def test_cp1252_semicolon_csv_is_detected_and_read_as_text(tmp_path: Path) -> None:
    loaded = read_input(spanish_csv(tmp_path))
    assert (loaded.encoding, loaded.detected, loaded.sep, loaded.sniffed) == (
        "cp1252",
        True,
        ";",
        True,
    )
    frame = loaded.frame
    assert list(frame.columns) == ["telefono", "nombre", "nota"]
    assert frame["nombre"].tolist() == ["José Peña", "Ángela Núñez", "Fijo", "Eva María"]
    assert frame.loc[3, "telefono"] == f"0424{NBSP}1234568"
    assert frame["telefono"].iloc[0] == "0414-1234567"  # text, not a number
    assert frame.index.name == "input_line" and list(frame.index) == [2, 3, 4, 5]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"])
def test_utf8_files_are_read_without_a_note(tmp_path: Path, encoding: str) -> None:
    loaded = read_input(spanish_csv(tmp_path, encoding))
    assert (loaded.encoding, loaded.detected) == ("utf-8", False)
    assert list(loaded.frame.columns)[0] == "telefono"  # the BOM is not in the name
    assert loaded.frame["nombre"].iloc[1] == "Ángela Núñez"


def test_validate_says_which_encoding_it_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = spanish_csv(tmp_path)
    out = tmp_path / "checked.csv"
    argv = ["validate", str(source), "--phone", "telefono", "--template", "Hola {nombre}"]
    assert main([*argv, "--out", str(out)]) == EXIT_PARTIAL  # the landline
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        f"massiva-frames validate: {source} is not UTF-8: read it as cp1252 "
        "(--encoding to choose another)"
    )
    written = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert written["text"].tolist()[:2] == ["Hola José Peña", "Hola Ángela Núñez"]
    assert written["phone"].tolist()[1] == "584241234568"  # the NBSP is a separator
    # failure cases speak in file lines: the landline is on line 4
    listed = captured.out[captured.out.index("failure cases") :].splitlines()
    assert listed[1].split()[:3] == ["line", "column", "reason"]
    assert listed[2].split()[:3] == ["4", "telefono", "phone_landline"]

    # the encoding named: no note, the same rows
    assert main([*argv, "--encoding", "latin-1"]) == EXIT_PARTIAL
    assert capsys.readouterr().err == ""


def test_a_wrong_encoding_is_one_line_with_the_line_and_what_to_try(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = spanish_csv(tmp_path)
    argv = ["validate", str(source), "--phone", "telefono", "--text", "nombre"]
    assert main([*argv, "--encoding", "utf-8"]) == EXIT_FAILURE
    line = one_error(capsys)
    assert line.startswith(f"massiva-frames validate: error: {source}: line 2 is not valid utf-8")
    assert "--encoding" in line and "cp1252" in line
    assert main([*argv, "--encoding", "klingon"]) == EXIT_FAILURE
    assert "no such encoding" in one_error(capsys)


# -- CSV: separators, lines ----------------------------------------------------------


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
def test_the_separator_is_sniffed(tmp_path: Path, sep: str) -> None:
    path = tmp_path / "in.csv"
    rows = [["telefono", "nombre", "nota"], ["04141234567", "Ana", "hola, qué tal; bien"]]
    rows.append(["04241234567", "Luis", ""])
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, delimiter=sep).writerows(rows)
    loaded = read_input(path)
    assert loaded.sep == sep
    assert loaded.frame["telefono"].tolist() == ["04141234567", "04241234567"]
    assert loaded.frame["nota"].iloc[0] == "hola, qué tal; bien"


def test_a_named_separator_wins_and_tab_has_a_name(tmp_path: Path) -> None:
    path = tmp_path / "in.tsv"
    path.write_text("a\tb\n1;2\t3\n", encoding="utf-8")
    loaded = read_input(path, sep="\t")
    assert (loaded.sep, loaded.sniffed) == ("\t", False)
    assert loaded.frame.to_dict("records") == [{"a": "1;2", "b": "3"}]
    assert main(["validate", str(path), "--phone", "a", "--text", "b", "--sep", "tab"]) == (
        EXIT_PARTIAL
    )
    with pytest.raises(SystemExit) as info:
        main(["validate", str(path), "--phone", "a", "--text", "b", "--sep", ";;"])
    assert info.value.code == EXIT_USAGE


def test_a_row_with_too_many_fields_names_its_line_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "in.csv"
    path.write_text("telefono,nombre\n04141234567,Ana\n04241234567,Pérez, Luis\n", encoding="utf-8")
    assert main(["validate", str(path), "--phone", "telefono", "--text", "nombre"]) == 1
    line = one_error(capsys)
    assert f"{path}: line 3 has 3 fields where the header has 2" in line
    assert "quoting the fields that contain ','" in line


def test_a_misread_separator_suggests_the_right_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = spanish_csv(tmp_path)
    argv = ["validate", str(source), "--phone", "telefono", "--text", "nombre", "--sep", ","]
    assert main([*argv, "--encoding", "cp1252"]) == EXIT_FAILURE
    line = one_error(capsys)
    assert "--phone 'telefono': no such column" in line and line.endswith("try --sep ';'")
    # a first row with one field too many would shift every value: refused, by line
    shifted = tmp_path / "shifted.csv"
    shifted.write_text("telefono;nombre\n0414;1234567;Ana\n0424;1234567;Luis\n")
    with pytest.raises(InputError, match=r"line 2 has 3 fields where the header has 2"):
        read_input(shifted)


def test_lines_count_quoted_newlines_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(
        'telefono,nota\n04141234567,"dos\nlíneas"\n\n04241234567,x\n   \n04161234567,"a ""b"""\n',
        encoding="utf-8",
    )
    frame = read_input(path).frame
    assert list(frame.index) == [2, 5, 7]
    assert frame["nota"].tolist() == ["dos\nlíneas", "x", 'a "b"']


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"\n\n", "the file is empty"),
        (b"PK\x03\x04rest of a zip", "this is an Excel workbook, not text: name it .xlsx"),
        (b"PAR1....", "this is a parquet file"),
    ],
)
def test_files_that_are_not_csv(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_input(path)


def test_unknown_suffixes_and_missing_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(tmp_path / "old.xls"), "--phone", "t", "--text", "m"]) == (
        EXIT_USAGE
    )
    assert "save it as .xlsx or CSV" in one_error(capsys)
    assert main(["validate", str(tmp_path / "no.csv"), "--phone", "t", "--text", "m"]) == (
        EXIT_FAILURE
    )
    assert one_error(capsys).endswith("no.csv: no such file")
    assert main(["validate", str(tmp_path), "--phone", "t", "--text", "m"]) == EXIT_USAGE
    capsys.readouterr()


# -- Excel -----------------------------------------------------------------------------


def test_xlsx_rows_are_text_labelled_by_sheet_row(tmp_path: Path) -> None:
    path = workbook(
        tmp_path / "clientes.xlsx",
        {
            "Resumen": [["nada"]],
            "Clientes": [
                ["telefono", "nombre", "saldo"],
                ["04141234567", "José", 1234.5],
                [None, None, None],  # a blank row in the middle keeps its row number
                [4241234567, "Ñandú", 3],
            ],
        },
    )
    frame = read_input(path, sheet="Clientes").frame
    assert list(frame.index) == [2, 3, 4]
    assert frame.loc[2, "telefono"] == "04141234567"  # a text cell keeps its zero
    assert frame.loc[4, "telefono"] == "4241234567"
    assert frame.loc[2, "saldo"] == "1234.5"
    assert read_input(path, sheet="1").frame.equals(frame)
    assert list(read_input(path).frame.columns) == ["nada"]  # the first sheet by default
    with pytest.raises(InputError, match=r"no sheet 'Hoja1'; its sheets are 'Resumen', 'Clientes'"):
        read_input(path, sheet="Hoja1")


def test_validate_an_xlsx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = workbook(
        tmp_path / "c.xlsx",
        {"Hoja1": [["tel", "nombre", "saldo"], ["04141234567", "Ana", 1.5], ["0212555", "B", 2]]},
    )
    argv = ["validate", str(path), "--phone", "tel", "--template", "Hola {nombre}: {saldo:,.2f}"]
    assert main(argv) == EXIT_PARTIAL
    out = capsys.readouterr().out
    cases = out[out.index("failure cases") :].splitlines()
    assert cases[2].split()[:2] == ["3", "tel"]  # sheet row 3
    assert main([*argv, "--sheet", "Hoja2"]) == EXIT_FAILURE
    assert "its sheets are 'Hoja1'" in one_error(capsys)


def test_a_damaged_xlsx_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a workbook")
    assert main(["validate", str(path), "--phone", "t", "--text", "m"]) == EXIT_FAILURE
    line = one_error(capsys)
    assert "cannot read it as an .xlsx workbook" in line and "save it again" in line


# -- parquet, opt-out lists --------------------------------------------------------------


def test_parquet_lines_are_positions_and_its_own_index_becomes_a_column(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    frame = pd.DataFrame({"tel": ["04141234567", "04241234567"]}, index=["c-1", "c-2"])
    frame.rename_axis("cliente").to_parquet(path)
    loaded = read_input(path).frame
    assert list(loaded.index) == [1, 2] and loaded.index.name == "input_line"
    assert loaded["cliente"].tolist() == ["c-1", "c-2"]
    pd.DataFrame({"tel": ["x"]}).to_parquet(path)
    assert list(read_input(path).frame.columns) == ["tel"]  # a plain RangeIndex is dropped
    path.write_bytes(b"PAR1 broken")
    with pytest.raises(InputError, match="cannot read it as parquet"):
        read_input(path)


def test_opt_out_lists_in_any_format(tmp_path: Path) -> None:
    csv_path = tmp_path / "bajas.csv"
    csv_path.write_bytes("teléfono\n0414 123 4567\n".encode("cp1252"))
    assert read_phone_list(csv_path).tolist() == ["0414 123 4567"]  # the first column
    xlsx = workbook(tmp_path / "bajas.xlsx", {"x": [["nombre", "phone"], ["Ana", "04141234567"]]})
    assert read_phone_list(xlsx).tolist() == ["04141234567"]


def test_help_lists_the_input_options_and_the_exit_codes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "massiva_frames.faces.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "exit codes (every command):" in done.stdout
    for code in ("0  done", "3  done, but rows need a look", "1  error", "2  usage"):
        assert code in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "massiva_frames.faces.cli", "send", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for option in ("--encoding", "--sep", "--sheet", "--keep", "--blank", "--allow-international"):
        assert option in done.stdout
    assert "exit codes: 0 done, 3" in done.stdout and "massiva-frames --help" in done.stdout


def test_parsing_the_command_line_imports_no_reader() -> None:
    """``--help`` loads no file reader, HTTP client or plotting library beyond what
    ``import massiva_frames`` loads (pandas, for the ``df.massiva`` accessor)."""
    code = (
        "import sys\n"
        "import massiva_frames\n"
        "before = set(sys.modules)\n"
        "from massiva_frames.faces.cli import build_parser\n"
        "build_parser()\n"
        "heavy = {'requests', 'pyarrow', 'openpyxl', 'charset_normalizer', 'matplotlib',"
        " 'lxml', 'ipywidgets', 'pandas', 'numpy'}\n"
        "print(sorted(heavy & (set(sys.modules) - before)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_console_script_starts_without_pandas(tmp_path: Path) -> None:
    """The console script's entry point (``massiva_frames_cli``) answers ``--help`` without
    pandas, numpy, pyarrow or requests, and its commands still import what they need."""
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["massiva-frames"] == "massiva_frames_cli:main"
    heavy = "('pandas', 'numpy', 'pyarrow', 'requests', 'phonenumbers')"
    code = (
        "import sys, runpy\n"
        "try:\n"
        "    runpy.run_module('massiva_frames_cli', run_name='__main__', alter_sys=True)\n"
        "finally:\n"
        f"    print('loaded', [m for m in {heavy} if m in sys.modules], file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "exit codes (every command):" in done.stdout
    assert "loaded []" in done.stderr
    path = tmp_path / "c.csv"
    path.write_text("tel,nombre\n0414 1234567,Ana\n0212 5551234,Luis\n", encoding="utf-8")
    argv = ["validate", str(path), "--phone", "tel", "--template", "Hola {nombre}"]
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == EXIT_PARTIAL, done.stderr
    assert "1 of 2 rows ready to send" in done.stdout
    assert "'pandas'" in done.stderr and "'requests'" not in done.stderr


def test_the_package_registers_the_accessor_after_the_entry_point() -> None:
    """Loaded after the entry point, ``massiva_frames`` leaves pandas out; with pandas
    already imported it still registers ``df.massiva``."""
    code = (
        "import sys, massiva_frames_cli, massiva_frames\n"
        "print('pandas' in sys.modules)\n"
        "import pandas as pd\n"
        "import importlib; importlib.reload(massiva_frames)\n"
        "print(hasattr(pd.DataFrame({'t': []}), 'massiva'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["False", "True"]


def test_every_sheet_cell_type_becomes_text(tmp_path: Path) -> None:
    import datetime as dt

    path = workbook(
        tmp_path / "tipos.xlsx",
        {"s": [["tel", "fecha", "ok"], [4141234567.0, dt.datetime(2024, 5, 1, 9, 30), True]]},
    )
    row = read_input(path).frame.iloc[0]
    assert row["tel"] == "4141234567"
    assert row["fecha"].startswith("2024-05-01") and row["ok"] == "True"


def test_a_large_file_is_detected_from_a_sample(tmp_path: Path) -> None:
    """The detector reads the head and the first bytes that are not UTF-8."""
    rows = [f"0414{i:07d};Cliente {i}" for i in range(20_000)]  # ~470 KB of ASCII
    rows.insert(15_000, "04161234567;José Peña")
    path = tmp_path / "big.csv"
    path.write_bytes(("telefono;nombre\n" + "\n".join(rows) + "\n").encode("cp1252"))
    loaded = read_input(path)
    assert (loaded.encoding, loaded.detected, loaded.sep) == ("cp1252", True, ";")
    assert loaded.frame.loc[15_002, "nombre"] == "José Peña"
    assert loaded.frame.index[-1] == 20_002


def test_quoted_rows_on_lines_of_their_own_skip_the_walk(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('tel,nota\r\n"0414","a, b"\r\n\r\n"0424","c"\r\n', encoding="utf-8")
    frame = read_input(path).frame
    assert list(frame.index) == [2, 4] and frame["nota"].tolist() == ["a, b", "c"]
    path.write_text('\n\ntel,nota\n0414,"x\ny"\n', encoding="utf-8")  # blank lines first
    assert list(read_input(path).frame.index) == [4]


def test_validation_flags_are_passed_on_only_when_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from massiva_frames.faces.commands.validate import add_validation_flags, validation_options

    parser = argparse.ArgumentParser()
    add_validation_flags(parser)
    assert validation_options(parser.parse_args([])) == {}
    assert validation_options(parser.parse_args(["--blank", "keep"])) == {"blank": "keep"}
    assert validation_options(parser.parse_args(["--allow-international"])) == {
        "allow_international": True
    }
    with pytest.raises(SystemExit):
        parser.parse_args(["--allow-international", "--no-international"])
    capsys.readouterr()

    path = tmp_path / "in.csv"
    path.write_text("tel,msg\n+1 305 555 0123,Hola\n")
    argv = ["validate", str(path), "--phone", "tel", "--text", "msg"]
    assert main([*argv, "--allow-international"]) == EXIT_OK
    assert main([*argv, "--no-international"]) == EXIT_PARTIAL
    assert "phone_" in capsys.readouterr().out
