"""Campaign files as the command line reads them: CSV as it really comes, Excel, parquet.

One reader for every command that takes a file of rows (``validate``, ``send``, and the
opt-out list of ``--suppress``):

- **CSV** (``.csv``, ``.txt``, ``.tsv``): UTF-8 unless ``--encoding`` says otherwise; a
  file that is not valid UTF-8 is decoded with the encoding ``charset_normalizer``
  detects (Windows-1252 when that reading is as plausible as the detector's first
  choice: it is what Spanish Excel writes, and the detector cannot tell it from
  Central European code pages on short files). The separator is ``--sep``, else sniffed
  over the first lines among ``,`` ``;`` tab and ``|``.
- **Excel** (``.xlsx``, ``.xlsm``) through openpyxl: ``--sheet`` NAME or 0-based
  position (default: the first sheet); the header is the sheet's first row.
- **parquet** (``.parquet``, ``.pq``) as it is.

CSV and Excel cells are read as text, so ``04141234567`` keeps its zero (templates still
format numeric text with numeric specs such as ``{saldo:,.2f}``). Every row is labelled
with its **line**: the CSV line where the row starts (the header is line 1, so the first
row is line 2; quoted fields that span lines and skipped blank lines are accounted for),
the sheet row for Excel (header row 1, first row 2), and the row's position counting
from 1 for parquet, which has no header line (an index of the file's own, such as
customer ids, becomes columns named after its levels, ``index`` when unnamed). That label
is the frame's index, named ``input_line`` (not ``line``: that is the provider's
dispatching line once delivery is attached), so results and failure reports speak in
lines of the file.

A file that cannot be read raises :class:`~massiva_frames.errors.InputError` with one line
that names the file, the line when known, and what to try.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CSV_SUFFIXES",
    "EXCEL_SUFFIXES",
    "INPUT_SUFFIXES",
    "LINE",
    "PARQUET_SUFFIXES",
    "LoadedFile",
    "add_input_options",
    "input_problem",
    "note_input",
    "parse_sep",
    "read_input",
    "read_phone_list",
    "require_columns",
]

CSV_SUFFIXES = (".csv", ".txt", ".tsv")
EXCEL_SUFFIXES = (".xlsx", ".xlsm")
PARQUET_SUFFIXES = (".parquet", ".pq")
INPUT_SUFFIXES = CSV_SUFFIXES + EXCEL_SUFFIXES + PARQUET_SUFFIXES
#: the name of the rows' file line (the index of what is read, a column of what is written)
LINE = "input_line"

#: separators the sniffer chooses from, in order of preference on a tie
SEPARATORS = (",", ";", "\t", "|")
_SEP_NAMES = {",": "','", ";": "';'", "\t": "'\\t'", "|": "'|'"}
#: how much of the file the separator is sniffed from
_SNIFF_CHARS = 8 * 1024
#: how much of a file that is not UTF-8 the encoding is detected from
_DETECT_BYTES = 256 * 1024
_PREFERRED_8BIT = "cp1252"


@dataclass(frozen=True)
class LoadedFile:
    """A campaign file as read: the rows (index ``input_line``) and how they were read.

    Attributes
    ----------
    frame : DataFrame
        The rows, every CSV/Excel cell as text, indexed by ``input_line``.
    path : Path
        The file.
    encoding : str or None
        The encoding a CSV was decoded with (None for Excel and parquet).
    detected : bool
        True when the file was not UTF-8 and ``encoding`` was detected.
    sep : str or None
        The CSV separator (None for Excel and parquet).
    sniffed : bool
        True when ``sep`` was sniffed rather than given.
    """

    frame: pd.DataFrame
    path: Path
    encoding: str | None = None
    detected: bool = False
    sep: str | None = None
    sniffed: bool = False


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--encoding``, ``--sep`` and ``--sheet`` to a command that reads a file."""
    parser.add_argument(
        "--encoding",
        metavar="NAME",
        help="encoding of a CSV input, e.g. cp1252 or latin-1 (default: UTF-8; a file that "
        "is not UTF-8 is detected, and the encoding used is shown)",
    )
    parser.add_argument(
        "--sep",
        metavar="CHAR",
        type=parse_sep,
        help="CSV separator: ',' ';' '|' or 'tab' (default: sniffed from the first lines)",
    )
    parser.add_argument(
        "--sheet",
        metavar="NAME|INDEX",
        help="sheet of an .xlsx input: its name or its 0-based position (default: the first)",
    )


