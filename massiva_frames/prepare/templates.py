"""Templates: ``str.format`` templates parsed into fields, and filled from a frame's columns.

Everything works on whole columns with Arrow string kernels. Python runs once per
*distinct* value of a formatted column (``{saldo:,.2f}``, see :mod:`.formatting`). Each
piece of a filled text (a literal, a column's values) is measured as it is made, so the
checks of :mod:`.texts` need not measure the whole text again.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from .arrow import LARGE_STRING, bool_mask, is_string_dtype, one_chunk
from .formatting import fast_fixed, format_table
from .texts import (
    TextFacts,
    literal_facts,
    number_facts,
    text_facts,
    transliterate_array,
    transliterate_str,
)

__all__ = [
    "Rendered",
    "TemplateField",
    "column_piece",
    "column_text",
    "render_template",
    "template_fields",
]

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


def _strip_and_missing(
    text: pa.Array, blank_is_missing: bool = True
) -> tuple[pa.Array, np.ndarray[Any, Any]]:
    """Trim a value; null and ``nan``-like strings are missing (never sent), and so are
    blank ones when ``blank_is_missing``."""
    text = pc.utf8_trim_whitespace(text)
    missing = bool_mask(pc.is_null(text))
    if blank_is_missing:
        missing |= bool_mask(pc.equal(text, ""))
    missing |= bool_mask(pc.is_in(text, value_set=pa.array(_MISSING_TOKENS, LARGE_STRING)))
    return one_chunk(text), missing


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
        text = one_chunk(pa.array(series.array)).cast(LARGE_STRING)
        missing = bool_mask(pc.is_null(text))
        return _Piece(text, missing, np.zeros(n, dtype=bool), number_facts(text))
    if field.simple and (fast := fast_fixed(series, field.spec)) is not None:
        text, python = fast
        failed = np.zeros(n, dtype=bool)
        if python.any():
            rows = np.flatnonzero(python)
            table, codes, failed_u = format_table(series.iloc[rows], _formatter(field))
            redo = table.take(pa.array(codes, mask=codes < 0, type=pa.int64()))
            mask = np.zeros(n, dtype=bool)
            mask[rows] = True
            text = one_chunk(pc.replace_with_mask(text, pa.array(mask), redo))
            failed[rows] = (codes >= 0) & failed_u[np.maximum(codes, 0)]
        missing = bool_mask(pc.is_null(text)) & ~failed
        return _Piece(text, missing, failed, number_facts(text))
    if plain and is_string_dtype(dtype):
        arr = one_chunk(pa.array(series.array)).cast(LARGE_STRING)
        if _mostly_distinct(arr):  # a free-text column: measure it whole
            text, missing = _strip_and_missing(arr, blank_is_missing)
            if translit:
                text = transliterate_array(text)
            text = _with_nulls(text, missing)
            return _Piece(text, missing, np.zeros(n, dtype=bool), text_facts(text))
        encoded = pc.dictionary_encode(arr)
        table = one_chunk(encoded.dictionary).cast(LARGE_STRING)
        codes = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64)
        failed_u = np.zeros(len(table), dtype=bool)
    else:
        table, codes, failed_u = format_table(series, _formatter(field))
    table, missing_u = _strip_and_missing(table, blank_is_missing)
    if translit:
        table = transliterate_array(table)
    facts_u = text_facts(table)
    has = codes >= 0
    safe = np.maximum(codes, 0)
    failed = has & failed_u[safe] if len(table) else np.zeros(n, dtype=bool)
    missing = (~has | (missing_u[safe] if len(table) else True)) & ~failed
    rows = np.where(missing | failed, -1, codes)
    text = one_chunk(table.take(pa.array(rows, mask=rows < 0, type=pa.int64())))
    return _Piece(text, missing, failed, facts_u.take(rows))


def _with_nulls(text: pa.Array, null: np.ndarray[Any, Any]) -> pa.Array:
    if not null.any():
        return text
    return one_chunk(pc.if_else(pa.array(null), pa.scalar(None, LARGE_STRING), text))


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
        literals = [transliterate_str(lit) for lit in literals]
    n = len(df)
    pieces: list[Any] = []
    missing_at = np.full(n, -1, dtype=np.int64)
    failed_at = np.full(n, -1, dtype=np.int64)
    facts = literal_facts("".join(literals), n)
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
            pieces.append(pa.scalar(literals[i], LARGE_STRING))
        pieces.append(piece.text)
    if literals[-1]:
        pieces.append(pa.scalar(literals[-1], LARGE_STRING))
    columns = [f.column for f in fields]
    if not fields:
        text = pa.array([literals[0]] * n, type=LARGE_STRING)
    elif len(pieces) == 1:
        text = one_chunk(pieces[0])
    else:
        text = one_chunk(pc.binary_join_element_wise(*pieces, pa.scalar("", LARGE_STRING)))
    return Rendered(text, missing_at, failed_at, columns, facts)
