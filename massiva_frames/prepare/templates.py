"""Templates: ``str.format`` templates parsed into fields, and filled from a frame's columns.

A field is a column name with an optional format spec (``{nombre}``, ``{saldo:,.2f}``);
nothing else of ``str.format`` (attributes, indexing, conversions) is allowed, and a cell
that is not one value (a list, a dict...) is never rendered.

Everything works on whole columns with Arrow string kernels. Python runs once per
*distinct* value of a formatted column (``{saldo:,.2f}``, see :mod:`.formatting`). Each
piece of a filled text (a literal, a column's values) is measured as it is made, so the
checks of :mod:`.texts` need not measure the whole text again.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from .arrow import LARGE_STRING, bool_mask, is_string_dtype, one_chunk, scatter
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
    "Piece",
    "Rendered",
    "TemplateField",
    "column_piece",
    "column_text",
    "render_template",
    "template_fields",
]

# Strings that mean "no value" (what ``astype(str)`` makes of NaN/None/NA/NaT).
_MISSING_TOKENS = ["nan", "NaN", "NAN", "None", "none", "NONE", "<NA>", "NaT", "null", "NULL"]
_MISSING_SET = frozenset(_MISSING_TOKENS)
_NO_SEPARATOR = pa.scalar("", LARGE_STRING)
_NUMBER_RE = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")


@dataclass(frozen=True)
class TemplateField:
    """One ``{...}`` of a template: the column it reads and its format spec."""

    column: Hashable
    spec: str = ""


#: What a template field may be, said in every template error.
_RULE = (
    "a template field is a column name with an optional format spec, e.g. {nombre} or {saldo:,.2f}"
)


def _shown_field(name: str, conversion: str | None, spec: str | None) -> str:
    return (
        "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
    )


def _field_error(name: str, conversion: str | None, spec: str | None) -> str | None:
    """Why a parsed field is not a plain name with a format spec (None if it is one)."""
    if name == "" or name.isdigit():
        return "positional fields are not supported: name a column"
    if "." in name:
        return "attribute access is not allowed (a column named with '.' must be renamed)"
    if "[" in name:
        return "indexing is not allowed (a column named with '[' must be renamed)"
    if conversion is not None:
        return f"conversions ('!{conversion}') are not allowed"
    if spec and ("{" in spec or "}" in spec):
        return "nested format fields are not allowed"
    return None


def template_fields(
    template: str, columns: pd.Index | None = None
) -> tuple[list[str], list[TemplateField]]:
    """Parse a template into literal pieces and fields, refusing anything but plain names.

    A field is a column name with an optional ``str.format`` spec: ``{nombre}``,
    ``{saldo:,.2f}``, ``{vence:%d/%m/%Y}``. Attribute access (``{nombre.upper}``),
    indexing (``{x[0]}``), conversions (``{x!r}``), nested specs (``{x:{w}}``) and
    positional fields (``{}``, ``{0}``) would reach Python objects' internals or their
    ``repr``: they are refused before any row is rendered.

    Returns ``(literals, fields)`` with ``len(literals) == len(fields) + 1``: the text is
    ``literals[0] + field0 + literals[1] + ...``.

    Raises
    ------
    InputError
        A malformed template, a field that is not a plain name with a format spec
        (naming the field and the rule), or (with ``columns``) a field that names no
        column.

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
        problem = _field_error(name, conversion, spec)
        if problem is not None:
            raise InputError(
                f"template field {_shown_field(name, conversion, spec)}: {problem}; {_RULE}"
            )
        if columns is not None and name not in columns:
            raise InputError(f"template field {{{name}}}: no column {name!r} in the frame")
        fields.append(TemplateField(name, spec or ""))
        literals.append("")
    return literals, fields