def note_input(command: str, loaded: LoadedFile) -> None:
    """Say on stderr how a file that is not UTF-8 was decoded."""
    import sys

    if loaded.detected:
        print(
            f"massiva-frames {command}: {loaded.path} is not UTF-8: read it as "
            f"{loaded.encoding} (--encoding to choose another)",
            file=sys.stderr,
            flush=True,
        )


def parse_sep(text: str) -> str:
    """``--sep``: one character; ``tab`` or ``\\t`` for a tab."""
    value = {"tab": "\t", "\\t": "\t", "TAB": "\t"}.get(text, text)
    if len(value) != 1 or value in '\r\n"':
        raise argparse.ArgumentTypeError(
            f"expected one character such as ',' ';' '|' or 'tab', got {text!r}"
        )
    return value


def input_problem(path: str | Path) -> str | None:
    """What is wrong with an input file's suffix (a usage mistake), or None."""
    suffix = Path(path).suffix.lower()
    if suffix in INPUT_SUFFIXES:
        return None
    hint = " (save it as .xlsx or CSV)" if suffix == ".xls" else ""
    return f"{path}: expected a .csv, .tsv, .txt, .xlsx or .parquet file{hint}"


def read_input(
    path: str | Path,
    *,
    encoding: str | None = None,
    sep: str | None = None,
    sheet: str | None = None,
) -> LoadedFile:
    """Read a campaign file: CSV, Excel or parquet, labelled by line.

    Parameters
    ----------
    path : str or Path
        The file; its suffix says how to read it (see :data:`INPUT_SUFFIXES`).
    encoding : str, optional
        A CSV's encoding; default UTF-8, with detection when the file is not UTF-8.
    sep : str, optional
        A CSV's separator; default sniffed over the first lines.
    sheet : str, optional
        An Excel sheet's name, or its 0-based position as digits.

    Returns
    -------
    LoadedFile

    Raises
    ------
    InputError
        One line naming the file, the line when known, and what to try.

    Examples
    --------
    >>> loaded = read_input("clientes.csv")  # doctest: +SKIP
    >>> loaded.frame.index[:2].tolist(), loaded.encoding, loaded.sep  # doctest: +SKIP
    ([2, 3], 'cp1252', ';')
    """
    path = Path(path)
    suffix = path.suffix.lower()
    problem = input_problem(path)
    if problem is not None:
        raise InputError(problem)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a file")
    if suffix in PARQUET_SUFFIXES:
        return LoadedFile(_read_parquet(path), path)
    if suffix in EXCEL_SUFFIXES:
        return LoadedFile(_read_excel(path, sheet), path)
    return _read_csv(path, encoding=encoding, sep=sep)


def read_phone_list(
    path: str | Path, *, encoding: str | None = None, sep: str | None = None
) -> pd.Series:
    """An opt-out list (``--suppress``): its ``phone`` column, else its first column."""
    frame = read_input(path, encoding=encoding, sep=sep).frame
    if len(frame.columns) == 0:
        raise InputError(f"{path}: no columns: expected a 'phone' column")
    column = "phone" if "phone" in frame.columns else frame.columns[0]
    return frame[column]


def require_columns(loaded: LoadedFile, columns: dict[str, str | None]) -> None:
    """Fail with a hint when a column an option names is not in the file.

    ``columns`` maps the option (``--phone``) to the column it names (None: not given).
    A header that holds another separator (``telefono;nombre``) suggests ``--sep``.
    """
    present = [str(c) for c in loaded.frame.columns]
    for option, name in columns.items():
        if name is None or name in loaded.frame.columns:
            continue
        shown = ", ".join(repr(c) for c in present[:8]) + (", ..." if len(present) > 8 else "")
        hint = ""
        if loaded.sep is not None:
            header = loaded.sep.join(present)
            others = [s for s in SEPARATORS if s != loaded.sep and s in header]
            if others:
                hint = f"; try --sep {_SEP_NAMES[others[0]]}"
        elif loaded.path.suffix.lower() in EXCEL_SUFFIXES:
            hint = "; the header must be the sheet's first row (--sheet picks the sheet)"
        raise InputError(
            f"{loaded.path}: {option} {name!r}: no such column (columns: {shown}){hint}"
        )


