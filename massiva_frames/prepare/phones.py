"""Phone normalisation: the formats people really have, to the API's 12-digit form.

docs/protocol.md §1: a phone is 12 characters for Venezuela, ``58`` + operator code (``412``,
``414``, ``416``, ``424``, ``426``) + 7 digits. The fast path is vectorised over the whole
column with Arrow string kernels; numbers of other countries (and a non-Venezuelan
default country) go through :mod:`phonenumbers`, once per distinct value, for only the
rows that need it. The provider documents Venezuelan mobiles only, so a valid number of
another country is refused (``phone_international``) unless ``allow_international=True``.

Accepted shapes (separators: spaces of any kind, ``.``, ``-``, ``/``, parentheses,
Unicode dashes): ``584141234567``, ``+58 414-123.45.67``, ``0414 1234567``,
``(0414) 123-4567``, ``4141234567``, ``00584141234567``, ``+58 (0) 414 1234567``,
integers, floats such as ``584141234567.0`` (Excel), scientific notation such as
``5.84141234567E+11`` when every digit is present, a leading Excel apostrophe. Cells
that are not strings are first turned into digit text by :mod:`.cells`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from .arrow import LARGE_STRING, bool_mask, one_chunk, scatter
from .cells import cells_as_text

__all__ = [
    "API_PHONE_LENGTH",
    "DEFAULT_COUNTRY",
    "DEFAULT_OPERATORS",
    "OPERATOR_NAMES",
    "PHONE_REASONS",
    "normalize_phones",
]

DEFAULT_COUNTRY = "58"
#: docs/protocol.md §1: the operator codes the provider lists.
DEFAULT_OPERATORS: tuple[str, ...] = ("412", "414", "416", "424", "426")
#: Who runs each Venezuelan mobile code (422 is Digitel's newer range: opt in).
OPERATOR_NAMES: dict[str, str] = {
    "412": "Digitel",
    "422": "Digitel",
    "414": "Movistar",
    "424": "Movistar",
    "416": "Movilnet",
    "426": "Movilnet",
}
#: docs/protocol.md §1: a phone is at most 12 characters.
API_PHONE_LENGTH = 12

MISSING = "phone_missing"
NOT_A_NUMBER = "phone_not_a_number"
TRUNCATED = "phone_truncated"
WRONG_LENGTH = "phone_wrong_length"
UNKNOWN_OPERATOR = "phone_unknown_operator"
LANDLINE = "phone_landline"
UNKNOWN_COUNTRY = "phone_unknown_country"
INTERNATIONAL = "phone_international"
TOO_LONG = "phone_too_long"

#: Reason codes in precedence order; index + 1 is the internal int8 code (0 = valid).
PHONE_REASONS: tuple[str, ...] = (
    MISSING,
    NOT_A_NUMBER,
    TRUNCATED,
    WRONG_LENGTH,
    UNKNOWN_COUNTRY,
    INTERNATIONAL,
    LANDLINE,
    UNKNOWN_OPERATOR,
    TOO_LONG,
)
_CODE = {name: i + 1 for i, name in enumerate(PHONE_REASONS)}

_SPACES = (
    " \t\n\r\v\f\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u200b\u200c\u200d\u2028\u2029\u202f\u205f\u2060\u3000\ufeff"
)
# Leading/trailing junk: whitespace of any kind, Excel's text apostrophe, quotes.
_TRIM = _SPACES + "'\"`\u2018\u2019\u201c\u201d"
# Separators people put between digit groups (RE2 syntax: Arrow's regex engine).
_SEPARATORS = (
    r"[\s\x{00A0}\x{1680}\x{2000}-\x{200D}\x{2028}\x{2029}\x{202F}\x{205F}\x{2060}"
    r"\x{3000}\x{FEFF}.\-/()\[\]\x{2010}-\x{2015}\x{2212}\x{FE58}\x{FE63}\x{FF0D}]"
)
# Words people type for "no phone"; compared after trimming and lower-casing.
_MISSING_TOKENS = ["nan", "none", "null", "n/a", "na", "<na>", "nat", "s/n", "sin numero"]
# Excel/pandas float rendering: the whole value is digits, a dot and zeros only. Anchored
# on both ends so dotted groups such as ``0414.123.57.00`` are left to the separator step.
_FLOAT_RE = r"^([0-9]+)\.0+$"
_SCI_RE = r"^[0-9]+(?:[.,][0-9]+)?[eE][+]?[0-9]+$"


def check_country(country: str | int) -> str:
    """Return ``country`` as a calling code without ``+`` (``"58"``), or raise InputError."""
    import phonenumbers

    text = str(country).strip().lstrip("+")
    if not text.isdigit() or phonenumbers.region_code_for_country_code(int(text)) == "ZZ":
        raise InputError(f"country: {country!r} is not a known calling code (e.g. '58')")
    return str(int(text))


def check_operators(operators: Iterable[str | int]) -> tuple[str, ...]:
    """Return operator codes as 3-digit strings, or raise InputError naming the bad one."""
    if isinstance(operators, str | int):
        operators = [operators]
    out = []
    for op in operators:
        code = str(op).strip()
        if len(code) != 3 or not code.isdigit():
            raise InputError(f"operators: {op!r} is not a 3-digit operator code (e.g. '414')")
        out.append(code)
    if not out:
        raise InputError("operators: at least one operator code is needed")
    return tuple(out)


def _scientific(text: str) -> tuple[str | None, str | None]:
    """``5.84141234567E+11`` -> digits when no digit was lost, else a reason code."""
    mantissa, _, exponent = text.replace(",", ".").lower().partition("e")
    whole, _, fraction = mantissa.partition(".")
    exp = int(exponent.lstrip("+"))
    if exp > 20:
        return None, WRONG_LENGTH
    fraction = fraction.rstrip("0")
    if len(fraction) > exp:
        return None, NOT_A_NUMBER  # not an integer: no phone
    digits = (whole + fraction).lstrip("0") + "0" * (exp - len(fraction))
    # Excel shows ~6 significant digits in scientific notation: if the mantissa is
    # shorter than the number, the trailing zeros are invented. Refuse to guess.
    if exp > len(fraction):
        return None, TRUNCATED
    return digits, None


def _via_phonenumbers(
    values: Sequence[str], region: str | None
) -> tuple[list[str | None], list[int], list[int]]:
    """The slow path, once per distinct value: E.164 digits (no ``+``) or a reason, and
    the calling code the number was read with (0 when it could not be read)."""
    import phonenumbers
    from phonenumbers import NumberParseException, PhoneNumberType, ValidationResult

    err = NumberParseException
    parse_reasons = {
        err.INVALID_COUNTRY_CODE: UNKNOWN_COUNTRY,
        err.NOT_A_NUMBER: NOT_A_NUMBER,
        err.TOO_SHORT_AFTER_IDD: WRONG_LENGTH,
        err.TOO_SHORT_NSN: WRONG_LENGTH,
        err.TOO_LONG: WRONG_LENGTH,
    }
    mobile = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}
    phones: list[str | None] = []
    codes: list[int] = []
    calling: list[int] = []
    for value in values:
        phone, reason, country = None, None, 0
        try:
            number = phonenumbers.parse(value, region)
        except NumberParseException as exc:
            reason = parse_reasons.get(exc.error_type, NOT_A_NUMBER)
        else:
            country = int(number.country_code or 0)
            possible = phonenumbers.is_possible_number_with_reason(number)
            if possible == ValidationResult.INVALID_COUNTRY_CODE:
                reason = UNKNOWN_COUNTRY
            elif possible not in (ValidationResult.IS_POSSIBLE,):
                reason = WRONG_LENGTH
            elif not phonenumbers.is_valid_number(number):
                reason = UNKNOWN_OPERATOR
            else:
                kind = phonenumbers.number_type(number)
                if kind == PhoneNumberType.FIXED_LINE:
                    reason = LANDLINE
                elif kind not in mobile:
                    reason = UNKNOWN_OPERATOR
                else:
                    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
                    phone = e164.lstrip("+")
                    if len(phone) > API_PHONE_LENGTH:
                        phone, reason = None, TOO_LONG
        phones.append(phone)
        codes.append(0 if reason is None else _CODE[reason])
        calling.append(country)
    return phones, codes, calling


def _where(mask: np.ndarray[Any, Any], arr: pa.Array, kernel: Any) -> pa.Array:
    """Apply a string kernel to the ``mask`` rows only and put the results back."""
    rows = np.flatnonzero(mask)
    if not len(rows):
        return arr
    return scatter(arr, mask, kernel(arr.take(pa.array(rows))))


def _clean_formatted(
    trimmed: pa.Array,
) -> tuple[pa.Array, np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any], list[Any]]:
    """Rows that are not plain digits: placeholders, Excel floats, separators.

    Returns the digits (with a leading ``+`` kept), and masks: missing, not a number,
    scientific notation; plus the reason codes decided for scientific rows. The
    narrower patterns run only on the rows a cheap literal test picks out.
    """
    n = len(trimmed)
    short = np.flatnonzero(pc.binary_length(trimmed).to_numpy() <= 10)
    missing = np.zeros(n, dtype=bool)
    if len(short):
        tokens = pa.array(_MISSING_TOKENS, LARGE_STRING)
        lowered = pc.utf8_lower(trimmed.take(pa.array(short)))
        missing[short] = bool_mask(pc.is_in(lowered, value_set=tokens))
    excel = bool_mask(pc.ends_with(trimmed, "0")) & bool_mask(pc.match_substring(trimmed, "."))
    trimmed = _where(excel, trimmed, lambda t: pc.replace_substring_regex(t, _FLOAT_RE, r"\1"))
    digits = pc.replace_substring_regex(trimmed, _SEPARATORS, "")
    missing |= bool_mask(pc.equal(digits, ""))
    maybe_sci = np.flatnonzero(bool_mask(pc.match_substring(trimmed, "e", ignore_case=True)))
    sci = maybe_sci[bool_mask(pc.match_substring_regex(trimmed.take(pa.array(maybe_sci)), _SCI_RE))]
    sci = sci[~missing[sci]]
    sci_codes: list[str | None] = []
    if len(sci):
        settled = [_scientific(str(v)) for v in trimmed.take(pa.array(sci)).to_pylist()]
        mask = np.zeros(n, dtype=bool)
        mask[sci] = True
        digits = scatter(digits, mask, pa.array([d for d, _ in settled], type=LARGE_STRING))
        sci_codes = [reason for _, reason in settled]
    shape = bool_mask(pc.match_substring_regex(trimmed, r"^[0-9+(]")) & bool_mask(
        pc.match_substring_regex(digits, r"^\+?[0-9]+$")
    )
    shape[sci] = True
    return digits, missing, ~shape & ~missing, sci, sci_codes


def _normalize_text(
    text: pa.Array,
    bad: np.ndarray[Any, Any],
    *,
    country: str,
    operators: tuple[str, ...],
    allow_international: bool,
) -> tuple[pa.Array, np.ndarray[Any, Any]]:
    """Vectorised core on Arrow text: (12-digit phones or null, int8 reason codes)."""
    n = len(text)
    code = np.zeros(n, dtype=np.int8)
    trimmed = pc.utf8_trim(text, characters=_TRIM)
    missing = bool_mask(pc.is_null(trimmed)) & ~bad
    not_number = bad.copy()
    # Most cells are plain digits: the regex work runs on the others only.
    formatted = ~bool_mask(pc.ascii_is_decimal(trimmed)) & ~missing & ~bad
    digits = trimmed
    rows = np.flatnonzero(formatted)
    if len(rows):
        sub_digits, sub_missing, sub_bad, sci, sci_codes = _clean_formatted(
            trimmed.take(pa.array(rows))
        )
        digits = scatter(trimmed, formatted, sub_digits)
        missing[rows] = sub_missing
        not_number[rows] = sub_bad
        code[rows[sci]] = [0 if c is None else _CODE[c] for c in sci_codes]

    plus = bool_mask(pc.starts_with(digits, "+"))
    idd = ~plus & bool_mask(pc.starts_with(digits, "00"))
    intl = plus | idd
    prefix = plus.astype(np.int64) + 2 * idd
    # digits after the international prefix
    length = pc.fill_null(pc.binary_length(digits), 0).to_numpy().astype(np.int64) - prefix

    def starts(*options: str) -> np.ndarray[Any, Any]:
        out = np.zeros(n, dtype=bool)
        for option in options:
            out |= bool_mask(pc.starts_with(digits, option))
        return out

    is58 = np.where(intl, starts("+58", "0058"), starts("58"))
    is580 = np.where(intl, starts("+580", "00580"), starts("580"))
    zero = ~intl & starts("0")
    # docs/protocol.md §1: 58 + 10 national digits. The last 10 digits are the national number in
    # every accepted shape: 4141234567, 04141234567, 584141234567, 5804141234567.
    with_cc = ((length == 12) & is58 & ~is580) | ((length == 13) & is580)
    venezuelan = with_cc | (~intl & (((length == 10) & ~zero) | ((length == 11) & zero)))
    slow_intl = intl & ~is58
    slow_domestic = np.zeros(n, dtype=bool)
    if country != DEFAULT_COUNTRY:
        # Numbers without a prefix belong to ``country``: phonenumbers knows its plan.
        slow_domestic = ~intl
        venezuelan &= intl
    valid_shape = ~missing & ~not_number & (code == 0)

    national = pc.utf8_slice_codeunits(digits, -10)
    operator = pc.utf8_slice_codeunits(national, 0, 3)
    known = bool_mask(pc.is_in(operator, value_set=pa.array(list(operators), LARGE_STRING)))
    landline = bool_mask(pc.starts_with(operator, "2"))
    phone = pc.binary_join_element_wise(
        pa.scalar(DEFAULT_COUNTRY, LARGE_STRING), national, pa.scalar("", LARGE_STRING)
    )

    code[valid_shape & venezuelan & ~known & landline] = _CODE[LANDLINE]
    code[valid_shape & venezuelan & ~known & ~landline] = _CODE[UNKNOWN_OPERATOR]
    code[valid_shape & ~venezuelan & ~slow_intl & ~slow_domestic] = _CODE[WRONG_LENGTH]
    code[not_number] = _CODE[NOT_A_NUMBER]
    code[missing] = _CODE[MISSING]
    ok = valid_shape & venezuelan & known

    slow = valid_shape & (slow_intl | slow_domestic)
    if not allow_international and country != DEFAULT_COUNTRY:
        # A valid +58 number is abroad for another home country; an invalid one keeps
        # its own reason (the first thing to fix).
        abroad = ok & intl
        code[abroad] = _CODE[INTERNATIONAL]
        ok &= ~abroad
    if slow.any():
        phone = _apply_slow(phone, digits, slow, prefix, code, ok, country, allow_international)
    return _with_validity(one_chunk(phone), ok & (code == 0)), code


def _with_validity(arr: pa.Array, valid: np.ndarray[Any, Any]) -> pa.Array:
    """``arr`` with nulls wherever ``valid`` is False (no copy of the string data)."""
    bitmap = pa.array(valid, type=pa.bool_()).buffers()[1]
    buffers = arr.buffers()
    if arr.offset:
        return pc.if_else(pa.array(valid), arr, pa.scalar(None, arr.type))
    return pa.Array.from_buffers(arr.type, len(arr), [bitmap, *buffers[1:]])


def _apply_slow(
    phone: pa.Array,
    digits: pa.Array,
    slow: np.ndarray[Any, Any],
    prefix: np.ndarray[Any, Any],
    code: np.ndarray[Any, Any],
    ok: np.ndarray[Any, Any],
    country: str,
    allow_international: bool,
) -> pa.Array:
    """Settle the ``slow`` rows with phonenumbers (in place on ``code``/``ok``).

    Without ``allow_international``, a number of another country that would otherwise
    be sent (or is only too long for the API) is ``phone_international``; one that is
    not a valid number at all keeps its own reason.
    """
    import phonenumbers

    region = phonenumbers.region_code_for_country_code(int(country))
    rows = np.flatnonzero(slow)
    values = digits.take(pa.array(rows)).to_pylist()
    keyed = [
        ("+" + str(v)[int(p) :], None) if p else (str(v), region)
        for v, p in zip(values, prefix[rows], strict=True)
    ]
    # Once per distinct (value, region): the rows of one file repeat numbers.
    distinct = list(dict.fromkeys(keyed))
    settled: dict[tuple[str, str | None], tuple[str | None, int, int]] = {}
    for region_code in sorted({r for _, r in distinct}, key=str):
        group = [k for k in distinct if k[1] == region_code]
        got = _via_phonenumbers([v for v, _ in group], region_code)
        settled.update(zip(group, zip(*got, strict=True), strict=True))
    row_phones = [settled[k][0] for k in keyed]
    row_codes = np.fromiter((settled[k][1] for k in keyed), np.int8, len(keyed))
    if not allow_international:
        home = int(country)
        abroad = np.fromiter((settled[k][2] not in (0, home) for k in keyed), bool, len(keyed))
        foreign = abroad & np.isin(row_codes, (0, _CODE[TOO_LONG]))
        row_codes[foreign] = _CODE[INTERNATIONAL]
        row_phones = [None if f else p for p, f in zip(row_phones, foreign, strict=True)]
    code[rows] = row_codes
    ok[rows] = row_codes == 0
    mask = np.zeros(len(digits), dtype=bool)
    mask[rows] = True
    return pc.replace_with_mask(phone, pa.array(mask), pa.array(row_phones, type=LARGE_STRING))


def _codes_to_reason(code: np.ndarray[Any, Any]) -> pa.Array:
    indices = pa.array(code.astype(np.int16) - 1, mask=code == 0)
    return pa.array(list(PHONE_REASONS), LARGE_STRING).take(indices)


def _string_series(arr: pa.Array, index: pd.Index) -> pd.Series:
    return pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([arr])), index=index, copy=False)


def normalize_phones(
    values: pd.Series | Sequence[Any] | pd.Index | np.ndarray[Any, Any],
    *,
    country: str | int = DEFAULT_COUNTRY,
    operators: Iterable[str | int] = DEFAULT_OPERATORS,
    allow_international: bool = False,
) -> pd.DataFrame:
    """Normalise phones to the API's form (``584141234567``), vectorised.

    Parameters
    ----------
    values : Series, Index, array or list
        Phones as people have them: strings in any common format, integers, floats
        from Excel, missing values, or junk. Never raises for a bad value.
    country : str or int, default "58"
        Calling code of numbers written without ``+``/``00``.
    operators : iterable of str, default ("412", "414", "416", "424", "426")
        Venezuelan mobile operator codes accepted (docs/protocol.md §1).
    allow_international : bool, default False
        The provider documents 12-digit Venezuelan mobiles only (docs/protocol.md §1):
        a valid number of another country is refused with ``phone_international``.
        True accepts such numbers (checked with :mod:`phonenumbers`) when their E.164
        digits fit in the API's 12 characters, for an account the provider lets send
        abroad.

    Returns
    -------
    DataFrame
        Same index as ``values``; ``phone`` (string, <NA> when rejected) and ``reason``
        (string code such as ``phone_landline``, <NA> when valid).

    Examples
    --------
    >>> normalize_phones(["+58 414-123.45.67", "0212 5551234", 4241234567.0])
              phone          reason
    0  584141234567            <NA>
    1          <NA>  phone_landline
    2  584241234567            <NA>
    """
    country = check_country(country)
    ops = check_operators(operators)
    if isinstance(values, pd.DataFrame):
        raise InputError("values: expected a Series or a list of phones, got a DataFrame")
    series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=None)
    if isinstance(values, pd.Index):
        series = pd.Series(values, index=values)
    if isinstance(series.dtype, pd.CategoricalDtype):
        # Work once per category, then spread by the codes.
        cats = normalize_phones(
            pd.Series(series.cat.categories),
            country=country,
            operators=ops,
            allow_international=allow_international,
        )
        codes = series.cat.codes.to_numpy()
        missing_row = pd.DataFrame(
            {"phone": pd.array([None], dtype="string"), "reason": pd.array([MISSING])}
        )
        table = pd.concat([cats, missing_row], ignore_index=True)
        out = table.iloc[np.where(codes < 0, len(cats), codes)].set_axis(series.index)
        return out.astype({"phone": "string", "reason": "string"})
    text, bad = cells_as_text(series)
    phone, code = _normalize_text(
        one_chunk(text),
        bad,
        country=country,
        operators=ops,
        allow_international=allow_international,
    )
    return pd.DataFrame(
        {
            "phone": _string_series(phone, series.index),
            "reason": _string_series(_codes_to_reason(code), series.index),
        },
        copy=False,
    )