def _check_spec(field: TemplateField, series: pd.Series) -> None:
    """A spec no value of this column's kind accepts is a wrong argument, not a bad row."""
    if not field.spec:
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
    spec = field.spec
    if not spec:
        # format(value, ""): blanks and "nan" are told apart after trimming
        return format

    def simple(value: Any) -> str:
        if isinstance(value, str):
            bare = value.strip()
            if not bare or bare in _MISSING_SET:
                # blank or "nan": missing (or kept blank), whatever the spec asks
                return bare
        try:
            return format(value, spec)
        except (ValueError, TypeError):
            # A number stored as text (a CSV column with one stray word).
            if spec and isinstance(value, str) and _NUMBER_RE.match(value):
                return format(float(value), spec)
            raise

    return simple


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
class Piece:
    """One column as text for a template field (or as the text column), row by row.

    ``text`` is null where the value is missing, cannot be formatted (``failed``) or is
    not one value (``odd``: a list, a dict, an array, bytes... whose text would be its
    Python ``repr``); the three masks never overlap. ``facts`` measure ``text``.
    """

    text: pa.Array
    missing: np.ndarray[Any, Any]
    failed: np.ndarray[Any, Any]
    odd: np.ndarray[Any, Any]
    facts: TextFacts


def _mostly_distinct(arr: pa.Array) -> bool:
    """Sampled guess: is per-distinct-value work pointless for this column?"""
    step = max(1, len(arr) // 20_000)
    sample = arr.slice(0, min(len(arr), 20_000 * step)).take(
        pa.array(np.arange(0, min(len(arr), 20_000 * step), step))
    )
    distinct = pc.count_distinct(sample).as_py()
    return bool(distinct > 0.5 * max(len(sample), 1))


def _object_strings(series: pd.Series) -> pa.Array | None:
    """An object column holding only strings (and missing values) as Arrow text, in one
    C-level pass; None when it holds anything else (numbers, lists...) or a string with
    no UTF-8 form: those go value by value through :func:`.formatting.format_table`."""
    values = series.to_numpy(dtype=object)
    if pd.api.types.infer_dtype(values, skipna=True) != "string":  # bytes would pass as text
        return None
    try:
        return pa.array(values, type=LARGE_STRING, from_pandas=True)
    except (pa.ArrowException, UnicodeError):
        return None


@dataclass
class _Part:
    """A :class:`Piece` before its text is spread to the rows: either ``text`` (a whole
    column), or ``table`` (distinct values) and ``rows`` (each row's entry, -1 = null),
    so that a template can join its literals to the few distinct values instead."""

    text: pa.Array | None
    table: pa.Array | None
    rows: np.ndarray[Any, Any] | None
    missing: np.ndarray[Any, Any]
    failed: np.ndarray[Any, Any]
    odd: np.ndarray[Any, Any]
    facts: TextFacts

    def spread(self, table: pa.Array | None = None) -> pa.Array:
        """The text per row (from ``table``, the distinct values joined to literals)."""
        if self.text is not None:
            return self.text
        assert self.table is not None and self.rows is not None
        rows = pa.array(self.rows, mask=self.rows < 0, type=pa.int64())
        return one_chunk((self.table if table is None else table).take(rows))


def _piece(
    series: pd.Series, field: TemplateField, *, blank_is_missing: bool, translit: bool
) -> Piece:
    """A column as text, its missing/failed/odd rows and its facts; work per distinct value."""
    part = _part(series, field, blank_is_missing=blank_is_missing, translit=translit)
    return Piece(part.spread(), part.missing, part.failed, part.odd, part.facts)


def _part(
    series: pd.Series, field: TemplateField, *, blank_is_missing: bool, translit: bool
) -> _Part:
    """:func:`_piece` with the text of a column of few distinct values left unspread."""
    n = len(series)
    dtype = series.dtype
    none = np.zeros(n, dtype=bool)
    if not field.spec and pd.api.types.is_integer_dtype(dtype):
        text = one_chunk(pa.array(series.array)).cast(LARGE_STRING)
        missing = bool_mask(pc.is_null(text))
        return _Part(text, None, None, missing, none, none.copy(), number_facts(text))
    if (fast := fast_fixed(series, field.spec)) is not None:
        text, python = fast
        failed = none.copy()
        if python.any():
            rows = np.flatnonzero(python)
            table, codes, failed_u, _ = format_table(series.iloc[rows], _formatter(field))
            redo = table.take(pa.array(codes, mask=codes < 0, type=pa.int64()))
            mask = np.zeros(n, dtype=bool)
            mask[rows] = True
            text = one_chunk(pc.replace_with_mask(text, pa.array(mask), redo))
            failed[rows] = (codes >= 0) & failed_u[np.maximum(codes, 0)]
        missing = bool_mask(pc.is_null(text)) & ~failed
        return _Part(text, None, None, missing, failed, none.copy(), number_facts(text))
    arr = (
        _object_strings(series) if not field.spec and pd.api.types.is_object_dtype(dtype) else None
    )
    if arr is None and not field.spec and is_string_dtype(dtype):
        arr = one_chunk(pa.array(series.array)).cast(LARGE_STRING)
    if arr is not None:
        if _mostly_distinct(arr):  # a free-text column: measure it whole
            text, missing = _strip_and_missing(arr, blank_is_missing)
            if translit:
                text = transliterate_array(text)
            text = _with_nulls(text, missing)
            return _Part(text, None, None, missing, none, none.copy(), text_facts(text))
        encoded = pc.dictionary_encode(arr)
        table = one_chunk(encoded.dictionary).cast(LARGE_STRING)
        codes = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64)
        failed_u = odd_u = np.zeros(len(table), dtype=bool)
    else:
        table, codes, failed_u, odd_u = format_table(series, _formatter(field))
    table, missing_u = _strip_and_missing(table, blank_is_missing)
    if translit:
        table = transliterate_array(table)
    facts_u = text_facts(table)
    if not len(table):
        return _Part(
            pa.nulls(n, LARGE_STRING), None, None, ~none, none, none.copy(), facts_u.take(codes)
        )
    has = codes >= 0
    safe = np.maximum(codes, 0)
    failed = has & failed_u[safe]
    odd = has & odd_u[safe]
    missing = (~has | missing_u[safe]) & ~failed & ~odd
    rows = np.where(missing | failed | odd, -1, codes)
    return _Part(None, table, rows, missing, failed, odd, facts_u.take(rows))