def _read_parquet(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
        raise InputError(f"{path}: cannot read it as parquet ({_first_line(exc)})") from None
    default = isinstance(frame.index, pd.RangeIndex) and frame.index.names == [None]
    if not default:  # an index of its own (ids, labels): kept as columns, for --key/--keep
        frame = frame.reset_index()
    frame.index = pd.RangeIndex(1, len(frame) + 1, name=LINE)
    return frame


def _read_excel(path: Path, sheet: str | None) -> pd.DataFrame:
    import warnings

    import pandas as pd

    try:
        with warnings.catch_warnings():
            # openpyxl's notes on styles and extensions it drops say nothing about cells
            warnings.filterwarnings("ignore", category=UserWarning, module="openpyxl")
            frame = _parse_excel(path, sheet)
    except InputError:
        raise
    except ImportError:
        raise InputError(f"{path}: reading .xlsx needs openpyxl (pip install openpyxl)") from None
    except Exception as exc:  # noqa: BLE001 - openpyxl/zipfile raise many kinds on bad files
        raise InputError(
            f"{path}: cannot read it as an .xlsx workbook ({_first_line(exc)}); "
            "save it again from Excel, or as CSV"
        ) from None
    # pandas reads from the sheet's first row (blank rows kept, trailing ones dropped):
    # the header is row 1, so position p is sheet row p + 2.
    frame.index = pd.RangeIndex(2, len(frame) + 2, name=LINE)
    return frame


def _parse_excel(path: Path, sheet: str | None) -> pd.DataFrame:
    import pandas as pd

    with pd.ExcelFile(path, engine="openpyxl") as book:
        names = [str(n) for n in book.sheet_names]
        chosen: str | int = 0
        if sheet is not None:
            if sheet in names:
                chosen = sheet
            elif sheet.isdigit() and int(sheet) < len(names):
                chosen = int(sheet)
            else:
                raise InputError(
                    f"{path}: no sheet {sheet!r}; its sheets are "
                    + ", ".join(repr(n) for n in names)
                    + " (--sheet NAME or 0-based position)"
                )
        return pd.read_excel(book, sheet_name=chosen, dtype=str)


def _read_csv(path: Path, *, encoding: str | None, sep: str | None) -> LoadedFile:
    import pandas as pd

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    magic = data[:4]
    if magic == b"PK\x03\x04":
        raise InputError(f"{path}: this is an Excel workbook, not text: name it .xlsx")
    if magic == b"PAR1":
        raise InputError(f"{path}: this is a parquet file, not text: name it .parquet")
    text, used, detected = _decode(path, data, encoding)
    if not text.strip():
        raise InputError(f"{path}: the file is empty")
    sniffed = sep is None
    chosen = sep if sep is not None else _sniff(text)
    try:
        frame = pd.read_csv(io.StringIO(text), sep=chosen, dtype=str, engine="c")
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file has no header line") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputError(_parse_failure(path, text, chosen, sniffed, exc)) from None
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas takes a first row with one field too many as the index, shifting every
        # value one column: a file to fix, not to read.
        start = next(s for s, r in _records(text, chosen) if not _blank(r))
        line = next(
            (s for s, r in _records(text, chosen) if s > start and not _blank(r)), start + 1
        )
        width = len(frame.columns)
        raise InputError(_too_many_fields(path, text, chosen, sniffed, line, width, width + 1))
    frame.index = _record_lines(text, chosen, len(frame))
    return LoadedFile(frame, path, used, detected, chosen, sniffed)


def _decode(path: Path, data: bytes, encoding: str | None) -> tuple[str, str, bool]:
    """The text, the encoding used, and whether it was detected."""
    if encoding is not None:
        try:
            return data.decode(encoding), encoding, False
        except LookupError:
            raise InputError(f"--encoding {encoding!r}: no such encoding") from None
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise InputError(
                f"{path}: line {line} is not valid {encoding} (byte 0x{data[exc.start]:02x}); "
                "try another --encoding (cp1252, latin-1, utf-8), or leave it out to detect it"
            ) from None
    try:
        return data.decode("utf-8-sig"), "utf-8", False
    except UnicodeDecodeError as exc:
        first_bad = exc.start
    # The detector reads a sample (the head and the first bytes that are not UTF-8): on
    # the whole of a large file it takes longer than reading it.
    window = data[max(0, first_bad - _DETECT_BYTES // 8) : first_bad + _DETECT_BYTES // 8]
    sample = data if len(data) <= _DETECT_BYTES else data[:_DETECT_BYTES] + b"\n" + window
    for candidate in (sample, data) if sample is not data else (data,):
        found = _detect(candidate)
        if found is None:
            continue
        try:
            return data.decode(found), found, True
        except (UnicodeDecodeError, LookupError):
            continue  # the sample misled it: try the whole file
    line = data[:first_bad].count(b"\n") + 1
    raise InputError(
        f"{path}: line {line} is not UTF-8 and its encoding cannot be told; "
        "try --encoding cp1252 (or latin-1)"
    )


def _detect(data: bytes) -> str | None:
    """charset_normalizer's best guess, Windows-1252 when it is as plausible."""
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        return None
    # On short Spanish files the detector ties cp1252 with cp1250 and others (it reads
    # "Peña" as "Peńa" just as happily): prefer the code page Spanish Excel writes.
    tied = best.encoding == _PREFERRED_8BIT or _PREFERRED_8BIT in best.could_be_from_charset
    tied = tied or any(m.encoding == _PREFERRED_8BIT and m.chaos <= best.chaos for m in matches)
    return _PREFERRED_8BIT if tied else str(best.encoding)


def _sniff(text: str) -> str:
    """The separator of the first lines: csv.Sniffer, else the header's commonest one."""
    sample = text[:_SNIFF_CHARS]
    if len(text) > _SNIFF_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n")]  # whole lines only
    try:
        found = csv.Sniffer().sniff(sample, delimiters="".join(SEPARATORS)).delimiter
    except csv.Error:
        found = ""
    if found in SEPARATORS:
        return found
    header = sample.split("\n", 1)[0]
    counts = {s: header.count(s) for s in SEPARATORS}
    best = max(SEPARATORS, key=lambda s: counts[s])  # first on a tie: ','
    return best if counts[best] else ","


def _record_lines(text: str, sep: str, n: int) -> pd.Index:
    """The line where each of ``n`` rows starts (header = line 1), as pandas read them."""
    import pandas as pd

    if not _has_blank_line(text) and (
        '"' not in text or text.count("\n") - text.endswith("\n") == n
    ):
        return pd.RangeIndex(2, n + 2, name=LINE)
    # pandas skips blank lines. A record spanning lines ends on a line with its closing
    # quote, so it adds a line that is not blank: when the lines that are not blank are
    # the header and n rows, every row is on a line of its own.
    lines = text.split("\n") if "\n" in text else text.split("\r")
    filled = [number for number, line in enumerate(lines, start=1) if line.strip()]
    if len(filled) == n + 1:
        return pd.Index(filled[1:], name=LINE, dtype="int64")
    # Quoted fields span lines: walk the records.
    starts = [start for start, record in _records(text, sep) if not _blank(record)]
    rows = starts[1:]  # the first record is the header
    if len(rows) != n:  # a file pandas and csv read differently: positions, not lines
        return pd.RangeIndex(2, n + 2, name=LINE)
    return pd.Index(rows, name=LINE, dtype="int64")


def _records(text: str, sep: str) -> Iterator[tuple[int, list[str]]]:
    """Each CSV record with the line it starts on."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    before = 0
    try:
        for record in reader:
            yield before + 1, record
            before = reader.line_num
    except csv.Error:
        return


def _blank(record: list[str]) -> bool:
    # what pandas skips: empty lines and lines of blanks only
    return not record or (len(record) == 1 and not record[0].strip())


def _physical_line(text: str, sep: str, counted: int) -> int:
    """The file line of pandas' ``line N`` (pandas counts a multi-line record once)."""
    if '"' not in text:
        return counted
    for ordinal, (start, _) in enumerate(_records(text, sep), start=1):
        if ordinal == counted:
            return start
    return counted


def _has_blank_line(text: str) -> bool:
    return re.search(r"\n[ \t]*\r?\n", text.rstrip("\r\n")) is not None


_PANDAS_LINE = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def _parse_failure(path: Path, text: str, sep: str, sniffed: bool, exc: BaseException) -> str:
    """One line for a CSV pandas cannot split into rows."""
    message = _first_line(exc)
    found = _PANDAS_LINE.search(str(exc))
    if found is None:
        return (
            f"{path}: cannot read it as CSV with sep {_SEP_NAMES.get(sep, repr(sep))} ({message})"
        )
    expected, counted, saw = (int(g) for g in found.groups())
    return _too_many_fields(
        path, text, sep, sniffed, _physical_line(text, sep, counted), expected, saw
    )


def _too_many_fields(
    path: Path, text: str, sep: str, sniffed: bool, line: int, expected: int, saw: int
) -> str:
    header = text.split("\n", 1)[0]
    others = [s for s in SEPARATORS if s != sep and s in header]
    how = "sniffed" if sniffed else "given"
    hints = [f"--sep {_SEP_NAMES[s]}" for s in others]
    hints.append(f"quoting the fields that contain {_SEP_NAMES.get(sep, repr(sep))}")
    return (
        f"{path}: line {line} has {saw} fields where the header has {expected} "
        f"(separator {_SEP_NAMES.get(sep, repr(sep))}, {how}); try " + ", or ".join(hints)
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
