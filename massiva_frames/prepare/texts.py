"""SMS texts: templates filled from columns, checks, GSM-7/UCS-2 encoding and segments.

Everything works on whole columns with Arrow string kernels. Python runs once per
*distinct* value of a formatted column (``{saldo:,.2f}``), and only for the rare rows that
need exact per-character work (long texts split across segments).

Carrier rules (3GPP TS 23.038 / 23.040): a text made only of GSM-7 characters is sent in
7-bit form, 160 septets in one SMS or 153 per part of a concatenated SMS; the extension
table characters (``^ { } \\ [ ~ ] | €`` and form feed) take two septets and are never
split across parts. Any other character forces UCS-2: 70 UTF-16 code units in one SMS or
67 per part; an emoji outside the BMP takes two units and is never split.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError

__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "LONG_TEXT_POLICIES",
    "MAX_TEXT_LENGTH",
    "TEXT_REASONS",
    "TRANSLITERATION",
    "segment_count",
    "split_text",
    "transliterate",
]

#: docs/protocol.md §1: a text is at most 160 characters.
MAX_TEXT_LENGTH = 160
LONG_TEXT_POLICIES = ("error", "truncate", "split")
#: What ``long_text="truncate"`` appends: plain dots, so the text stays GSM-7.
ELLIPSIS = "..."

#: GSM 03.38 default alphabet (the escape code 0x1B is not a character of its own).
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: GSM 03.38 extension table: each takes two septets (escape + code).
GSM7_EXTENSION = "\f^{}\\[~]|€"

#: ``transliterate=True``: characters GSM-7 lacks -> nearest GSM-7 text. Characters
#: GSM-7 has (ñ, é, ü, ¿, ¡, à, è ...) are left alone.
TRANSLITERATION: dict[str, str] = {
    # accented letters GSM-7 lacks -> the bare letter
    **dict(zip("áíóúâêîôûãõëïÿýçšžł", "aiouaeiouaoeiyycszl", strict=True)),
    **dict(zip("ÁÍÓÚÂÊÎÔÛÃÕËÏŸÝÀÈÌÒÙŠŽŁ", "AIOUAEIOUAOEIYYAEIOUSZL", strict=True)),
    # quotes, dashes, bullets, ordinals, odd spaces
    **dict.fromkeys("‘’‚‛´`", "'"),
    **dict.fromkeys("“”„‟«»", '"'),
    **dict.fromkeys("‐‑‒–—―−•", "-"),
    **dict.fromkeys("\t\u00a0\u2007\u2009\u202f", " "),
    **dict.fromkeys("\u200b\ufeff", ""),
    **{"œ": "oe", "Œ": "OE", "…": "...", "·": ".", "º": "o", "ª": "a", "°": "o"},
}

MISSING_VALUE = "text_missing_value"
FORMAT_ERROR = "text_format_error"
EMPTY = "text_empty"
CONTROL = "text_control_chars"
SEPARATOR = "text_separator"
TOO_LONG = "text_too_long"
#: Text reason codes in precedence order; index + 1 is the internal int8 code.
TEXT_REASONS: tuple[str, ...] = (MISSING_VALUE, FORMAT_ERROR, EMPTY, CONTROL, SEPARATOR, TOO_LONG)
_CODE = {name: i + 1 for i, name in enumerate(TEXT_REASONS)}

_LARGE = pa.large_string()


def _re_class(chars: str) -> str:
    return "[" + "".join(f"\\x{{{ord(c):04X}}}" for c in chars) + "]"


_GSM_ALL = _re_class(GSM7_BASIC + GSM7_EXTENSION)
_GSM_FULLMATCH = f"^{_GSM_ALL}*$"
_GSM_EXT = _re_class(GSM7_EXTENSION)
_ASTRAL = r"[\x{10000}-\x{10FFFF}]"
# docs/protocol.md §1 lets a text carry newlines (GSM-7 has LF and CR); every other C0/C1 control
# character is refused: carriers drop or mangle them.
_CONTROL = r"[\x{00}-\x{09}\x{0B}-\x{0C}\x{0E}-\x{1F}\x{7F}-\x{9F}]"
_CONTROL_OR_SEPARATOR = r"[\x{00}-\x{09}\x{0B}-\x{0C}\x{0E}-\x{1F}\x{7F}-\x{9F}|]"
_CONTROL_PY = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_GSM_CHARS = frozenset(GSM7_BASIC + GSM7_EXTENSION)
# Strings that mean "no value" (what ``astype(str)`` makes of NaN/None/NA/NaT).
_MISSING_TOKENS = ["nan", "NaN", "NAN", "None", "none", "NONE", "<NA>", "NaT", "null", "NULL"]
_NUMBER_RE = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")


@dataclass(frozen=True)
class TemplateField:
    """One ``{...}`` of a template: the column it reads and how it formats it."""

    column: Hashable
    rest: str
    conversion: str | None
    spec: str

    @property
    def simple(self) -> bool:
        """No attribute/index access and no conversion: ``format(value, spec)``."""
        return not self.rest and not self.conversion


def _lookup_column(columns: pd.Index, name: str) -> Hashable:
    if name in columns:
        return name
    if name.isdigit() and int(name) in columns:
        return int(name)
    raise InputError(f"template field {{{name}}}: no column {name!r} in the frame")


def template_fields(
    template: str, columns: pd.Index | None = None
) -> tuple[list[str], list[TemplateField]]:
    """Parse a ``str.format`` template into literal pieces and fields.

    Returns ``(literals, fields)`` with ``len(literals) == len(fields) + 1``: the text is
    ``literals[0] + field0 + literals[1] + ...``.

    Raises
    ------
    InputError
        Malformed template, a positional ``{}``, a nested ``{x:{w}}``, or (with
        ``columns``) a field that names no column.

    Examples
    --------
    >>> lits, fields = template_fields("Hola {nombre}, {saldo:,.2f}")
    >>> lits, [(f.column, f.spec) for f in fields]
    (['Hola ', ', ', ''], [('nombre', ''), ('saldo', ',.2f')])
    """
    if not isinstance(template, str):
        raise InputError(f"template: expected a str, got {type(template).__name__}")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InputError(f"template: {exc} in {template[:60]!r}") from None
    literals = [""]
    fields: list[TemplateField] = []
    for literal, name, spec, conversion in parsed:
        literals[-1] += literal
        if name is None:
            continue
        if name == "":
            raise InputError("template: positional fields '{}' are not supported; name a column")
        if spec and ("{" in spec or "}" in spec):
            raise InputError(f"template field {{{name}}}: nested format fields are not supported")
        cut = min((i for i in (name.find("."), name.find("[")) if i >= 0), default=len(name))
        base, rest = name[:cut], name[cut:]
        column: Hashable = base if columns is None else _lookup_column(columns, base)
        fields.append(TemplateField(column, rest, conversion, spec or ""))
        literals.append("")
    return literals, fields


def _check_spec(field: TemplateField, series: pd.Series) -> None:
    """A spec no value of this column's kind accepts is a wrong argument, not a bad row."""
    if not field.spec or not field.simple:
        return
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        samples: tuple[Any, ...] = (True,)
    elif pd.api.types.is_integer_dtype(dtype):
        samples = (1,)
    elif pd.api.types.is_float_dtype(dtype):
        samples = (1.5,)
    elif pd.api.types.is_datetime64_any_dtype(dtype):
        return  # strftime accepts any text
    else:  # text, objects: numbers stored as text take numeric specs too
        samples = ("a", 1.5, 1)
    for sample in samples:
        try:
            format(sample, field.spec)
        except (ValueError, TypeError):
            continue
        return
    raise InputError(
        f"template field {{{field.column}:{field.spec}}}: invalid format spec {field.spec!r} "
        f"for column {field.column!r} ({dtype})"
    )