def _with_nulls(text: pa.Array, null: np.ndarray[Any, Any]) -> pa.Array:
    if not null.any():
        return text
    return one_chunk(pc.if_else(pa.array(null), pa.scalar(None, LARGE_STRING), text))


def column_piece(series: pd.Series, *, translit: bool = False) -> Piece:
    """The text column: trimmed; null or ``nan``-like is missing, blank stays blank (so
    it becomes ``text_empty``: an SMS cannot be empty), a cell that is not one value is
    odd; measured once per distinct text when texts repeat."""
    return _piece(series, TemplateField(series.name), blank_is_missing=False, translit=translit)


def column_text(
    series: pd.Series, field: TemplateField | None = None, *, blank_is_missing: bool = True
) -> Piece:
    """One column rendered as text for a template field (or as the text column).

    Returns a :class:`Piece`: Arrow text (null where missing, failed or odd) and the three
    masks. String values are trimmed; ``nan``-like strings count as missing, and so do
    blank ones unless ``blank_is_missing=False`` (``blank="keep"``: rendered as empty).
    Formatting runs once per distinct value.
    """
    field = field or TemplateField(series.name)
    return _piece(series, field, blank_is_missing=blank_is_missing, translit=False)


@dataclass
class Rendered:
    """A filled template: texts and, per row, the first field at fault (-1 if none):
    whose value is missing, cannot be formatted, or is not one value (odd)."""

    text: pa.Array
    missing_at: np.ndarray[Any, Any]
    failed_at: np.ndarray[Any, Any]
    odd_at: np.ndarray[Any, Any]
    columns: list[Hashable]
    facts: TextFacts


