"""SMS texts as carriers see them: GSM-7/UCS-2, segments, transliteration, and the checks.

Everything works on whole columns with Arrow string kernels; Python runs only for the
rare rows that need exact per-character work (long texts split across segments).
Templates are filled in :mod:`.templates`; this module measures and checks the texts.

Carrier rules (3GPP TS 23.038 / 23.040): a text made only of GSM-7 characters is sent in
7-bit form, 160 septets in one SMS or 153 per part of a concatenated SMS; the extension
table characters (``^ { } \\ [ ~ ] | €`` and form feed) take two septets and are never
split across parts. Any other character forces UCS-2: 70 UTF-16 code units in one SMS or
67 per part; an emoji outside the BMP takes two units and is never split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from .arrow import LARGE_STRING, bool_mask, one_chunk, scatter

__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "LONG_TEXT_POLICIES",
    "MAX_TEXT_LENGTH",
    "TEXT_REASONS",
    "TRANSLITERATION",
    "TextCheck",
    "TextFacts",
    "check_texts",
    "literal_facts",
    "number_facts",
    "segment_count",
    "split_text",
    "text_facts",
    "transliterate",
    "transliterate_array",
    "transliterate_str",
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
NOT_SCALAR = "text_not_scalar"
FORMAT_ERROR = "text_format_error"
EMPTY = "text_empty"
CONTROL = "text_control_chars"
SEPARATOR = "text_separator"
TOO_LONG = "text_too_long"
#: Text reason codes in precedence order; index + 1 is the internal int8 code.
TEXT_REASONS: tuple[str, ...] = (
    MISSING_VALUE,
    NOT_SCALAR,
    FORMAT_ERROR,
    EMPTY,
    CONTROL,
    SEPARATOR,
    TOO_LONG,
)
_CODE = {name: i + 1 for i, name in enumerate(TEXT_REASONS)}


def _re_class(chars: str) -> str:
    return "[" + "".join(f"\\x{{{ord(c):04X}}}" for c in chars) + "]"


_GSM_ALL = _re_class(GSM7_BASIC + GSM7_EXTENSION)
_NOT_BASIC = "[^" + _re_class(GSM7_BASIC)[1:]
_GSM_FULLMATCH = f"^{_GSM_ALL}*$"
_GSM_EXT = _re_class(GSM7_EXTENSION)
_ASTRAL = r"[\x{10000}-\x{10FFFF}]"
# docs/protocol.md §5.5 lets a text carry newlines (GSM-7 has LF and CR); every other C0/C1 control
# character is refused: carriers drop or mangle them.
_CONTROL = r"[\x{00}-\x{09}\x{0B}-\x{0C}\x{0E}-\x{1F}\x{7F}-\x{9F}]"
_CONTROL_OR_SEPARATOR = r"[\x{00}-\x{09}\x{0B}-\x{0C}\x{0E}-\x{1F}\x{7F}-\x{9F}|]"
_CONTROL_PY = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_GSM_CHARS = frozenset(GSM7_BASIC + GSM7_EXTENSION)
_ASCII_REPLACED = sorted(c for c in TRANSLITERATION if c.isascii())
_BASIC_CHARS = frozenset(GSM7_BASIC)


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
    # GSM-7 basic characters only: one unit each, nothing flagged (most texts; the
    # finer checks run on the other rows only)
    basic: np.ndarray[Any, Any]

    def take(self, rows: np.ndarray[Any, Any]) -> TextFacts:
        """Facts of ``rows`` (-1 = no value: empty facts)."""
        if not len(self.length):
            empty = np.zeros(len(rows), dtype=np.int64)
            return TextFacts(empty, empty.copy(), empty == 0, empty != 0, empty == 0)
        safe = np.maximum(rows, 0)
        none = rows < 0
        return TextFacts(
            length=np.where(none, 0, self.length[safe]),
            nbytes=np.where(none, 0, self.nbytes[safe]),
            gsm=np.where(none, True, self.gsm[safe]),
            flagged=np.where(none, False, self.flagged[safe]),
            basic=np.where(none, True, self.basic[safe]),
        )

    def __add__(self, other: TextFacts) -> TextFacts:
        return TextFacts(
            length=self.length + other.length,
            nbytes=self.nbytes + other.nbytes,
            gsm=self.gsm & other.gsm,
            flagged=self.flagged | other.flagged,
            basic=self.basic & other.basic,
        )


def text_facts(text: pa.Array) -> TextFacts:
    """Measure texts with vectorised kernels (nulls measure as empty).

    One pass finds the texts of GSM-7 basic characters only; the GSM-7 and control
    character checks run on the others (control characters and '|' are not basic).
    """
    n = len(text)
    basic = ~bool_mask(pc.match_substring_regex(text, _NOT_BASIC))
    gsm = np.ones(n, dtype=bool)
    flagged = np.zeros(n, dtype=bool)
    rest = np.flatnonzero(~basic)
    if len(rest):
        other = text.take(pa.array(rest)) if len(rest) < n else text
        gsm[rest] = bool_mask(pc.fill_null(pc.match_substring_regex(other, _GSM_FULLMATCH), True))
        flagged[rest] = bool_mask(pc.match_substring_regex(other, _CONTROL_OR_SEPARATOR))
    return TextFacts(
        length=pc.fill_null(pc.utf8_length(text), 0).to_numpy().astype(np.int64),
        nbytes=pc.fill_null(pc.binary_length(text), 0).to_numpy().astype(np.int64),
        gsm=gsm,
        flagged=flagged,
        basic=basic,
    )


def number_facts(text: pa.Array) -> TextFacts:
    """Numbers rendered by format(): ASCII digits and signs, GSM-7, never flagged."""
    nbytes = pc.fill_null(pc.binary_length(text), 0).to_numpy().astype(np.int64)
    n = len(text)
    return TextFacts(
        nbytes, nbytes.copy(), np.ones(n, dtype=bool), np.zeros(n, dtype=bool), np.ones(n, bool)
    )


def literal_facts(literal: str, n: int) -> TextFacts:
    """The facts of one literal text repeated on ``n`` rows (a template's fixed part)."""
    return TextFacts(
        length=np.full(n, len(literal), dtype=np.int64),
        nbytes=np.full(n, len(literal.encode("utf-8")), dtype=np.int64),
        gsm=np.full(n, all(c in _GSM_CHARS for c in literal), dtype=bool),
        flagged=np.full(n, "|" in literal or bool(_CONTROL_PY.search(literal)), dtype=bool),
        basic=np.full(n, all(c in _BASIC_CHARS for c in literal), dtype=bool),
    )


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
        result = transliterate_array(one_chunk(pa.array(series.astype("string[pyarrow]").array)))
        return pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([result])), index=series.index)
    return transliterate_array(one_chunk(text))