def _combine(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        return arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    return arr


def _np(arr: pa.Array | pa.ChunkedArray) -> np.ndarray[Any, Any]:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _is_string_dtype(dtype: Any) -> bool:
    return isinstance(dtype, pd.StringDtype) or (
        isinstance(dtype, pd.ArrowDtype) and pa.types.is_string(dtype.pyarrow_dtype)
    )


def _formatter(field: TemplateField) -> Callable[[Any], str]:
    if field.simple:
        spec = field.spec

        def simple(value: Any) -> str:
            try:
                return format(value, spec)
            except (ValueError, TypeError):
                # A number stored as text (a CSV column with one stray word).
                if spec and isinstance(value, str) and _NUMBER_RE.match(value):
                    return format(float(value), spec)
                raise

        return simple
    conv = f"!{field.conversion}" if field.conversion else ""
    mini = "{0" + field.rest + conv + (f":{field.spec}" if field.spec else "") + "}"
    return mini.format


def _format_uniques(
    uniques: Sequence[Any], fmt: Callable[[Any], str]
) -> tuple[list[str | None], np.ndarray[Any, Any]]:
    try:
        # One C-level pass when every value formats (the usual case).
        return list(map(fmt, uniques)), np.zeros(len(uniques), dtype=bool)
    except (ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError):
        pass
    out: list[str | None] = []
    failed = np.zeros(len(uniques), dtype=bool)
    for i, value in enumerate(uniques):
        try:
            out.append(fmt(value))
        except (ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError):
            out.append(None)
            failed[i] = True
    return out, failed


_FIXED_SPEC = re.compile(r"^(?P<comma>,)?(?:\.(?P<decimals>\d{1,2}))?(?P<kind>[fd]?)$")


_POW10 = 10 ** np.arange(19, dtype=np.int64)


def _fixed_strings(
    units: np.ndarray[Any, Any],
    decimals: int,
    comma: bool,
    negative: np.ndarray[Any, Any],
    null: np.ndarray[Any, Any],
) -> pa.Array:
    """Decimal text of ``units / 10**decimals`` (units >= 0, < 2**53), built as bytes.

    What ``format(v, ",.2f")`` prints, assembled right-aligned in a byte matrix (one
    column pass per output character) and packed into an Arrow string array.
    """
    n = len(units)
    integer = units // _POW10[decimals]
    fraction = units % _POW10[decimals]
    digits = np.maximum(1, np.searchsorted(_POW10, integer, side="right"))
    commas = (digits - 1) // 3 if comma else np.zeros(n, dtype=np.int64)
    length = negative + digits + commas + (decimals + 1 if decimals else 0)
    width = int(length.max()) if n else 0
    out = np.zeros((n, width), dtype=np.uint8)
    col = width - 1
    for k in range(decimals):
        out[:, col] = 48 + (fraction // _POW10[k]) % 10
        col -= 1
    if decimals:
        out[:, col] = 46  # "."
        col -= 1
    for t in range(int(digits.max()) if n else 0):
        here = t < digits
        if comma and t and t % 3 == 0:
            out[here, col] = 44  # ","
            col -= 1
        out[here, col] = 48 + (integer[here] // _POW10[t]) % 10
        col -= 1
    sign = np.flatnonzero(negative)
    out[sign, width - length[sign]] = 45  # "-"
    length = np.where(null, 0, length)
    keep = np.arange(width) >= (width - length)[:, None]
    data = out[keep]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(length, out=offsets[1:])
    validity = pa.array(~null).buffers()[1] if null.any() else None
    return pa.Array.from_buffers(_LARGE, n, [validity, pa.py_buffer(offsets), pa.py_buffer(data)])


def _fast_fixed(series: pd.Series, spec: str) -> tuple[pa.Array, np.ndarray[Any, Any]] | None:
    """``format(v, ",.2f")`` and friends for a numeric column, vectorised.

    Returns the text (null where the value is missing) and the rows left to Python
    (values whose rounding is too close to call in binary, or too large), or None when
    the spec or dtype is not one this path handles.
    """
    match = _FIXED_SPEC.match(spec)
    dtype = series.dtype
    if match is None or not spec or pd.api.types.is_bool_dtype(dtype):
        return None
    kind, decimals_text = match["kind"], match["decimals"]
    if pd.api.types.is_integer_dtype(dtype) and kind in ("d", "") and decimals_text is None:
        ints = series.to_numpy(dtype="float64", na_value=np.nan)
        decimals = 0
        if kind == "" and not match["comma"]:
            return None
    elif pd.api.types.is_float_dtype(dtype) or pd.api.types.is_integer_dtype(dtype):
        if kind != "f" and not (kind == "" and decimals_text is None and match["comma"]):
            return None
        if kind == "":
            return None  # "," alone on floats prints repr digits: Python's job
        ints = series.to_numpy(dtype="float64", na_value=np.nan)
        decimals = int(decimals_text) if decimals_text is not None else 6
        if decimals > 15:
            return None  # 10**decimals stops being exact in binary: Python's job
    else:
        return None
    values = ints
    missing = np.isnan(values)
    magnitude = np.abs(np.where(missing, 0.0, values))
    scale = 10.0**decimals
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = magnitude * scale
        rounded = np.rint(scaled)
        # The float product may sit on the other side of a .5 boundary than the exact
        # value Python rounds: leave those (and anything past 2**53) to format().
        near_half = np.abs(scaled - np.floor(scaled) - 0.5) <= 4e-16 * np.maximum(scaled, 1.0)
        python = ~missing & (~np.isfinite(scaled) | (scaled >= 2.0**53) | near_half)
    whole_units = np.where(python | missing, 0.0, rounded).astype(np.int64)
    negative = np.signbit(np.where(missing, 0.0, values)).astype(np.int64)
    text = _fixed_strings(whole_units, decimals, bool(match["comma"]), negative, missing)
    return text, python


@dataclass
class TextFacts:
    """What the checks need to know of each text, computable piece by piece: a
    template's text is literals plus field values, so its facts are sums (lengths),
    ANDs (GSM-7) and ORs (control characters or '|') of its pieces' facts, each piece
    measured once per distinct value."""

    length: np.ndarray[Any, Any]  # code points
    nbytes: np.ndarray[Any, Any]  # UTF-8 bytes
    gsm: np.ndarray[Any, Any]  # GSM-7 basic + extension characters only
    flagged: np.ndarray[Any, Any]  # a control character or '|'

    def take(self, rows: np.ndarray[Any, Any]) -> TextFacts:
        """Facts of ``rows`` (-1 = no value: empty facts)."""
        if not len(self.length):
            empty = np.zeros(len(rows), dtype=np.int64)
            return TextFacts(empty, empty.copy(), empty == 0, empty != 0)
        safe = np.maximum(rows, 0)
        none = rows < 0
        return TextFacts(
            length=np.where(none, 0, self.length[safe]),
            nbytes=np.where(none, 0, self.nbytes[safe]),
            gsm=np.where(none, True, self.gsm[safe]),
            flagged=np.where(none, False, self.flagged[safe]),
        )

    def __add__(self, other: TextFacts) -> TextFacts:
        return TextFacts(
            length=self.length + other.length,
            nbytes=self.nbytes + other.nbytes,
            gsm=self.gsm & other.gsm,
            flagged=self.flagged | other.flagged,
        )


def text_facts(text: pa.Array) -> TextFacts:
    """Measure texts with vectorised kernels (nulls measure as empty)."""
    return TextFacts(
        length=pc.fill_null(pc.utf8_length(text), 0).to_numpy().astype(np.int64),
        nbytes=pc.fill_null(pc.binary_length(text), 0).to_numpy().astype(np.int64),
        gsm=_np(pc.fill_null(pc.match_substring_regex(text, _GSM_FULLMATCH), True)),
        flagged=_np(pc.match_substring_regex(text, _CONTROL_OR_SEPARATOR)),
    )


def _number_facts(text: pa.Array) -> TextFacts:
    """Numbers rendered by format(): ASCII digits and signs, GSM-7, never flagged."""
    nbytes = pc.fill_null(pc.binary_length(text), 0).to_numpy().astype(np.int64)
    n = len(text)
    return TextFacts(nbytes, nbytes.copy(), np.ones(n, dtype=bool), np.zeros(n, dtype=bool))


def _literal_facts(literal: str, n: int) -> TextFacts:
    return TextFacts(
        length=np.full(n, len(literal), dtype=np.int64),
        nbytes=np.full(n, len(literal.encode("utf-8")), dtype=np.int64),
        gsm=np.full(n, all(c in _GSM_CHARS for c in literal), dtype=bool),
        flagged=np.full(n, "|" in literal or bool(_CONTROL_PY.search(literal)), dtype=bool),
    )


def _strip_and_missing(
    text: pa.Array, blank_is_missing: bool = True
) -> tuple[pa.Array, np.ndarray[Any, Any]]:
    """Trim a value; null and ``nan``-like strings are missing (never sent), and so are
    blank ones when ``blank_is_missing``."""
    text = pc.utf8_trim_whitespace(text)
    missing = _np(pc.is_null(text))
    if blank_is_missing:
        missing |= _np(pc.equal(text, ""))
    missing |= _np(pc.is_in(text, value_set=pa.array(_MISSING_TOKENS, _LARGE)))
    return _combine(text), missing


@dataclass
class _Piece:
    text: pa.Array
    missing: np.ndarray[Any, Any]
    failed: np.ndarray[Any, Any]
    facts: TextFacts


def _mostly_distinct(arr: pa.Array) -> bool:
    """Sampled guess: is per-distinct-value work pointless for this column?"""
    step = max(1, len(arr) // 20_000)
    sample = arr.slice(0, min(len(arr), 20_000 * step)).take(
        pa.array(np.arange(0, min(len(arr), 20_000 * step), step))
    )
    distinct = pc.count_distinct(sample).as_py()
    return bool(distinct > 0.5 * max(len(sample), 1))


def _piece(
    series: pd.Series, field: TemplateField, *, blank_is_missing: bool, translit: bool
) -> _Piece:
    """A column as text, its missing/failed rows and its facts; work per distinct value."""
    n = len(series)
    dtype = series.dtype
    plain = field.simple and not field.spec
    if plain and pd.api.types.is_integer_dtype(dtype):
        text = _combine(pa.array(series.array)).cast(_LARGE)
        missing = _np(pc.is_null(text))
        return _Piece(text, missing, np.zeros(n, dtype=bool), _number_facts(text))
    if field.simple and (fast := _fast_fixed(series, field.spec)) is not None:
        text, python = fast
        failed = np.zeros(n, dtype=bool)
        if python.any():
            rows = np.flatnonzero(python)
            table, codes, failed_u = _format_table(series.iloc[rows], _formatter(field))
            redo = table.take(pa.array(codes, mask=codes < 0, type=pa.int64()))
            mask = np.zeros(n, dtype=bool)
            mask[rows] = True
            text = _combine(pc.replace_with_mask(text, pa.array(mask), redo))
            failed[rows] = (codes >= 0) & failed_u[np.maximum(codes, 0)]
        missing = _np(pc.is_null(text)) & ~failed
        return _Piece(text, missing, failed, _number_facts(text))
    if plain and _is_string_dtype(dtype):
        arr = _combine(pa.array(series.array)).cast(_LARGE)
        if _mostly_distinct(arr):  # a free-text column: measure it whole
            text, missing = _strip_and_missing(arr, blank_is_missing)
            if translit:
                text = _transliterate(text)
            text = _with_nulls(text, missing)
            return _Piece(text, missing, np.zeros(n, dtype=bool), text_facts(text))
        encoded = pc.dictionary_encode(arr)
        table = _combine(encoded.dictionary).cast(_LARGE)
        codes = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64)
        failed_u = np.zeros(len(table), dtype=bool)
    else:
        table, codes, failed_u = _format_table(series, _formatter(field))
    table, missing_u = _strip_and_missing(table, blank_is_missing)
    if translit:
        table = _transliterate(table)
    facts_u = text_facts(table)
    has = codes >= 0
    safe = np.maximum(codes, 0)
    failed = has & failed_u[safe] if len(table) else np.zeros(n, dtype=bool)
    missing = (~has | (missing_u[safe] if len(table) else True)) & ~failed
    rows = np.where(missing | failed, -1, codes)
    text = _combine(table.take(pa.array(rows, mask=rows < 0, type=pa.int64())))
    return _Piece(text, missing, failed, facts_u.take(rows))


def _with_nulls(text: pa.Array, null: np.ndarray[Any, Any]) -> pa.Array:
    if not null.any():
        return text
    return _combine(pc.if_else(pa.array(null), pa.scalar(None, _LARGE), text))


def column_piece(series: pd.Series, *, translit: bool = False) -> _Piece:
    """The text column: trimmed; null or ``nan``-like is missing, blank stays blank (so
    it becomes ``text_empty``); measured once per distinct text when texts repeat."""
    field = TemplateField(series.name, "", None, "")
    return _piece(series, field, blank_is_missing=False, translit=translit)


def column_text(
    series: pd.Series, field: TemplateField | None = None, *, blank_is_missing: bool = True
) -> tuple[pa.Array, np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """One column rendered as text for a template field (or as the text column).

    Returns ``(text, missing, failed)``: Arrow text (null where missing or failed) and
    the two masks. String values are trimmed; ``nan``-like strings count as missing, and
    so do blank ones unless ``blank_is_missing=False`` (the text column: a blank text is
    ``text_empty``). Formatting runs once per distinct value.
    """
    field = field or TemplateField(series.name, "", None, "")
    piece = _piece(series, field, blank_is_missing=blank_is_missing, translit=False)
    return piece.text, piece.missing, piece.failed


def _format_table(
    series: pd.Series, fmt: Callable[[Any], str]
) -> tuple[pa.Array, np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Distinct values formatted once: ``(table, codes (-1 = missing), failed per entry)``."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy().astype(np.int64)
        uniques: Any = list(series.cat.categories)
    else:
        try:
            raw_codes, found = pd.factorize(series, use_na_sentinel=True)
            codes, uniques = raw_codes.astype(np.int64), list(found)
            if pd.api.types.is_float_dtype(series.dtype):
                # factorize holds -0.0 equal to 0.0, but format() prints "-0.00"
                floats = series.to_numpy(dtype="float64", na_value=np.nan)
                negative_zero = (floats == 0.0) & np.signbit(floats)
                if negative_zero.any():
                    zero_code = codes[np.flatnonzero(floats == 0.0)[0]]
                    uniques[zero_code] = 0.0  # the first zero seen may have been -0.0
                    codes[negative_zero] = len(uniques)
                    uniques.append(-0.0)
        except TypeError:  # unhashable cells (lists, dicts): one by one
            values = series.to_numpy(dtype=object)
            keep = ~pd.isna(pd.Series(values)).to_numpy(dtype=bool)
            codes = np.full(len(values), -1, dtype=np.int64)
            codes[keep] = np.arange(int(keep.sum()))
            uniques = list(values[keep])
    out, failed_u = _format_uniques(uniques, fmt)
    try:
        table = pa.array(out, type=_LARGE)
    except UnicodeEncodeError:
        # A lone surrogate (text decoded with errors="surrogateescape") has no UTF-8
        # form, so no SMS can carry it: that value fails like one that cannot be
        # formatted, and the other rows go on.
        odd = np.fromiter((_unencodable(v) for v in out), dtype=bool, count=len(out))
        failed_u = failed_u | odd
        table = pa.array([None if bad else v for v, bad in zip(out, odd, strict=True)], _LARGE)
    return table, codes, failed_u


def _unencodable(value: str | None) -> bool:
    if value is None:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


@dataclass
class Rendered:
    """A filled template: texts and, per row, the first field at fault (-1 if none)."""

    text: pa.Array
    missing_at: np.ndarray[Any, Any]
    failed_at: np.ndarray[Any, Any]
    columns: list[Hashable]
    facts: TextFacts


def render_template(df: pd.DataFrame, template: str, *, translit: bool = False) -> Rendered:
    """Fill ``template`` from ``df``'s columns, vectorised, once per distinct value.

    Returns a :class:`Rendered`: text (null where a used value is missing or cannot be
    formatted), the position in ``columns`` of the first field whose value is missing
    (-1 if none), the same for a format failure, the columns the fields read, and the
    texts' :class:`TextFacts`. With ``translit``, literals and values are transliterated.

    Examples
    --------
    >>> df = pd.DataFrame({"nombre": ["Ana", None], "saldo": [1234.5, 2.0]})
    >>> out = render_template(df, "Hola {nombre}: {saldo:,.2f}")
    >>> out.text.to_pylist(), out.missing_at.tolist()
    (['Hola Ana: 1,234.50', None], [-1, 0])
    """
    literals, fields = template_fields(template, df.columns)
    if translit:
        literals = [_transliterate_str(lit) for lit in literals]
    n = len(df)
    pieces: list[Any] = []
    missing_at = np.full(n, -1, dtype=np.int64)
    failed_at = np.full(n, -1, dtype=np.int64)
    facts = _literal_facts("".join(literals), n)
    for i, field in enumerate(fields):
        column = df[field.column]
        if isinstance(column, pd.DataFrame):
            raise InputError(f"template field {{{field.column}}}: the column name is not unique")
        _check_spec(field, column)
        piece = _piece(column, field, blank_is_missing=True, translit=translit)
        missing_at[(missing_at < 0) & piece.missing] = i
        failed_at[(failed_at < 0) & piece.failed] = i
        facts = facts + piece.facts
        if literals[i]:
            pieces.append(pa.scalar(literals[i], _LARGE))
        pieces.append(piece.text)
    if literals[-1]:
        pieces.append(pa.scalar(literals[-1], _LARGE))
    columns = [f.column for f in fields]
    if not fields:
        text = pa.array([literals[0]] * n, type=_LARGE)
    elif len(pieces) == 1:
        text = _combine(pieces[0])
    else:
        text = _combine(pc.binary_join_element_wise(*pieces, pa.scalar("", _LARGE)))
    return Rendered(text, missing_at, failed_at, columns, facts)


def transliterate(text: Any) -> Any:
    """Replace what GSM-7 lacks with its nearest GSM-7 text (á->a, “->", —->-, …->...).

    Characters GSM-7 has (ñ, é, ü, ¿, ¡) are kept. Only the characters present in the
    column are replaced, each with one vectorised pass. A Series (or list) gives a
    string Series back, index kept; an Arrow array gives an Arrow array.

    Examples
    --------
    >>> transliterate(pd.Series(["¿Está en Mérida? “sí”"])).tolist()
    ['¿Esta en Mérida? "si"']
    """
    if isinstance(text, pd.Series | list | tuple):
        series = (
            pd.Series(text, dtype="string[pyarrow]") if not isinstance(text, pd.Series) else text
        )
        result = _transliterate(_combine(pa.array(series.astype("string[pyarrow]").array)))
        return pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([result])), index=series.index)
    return _transliterate(_combine(text))


def _transliterate_str(text: str) -> str:
    return "".join(TRANSLITERATION.get(c, c) for c in text)


def _transliterate(arr: pa.Array) -> pa.Array:
    arr = arr.cast(_LARGE)
    leftover = pc.replace_substring_regex(arr, f"{_GSM_ALL}+", "")
    present = set("".join(s for s in pc.unique(leftover).to_pylist() if s))
    for char in sorted(present & TRANSLITERATION.keys()):
        arr = pc.replace_substring(arr, char, TRANSLITERATION[char])
    return _combine(arr)


def _segments_exact(text: str, gsm: bool) -> int:
    """Carrier segment count for one text, never splitting an escape or a surrogate pair."""
    if gsm:
        units = [2 if c in GSM7_EXTENSION else 1 for c in text]
        single, part = 160, 153
    else:
        units = [2 if ord(c) > 0xFFFF else 1 for c in text]
        single, part = 70, 67
    if sum(units) <= single:
        return 1
    count, used = 1, 0
    for size in units:
        if used + size > part:
            count += 1
            used = 0
        used += size
    return count


def segment_count(text: str) -> tuple[str, int]:
    """``(encoding, segments)`` of one text as carriers count them.

    Examples
    --------
    >>> segment_count("Hola"), segment_count("Acción"), segment_count("a" * 161)
    (('GSM-7', 1), ('UCS-2', 1), ('GSM-7', 2))
    """
    gsm = all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text)
    return ("GSM-7" if gsm else "UCS-2"), _segments_exact(text, gsm)


def split_text(text: str, limit: int = MAX_TEXT_LENGTH) -> list[str]:
    """Split a long text into parts of at most ``limit`` characters, at spaces if possible.

    A part ends at the last space before the limit when that space is in the last 40% of
    the part; otherwise the word is cut. Parts are stripped and never empty.

    Examples
    --------
    >>> [len(p) for p in split_text("palabra " * 50)]
    [159, 159, 79]
    """
    parts: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        cut = rest.rfind(" ", 0, limit + 1)
        if cut < limit * 0.6:
            cut = limit
        part = rest[:cut].rstrip()
        if part:
            parts.append(part)
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts


def _truncate(text: str, limit: int = MAX_TEXT_LENGTH) -> str:
    return text[: limit - len(ELLIPSIS)].rstrip() + ELLIPSIS


@dataclass
class TextCheck:
    """Per-row outcome of :func:`check_texts` (arrays aligned with the input)."""

    text: pa.Array
    code: np.ndarray[Any, Any]
    gsm: np.ndarray[Any, Any]
    segments: np.ndarray[Any, Any]
    parts: np.ndarray[Any, Any]

    def reasons(self) -> list[str | None]:
        """Reason codes as strings (None where the text is fine)."""
        return [None if c == 0 else TEXT_REASONS[c - 1] for c in self.code]


def check_texts(
    text: pa.Array,
    *,
    missing: np.ndarray[Any, Any] | None = None,
    failed: np.ndarray[Any, Any] | None = None,
    long_text: str = "error",
    do_transliterate: bool = False,
    facts: TextFacts | None = None,
) -> TextCheck:
    """Check final texts; compute encoding, segments and parts, vectorised.

    Parameters
    ----------
    text : pyarrow string array
        The texts (null where a value was missing or failed to format).
    missing, failed : bool arrays, optional
        Rows whose text is null because a used value is missing / failed to format.
    long_text : {"error", "truncate", "split"}
        Texts over 160 characters: a ``text_too_long`` reason; cut to 157 characters plus
        ``...``; or kept whole and sent as ``parts`` messages (see :func:`split_text`).
    do_transliterate : bool
        Apply :func:`transliterate` first.
    facts : TextFacts, optional
        The texts' facts when already known (a rendered template's); else measured.
    """
    if long_text not in LONG_TEXT_POLICIES:
        raise InputError(f"long_text: expected one of {LONG_TEXT_POLICIES}, got {long_text!r}")
    text = _combine(text).cast(_LARGE)
    n = len(text)
    if do_transliterate:
        text = _transliterate(text)
        facts = None
    if facts is None:
        facts = text_facts(text)
    code = np.zeros(n, dtype=np.int8)
    null = _np(pc.is_null(text))
    # blank: empty, or whitespace only (one pass, no trimmed copy)
    blank = (_np(pc.utf8_is_space(text)) | (facts.length == 0)) & ~null
    # Control characters and '|' were found in one pass; the rare hits are told apart.
    control = np.zeros(n, dtype=bool)
    separator = np.zeros(n, dtype=bool)
    odd = np.flatnonzero(facts.flagged & ~null)
    if len(odd):
        flagged = text.take(pa.array(odd))
        control[odd] = _np(pc.match_substring_regex(flagged, _CONTROL))
        separator[odd] = _np(pc.match_substring(flagged, "|"))
    length, nbytes, gsm = facts.length.copy(), facts.nbytes.copy(), facts.gsm & ~null
    long = length > MAX_TEXT_LENGTH

    parts = np.ones(n, dtype=np.int64)
    if long_text == "error":
        code[long] = _CODE[TOO_LONG]
    long_rows = np.flatnonzero(long & ~control & ~separator & ~blank)
    if len(long_rows) and long_text == "truncate":
        cut = [_truncate(str(t)) for t in text.take(pa.array(long_rows)).to_pylist()]
        mask = np.zeros(n, dtype=bool)
        mask[long_rows] = True
        cut_arr = pa.array(cut, _LARGE)
        text = _combine(pc.replace_with_mask(text, pa.array(mask), cut_arr))
        cut_facts = text_facts(cut_arr)
        length[long_rows], nbytes[long_rows] = cut_facts.length, cut_facts.nbytes
        gsm[long_rows] = cut_facts.gsm
    elif len(long_rows) and long_text == "split":
        parts[long_rows] = [
            len(split_text(str(t))) for t in text.take(pa.array(long_rows)).to_pylist()
        ]
    code[separator] = _CODE[SEPARATOR]
    code[control] = _CODE[CONTROL]
    code[blank] = _CODE[EMPTY]
    code[null] = _CODE[MISSING_VALUE]
    if failed is not None:
        code[null & failed & ~(missing if missing is not None else False)] = _CODE[FORMAT_ERROR]
    # Most texts fit one SMS whatever they contain: the most units a text can take is
    # twice its GSM-7 length (every character an escape pair) or, for UCS-2, its length
    # plus one unit per 4-byte character (each 3 bytes over). Only texts whose most
    # could pass one SMS are counted exactly.
    segments = np.ones(n, dtype=np.int64)
    cand = np.flatnonzero((length > 35) | (parts > 1))
    c_len, c_gsm = length[cand], gsm[cand]
    most = c_len + np.where(c_gsm, c_len, (nbytes[cand] - c_len) // 3)
    need = cand[(most > np.where(c_gsm, 160, 70)) | (parts[cand] > 1)]
    if len(need):
        n_len, n_gsm = length[need], gsm[need]
        extra = np.zeros(len(need), dtype=np.int64)
        for rows_mask, pattern in ((n_gsm, _GSM_EXT), (~n_gsm, _ASTRAL)):
            rows = np.flatnonzero(rows_mask)
            if len(rows):
                counted = pc.count_substring_regex(text.take(pa.array(need[rows])), pattern)
                extra[rows] = pc.fill_null(counted, 0).to_numpy()
        units = n_len + extra
        single = np.where(n_gsm, 160, 70)
        seg = np.where(units <= single, 1, -(-units // np.where(n_gsm, 153, 67)))
        # Exact count where a double unit could straddle a part boundary, or parts differ.
        exact = np.flatnonzero(((units > single) & (extra > 0)) | (parts[need] > 1))
        if len(exact):
            values = text.take(pa.array(need[exact])).to_pylist()
            seg[exact] = [
                _row_segments(str(t), bool(g), int(p))
                for t, g, p in zip(values, n_gsm[exact], parts[need][exact], strict=True)
            ]
        segments[need] = seg
    segments[null] = 0
    return TextCheck(text=text, code=code, gsm=gsm, segments=segments, parts=parts)


def _row_segments(text: str, gsm: bool, parts: int) -> int:
    if parts > 1:
        return sum(segment_count(part)[1] for part in split_text(text))
    return _segments_exact(text, gsm)