def render_template(
    df: pd.DataFrame,
    template: str,
    *,
    translit: bool = False,
    keep_blank: Collection[Hashable] = (),
) -> Rendered:
    """Fill ``template`` from ``df``'s columns, vectorised, once per distinct value.

    Returns a :class:`Rendered`: text (null where a used value is missing, cannot be
    formatted or is not one value), per row the position in ``columns`` of the first
    field whose value is missing (-1 if none), the same for a format failure and for a
    value that is not one value, the columns the fields read, and the texts'
    :class:`TextFacts`. With ``translit``, literals and values are transliterated. A
    blank (empty or whitespace-only) string is missing, except in the ``keep_blank``
    columns, where it is rendered as empty (and a text it leaves with spaces at an end
    is trimmed).

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
    # Field positions, -1 for none: the smallest type that holds them (a fresh process
    # pays for every page it touches; three int64 columns were 24 MB per million rows).
    at_type: type[np.signedinteger[Any]] = np.int16 if len(fields) < 2**15 else np.int64
    missing_at: np.ndarray[Any, Any] = np.full(n, -1, dtype=at_type)
    failed_at: np.ndarray[Any, Any] = np.full(n, -1, dtype=at_type)
    odd_at: np.ndarray[Any, Any] = np.full(n, -1, dtype=at_type)
    kept_blank = np.zeros(n, dtype=bool)
    facts = literal_facts("".join(literals), n)
    consumed = False  # literals[i] already joined to the previous field's values
    for i, field in enumerate(fields):
        column = df[field.column]
        if isinstance(column, pd.DataFrame):
            raise InputError(f"template field {{{field.column}}}: the column name is not unique")
        _check_spec(field, column)
        piece = _part(
            column, field, blank_is_missing=field.column not in keep_blank, translit=translit
        )
        missing_at[(missing_at < 0) & piece.missing] = i
        failed_at[(failed_at < 0) & piece.failed] = i
        odd_at[(odd_at < 0) & piece.odd] = i
        if field.column in keep_blank:
            kept_blank |= piece.facts.length == 0
        facts = facts + piece.facts
        before = "" if consumed else literals[i]
        if piece.table is not None and len(piece.table):
            # Few distinct values: the literals on both sides are joined to them once
            # and the rows take the result (joining every row costs per piece joined).
            left, right = (pa.scalar(t, LARGE_STRING) for t in (before, literals[i + 1]))
            table = pc.binary_join_element_wise(left, piece.table, right, _NO_SEPARATOR)
            pieces.append(piece.spread(one_chunk(table)))
            consumed = True
            continue
        if before:
            pieces.append(pa.scalar(before, LARGE_STRING))
        pieces.append(piece.spread())
        consumed = False
    if literals[-1] and not consumed:
        pieces.append(pa.scalar(literals[-1], LARGE_STRING))
    columns = [f.column for f in fields]
    if not fields:
        text = pa.array([literals[0]] * n, type=LARGE_STRING)
    elif len(pieces) == 1:
        text = one_chunk(pieces[0])
    else:
        text = one_chunk(pc.binary_join_element_wise(*pieces, _NO_SEPARATOR))
    if kept_blank.any():
        # "Hola Ana. {nota}" with a blank nota ends in a space: trim what it left.
        text, facts = _trim_rows(text, facts, kept_blank)
    return Rendered(text, missing_at, failed_at, odd_at, columns, facts)


def _trim_rows(
    text: pa.Array, facts: TextFacts, rows_mask: np.ndarray[Any, Any]
) -> tuple[pa.Array, TextFacts]:
    """``text`` with the ``rows_mask`` rows trimmed at both ends, and their facts redone."""
    rows = np.flatnonzero(rows_mask)
    trimmed = one_chunk(pc.utf8_trim_whitespace(text.take(pa.array(rows))))
    redone = text_facts(trimmed)
    facts = TextFacts(
        facts.length.copy(),
        facts.nbytes.copy(),
        facts.gsm.copy(),
        facts.flagged.copy(),
        facts.basic.copy(),
    )
    facts.length[rows], facts.nbytes[rows] = redone.length, redone.nbytes
    facts.gsm[rows], facts.flagged[rows] = redone.gsm, redone.flagged
    facts.basic[rows] = redone.basic
    return scatter(text, rows_mask, trimmed), facts