def transliterate_str(text: str) -> str:
    """:func:`transliterate` for one Python string (a template's literal)."""
    return "".join(TRANSLITERATION.get(c, c) for c in text)


def transliterate_array(arr: pa.Array) -> pa.Array:
    """:func:`transliterate` on an Arrow string array: one pass per character present."""
    arr = one_chunk(arr.cast(LARGE_STRING))
    # Only non-ASCII text (or a tab or backtick, the ASCII characters replaced) can
    # hold a character to replace: the search runs on those rows alone.
    odd = ~bool_mask(pc.string_is_ascii(arr))
    for char in _ASCII_REPLACED:
        odd |= bool_mask(pc.match_substring(arr, char))
    rows = np.flatnonzero(odd)
    if not len(rows):
        return arr
    some = len(rows) < len(arr)
    sub = one_chunk(arr.take(pa.array(rows))) if some else arr
    leftover = pc.replace_substring_regex(sub, f"{_GSM_ALL}+", "")
    present = set("".join(s for s in pc.unique(leftover).to_pylist() if s))
    chars = sorted(present & TRANSLITERATION.keys())
    if not chars:
        return arr
    for char in chars:
        sub = pc.replace_substring(sub, char, TRANSLITERATION[char])
    return scatter(arr, odd, sub) if some else one_chunk(sub)


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
    not_scalar: np.ndarray[Any, Any] | None = None,
    long_text: str = "error",
    do_transliterate: bool = False,
    facts: TextFacts | None = None,
) -> TextCheck:
    """Check final texts; compute encoding, segments and parts, vectorised.

    Parameters
    ----------
    text : pyarrow string array
        The texts (null where a value was missing or failed to format).
    missing, failed, not_scalar : bool arrays, optional
        Rows whose text is null because a used value is missing / failed to format / is
        not one value (a list, a dict...). A row with a missing value is
        ``text_missing_value``, else ``text_not_scalar``, else ``text_format_error``.
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
    text = one_chunk(text).cast(LARGE_STRING)
    n = len(text)
    if do_transliterate:
        text = transliterate_array(text)
        facts = None
    if facts is None:
        facts = text_facts(text)
    code = np.zeros(n, dtype=np.int8)
    null = bool_mask(pc.is_null(text))
    # blank: empty, or whitespace only (one pass, no trimmed copy)
    blank = (bool_mask(pc.utf8_is_space(text)) | (facts.length == 0)) & ~null
    # Control characters and '|' were found in one pass; the rare hits are told apart.
    control = np.zeros(n, dtype=bool)
    separator = np.zeros(n, dtype=bool)
    odd = np.flatnonzero(facts.flagged & ~null)
    if len(odd):
        flagged = text.take(pa.array(odd))
        control[odd] = bool_mask(pc.match_substring_regex(flagged, _CONTROL))
        separator[odd] = bool_mask(pc.match_substring(flagged, "|"))
    length, nbytes, gsm = facts.length.copy(), facts.nbytes.copy(), facts.gsm & ~null
    basic = facts.basic.copy()
    long = length > MAX_TEXT_LENGTH

    parts = np.ones(n, dtype=np.int64)
    if long_text == "error":
        code[long] = _CODE[TOO_LONG]
    long_rows = np.flatnonzero(long & ~control & ~separator & ~blank)
    if len(long_rows) and long_text == "truncate":
        cut = [_truncate(str(t)) for t in text.take(pa.array(long_rows)).to_pylist()]
        mask = np.zeros(n, dtype=bool)
        mask[long_rows] = True
        cut_arr = pa.array(cut, LARGE_STRING)
        text = one_chunk(pc.replace_with_mask(text, pa.array(mask), cut_arr))
        cut_facts = text_facts(cut_arr)
        length[long_rows], nbytes[long_rows] = cut_facts.length, cut_facts.nbytes
        gsm[long_rows] = cut_facts.gsm
        basic[long_rows] = cut_facts.basic
    elif len(long_rows) and long_text == "split":
        parts[long_rows] = [
            len(split_text(str(t))) for t in text.take(pa.array(long_rows)).to_pylist()
        ]
    code[separator] = _CODE[SEPARATOR]
    code[control] = _CODE[CONTROL]
    code[blank] = _CODE[EMPTY]
    code[null] = _CODE[MISSING_VALUE]
    settled = missing if missing is not None else np.zeros(n, dtype=bool)
    if failed is not None:
        code[null & failed & ~settled] = _CODE[FORMAT_ERROR]
    if not_scalar is not None:
        code[null & not_scalar & ~settled] = _CODE[NOT_SCALAR]
    # Most texts fit one SMS whatever they contain: the most units a text can take is
    # twice its GSM-7 length (every character an escape pair) or, for UCS-2, its length
    # plus one unit per 4-byte character (each 3 bytes over). Only texts whose most
    # could pass one SMS are counted exactly.
    segments = np.ones(n, dtype=np.int64)
    cand = np.flatnonzero((length > 35) | (parts > 1))
    c_len, c_gsm = length[cand], gsm[cand]
    # (GSM-7 basic characters only: one unit each, the length is the count.)
    most = c_len + np.where(c_gsm, np.where(basic[cand], 0, c_len), (nbytes[cand] - c_len) // 3)
    need = cand[(most > np.where(c_gsm, 160, 70)) | (parts[cand] > 1)]
    if len(need):
        n_len, n_gsm = length[need], gsm[need]
        extra = np.zeros(len(need), dtype=np.int64)
        for rows_mask, pattern in ((n_gsm & ~basic[need], _GSM_EXT), (~n_gsm, _ASTRAL)):
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
