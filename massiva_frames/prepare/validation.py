"""``validate``: phones and texts checked on whole columns, one outcome per row.

A bad row never raises: it gets ``valid=False``, a ``state`` and a stable ``reason`` code
(:class:`Reason`). A wrong argument (not a DataFrame, empty frame, repeated index labels,
missing column, a template field that is not a plain column name) raises
:class:`~massiva_frames.errors.InputError` naming it.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from . import phones as _phones
from . import templates as _templates
from . import texts as _texts
from .reasons import Reason

__all__ = [
    "OUTPUT_COLUMNS",
    "STATES",
    "Reason",
    "failure_cases",
    "validate",
    "validation_summary",
]

#: Columns :func:`validate` adds, in order.
OUTPUT_COLUMNS = ("phone", "text", "valid", "state", "reason", "encoding", "segments", "parts")
#: ``state`` values a validated frame can hold.
STATES = ("ready", "invalid", "suppressed")
STATE_DTYPE = pd.CategoricalDtype(list(STATES))
ENCODING_DTYPE = pd.CategoricalDtype(["GSM-7", "UCS-2"])
DEDUPE_MODES = ("phone+text", "phone")
BLANK_MODES = ("missing", "keep")
#: Repeated index labels named in the error, at most.
SHOWN_LABELS = 5
FAILURE_COLUMNS = ["index", "column", "reason", "message", "value"]
VALUE_CHARS = 80
#: From this many rows, phones and texts are checked in two threads.
PARALLEL_ROWS = 20_000


# One int16 code space for every reason: 0 = none, then phone, text, suppression.
_ALL = [r.value for r in Reason]
_INDEX = {name: i + 1 for i, name in enumerate(_ALL)}
_LARGE = pa.large_string()


def _column(df: pd.DataFrame, name: Hashable, what: str) -> pd.Series:
    if name not in df.columns:
        shown = ", ".join(repr(c) for c in list(df.columns)[:10])
        raise InputError(f"{what}: no column {name!r} in the frame (columns: {shown})")
    col = df[name]
    if isinstance(col, pd.DataFrame):
        raise InputError(f"{what}: the column name {name!r} is not unique")
    return col


def _suppression_phones(
    suppress: Any, *, country: str, operators: tuple[str, ...]
) -> pa.Array | None:
    """The suppression list as normalised phones (Arrow), or None."""
    if suppress is None:
        return None
    values: Any
    if isinstance(suppress, str | os.PathLike):
        try:
            table = pd.read_parquet(suppress)
        except (FileNotFoundError, OSError, ValueError) as exc:
            raise InputError(
                f"suppress: cannot read parquet file {str(suppress)!r}: {exc}"
            ) from None
        values = _suppression_column(table)
    elif isinstance(suppress, pd.DataFrame):
        values = _suppression_column(suppress)
    elif isinstance(suppress, pd.Series | pd.Index | np.ndarray | list | tuple | set | frozenset):
        values = pd.Series(list(suppress) if isinstance(suppress, set | frozenset) else suppress)
    else:
        raise InputError(
            "suppress: expected phones (Series, list), a DataFrame with a 'phone' column or a "
            f"parquet path; got {type(suppress).__name__}"
        )
    # Every number the list holds, whatever validate() accepts: an opt-out abroad stays
    # an opt-out when the send is allowed abroad.
    normal = _phones.normalize_phones(
        values, country=country, operators=operators, allow_international=True
    )
    return pa.array(normal["phone"].dropna().array)


def _suppression_column(table: pd.DataFrame) -> pd.Series:
    if "phone" in table.columns:
        return _column(table, "phone", "suppress")
    if len(table.columns) == 1:
        return table.iloc[:, 0]
    raise InputError("suppress: the suppression frame needs a 'phone' column")


def _check_index(index: pd.Index) -> None:
    """Results join back by index label: a repeated label would multiply rows."""
    if index.is_unique:
        return
    repeated = index[index.duplicated()].unique()
    shown = ", ".join(repr(label) for label in repeated[:SHOWN_LABELS])
    more = f" and {len(repeated) - SHOWN_LABELS} more" if len(repeated) > SHOWN_LABELS else ""
    raise InputError(
        f"df: the index repeats labels ({shown}{more}): results join back to the input by "
        "index label, so each row needs its own; use df.reset_index() (or "
        "df.reset_index(drop=True)) and check df.index.is_unique"
    )


def _keep_blank(blank: Any, columns: pd.Index, used: list[Hashable]) -> frozenset[Hashable]:
    """The template columns whose blank strings are rendered as empty."""
    if isinstance(blank, str):
        if blank not in BLANK_MODES:
            raise InputError(f"blank: expected 'missing' or 'keep', got {blank!r}")
        return frozenset(used) if blank == "keep" else frozenset()
    if not isinstance(blank, Mapping):
        raise InputError(
            "blank: expected 'missing', 'keep' or a dict {column: 'missing' or 'keep'}, "
            f"got {type(blank).__name__}"
        )
    for column, mode in blank.items():
        if column not in columns:
            raise InputError(f"blank: no column {column!r} in the frame")
        if mode not in BLANK_MODES:
            raise InputError(
                f"blank: column {column!r}: expected 'missing' or 'keep', got {mode!r}"
            )
    return frozenset(column for column, mode in blank.items() if mode == "keep")


def _string(arr: pa.Array, index: pd.Index) -> pd.Series:
    if isinstance(arr, pa.ChunkedArray):
        chunked = arr
    else:
        chunked = pa.chunked_array([arr])
    return pd.Series(pd.arrays.ArrowStringArray(chunked), index=index, copy=False)


def _duplicates(phone: pa.Array, text: pa.Array, eligible: np.ndarray[Any, Any], mode: str) -> Any:
    """Rows repeating an earlier eligible row's phone (and text): first occurrence kept."""
    rows = np.flatnonzero(eligible)
    dup = np.zeros(len(eligible), dtype=bool)
    if len(rows) < 2:
        return dup
    # Normalised phones are at most 12 digits: compare them as integers (fast hashing).
    numbers = pd.Series(pc.cast(phone.take(pa.array(rows)), pa.int64()).to_numpy())
    if mode == "phone":
        dup[rows] = numbers.duplicated(keep="first").to_numpy()
        return dup
    # Same phone and same text: texts are compared only among rows sharing a phone.
    shared = numbers.duplicated(keep=False).to_numpy()
    if shared.any():
        sub = rows[shared]
        pairs = pd.DataFrame(
            {
                "phone": numbers.to_numpy()[shared],
                "text": pd.array(text.take(pa.array(sub)), dtype="string[pyarrow]"),
            }
        )
        dup[sub] = pairs.duplicated(keep="first").to_numpy()
    return dup


def validate(
    df: pd.DataFrame,
    *,
    phone: Hashable = "phone",
    text: Hashable | None = None,
    template: str | None = None,
    blank: str | Mapping[Hashable, str] = "missing",
    country: str | int = _phones.DEFAULT_COUNTRY,
    operators: Iterable[str | int] = _phones.DEFAULT_OPERATORS,
    long_text: str = "error",
    transliterate: bool = False,
    dedupe: str | None = "phone+text",
    suppress: Any = None,
    allow_international: bool = False,
) -> pd.DataFrame:
    """Check every row's phone and text; keep every row, column and the index.

    Parameters
    ----------
    df : DataFrame
        The input rows. Its index labels must be unique: results join back by them.
    phone : column label, default "phone"
        The column with phones in any common format (see :mod:`massiva_frames.prepare.phones`).
    text : column label, optional
        A column with each row's text. Exactly one of ``text`` and ``template``.
    template : str, optional
        A template filled from columns, e.g. ``"Hola {nombre}, su saldo es {saldo:,.2f}"``.
        Each field is a column name with an optional ``str.format`` spec; attribute
        access (``{nombre.upper}``), indexing (``{x[0]}``), conversions (``{x!r}``),
        nested specs and positional fields (``{}``, ``{0}``) raise InputError before any
        row is rendered. A missing value in a used column makes the row invalid
        (``text_missing_value``), never the word ``nan`` in an SMS; a cell that is not
        one value (a list, a dict...) makes it ``text_not_scalar``, never its ``repr``.
    blank : {"missing", "keep"} or dict, default "missing"
        What an empty or whitespace-only string in a template column means: missing
        (the row is ``text_missing_value``: no ``"Hola , ..."``), or, with ``"keep"``, an
        empty value rendered as empty text. A dict decides per column, e.g.
        ``blank={"nota": "keep"}`` for an optional field; other columns stay
        ``"missing"``. With ``text=``, a blank text is ``text_empty`` either way (an SMS
        cannot be empty).
    country : str, default "58"
        Calling code of numbers written without ``+``/``00``.
    operators : iterable of str
        Accepted Venezuelan mobile codes (docs/protocol.md §1: 412, 414, 416, 424, 426).
    long_text : {"error", "truncate", "split"}, default "error"
        Texts over 160 characters: invalid (``text_too_long``); cut to 157 characters plus
        ``...``; or sent as several messages (``parts``).
    transliterate : bool, default False
        Map characters GSM-7 lacks to the nearest GSM-7 letter (á->a, “->") so the SMS
        travels in 160-character segments instead of UCS-2's 70.
    dedupe : {"phone+text", "phone", None}, default "phone+text"
        Rows repeating an earlier row's phone and text (or phone only) are ``suppressed``
        with reason ``duplicate``; the first occurrence is kept. None keeps them all.
    suppress : Series, list, DataFrame or parquet path, optional
        Phones that must not be texted (opt-outs): rows with these phones are
        ``suppressed`` with reason ``opted_out``. A DataFrame or parquet file needs a
        ``phone`` column (or a single column). Phones are normalised the same way.
    allow_international : bool, default False
        The provider documents 12-digit Venezuelan mobiles only: a valid number of
        another country is ``phone_international``. True accepts numbers of other
        countries that fit in the API's 12 characters (for an account the provider lets
        send abroad).

    Returns
    -------
    DataFrame
        The input (index and columns kept; an input column named ``phone``/``text`` moves
        to ``phone_input``/``text_input``) plus ``phone`` (12 digits or <NA>), ``text``,
        ``valid`` (True only for rows to send), ``state`` (``ready``, ``invalid``,
        ``suppressed``), ``reason`` (a :class:`Reason` code or <NA>), ``encoding``
        (``GSM-7``/``UCS-2``), ``segments`` (carrier SMS count) and ``parts`` (messages
        per row, >1 only with ``long_text="split"``).

    Notes
    -----
    One reason per row, first that applies: the phone's, then the text's (missing value,
    not a single value, format error, empty, control characters, ``|``, too long), then
    ``opted_out``, then ``duplicate``. Texts may hold newlines (GSM-7 has LF and CR);
    other C0/C1 control characters are refused. Values and texts are trimmed. Phones and
    texts are checked side by side on two threads for large frames.

    Examples
    --------
    >>> df = pd.DataFrame({"tel": ["0414-1234567", "0212 5551234"], "nombre": ["Ana", "Luis"]})
    >>> out = validate(df, phone="tel", template="Hola {nombre}")
    >>> out[["phone", "text", "state", "reason"]]
              phone       text    state          reason
    0  584141234567   Hola Ana    ready            <NA>
    1          <NA>  Hola Luis  invalid  phone_landline
    """
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"df: expected a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise InputError("df: the frame is empty (no rows to validate)")
    _check_index(df.index)
    if (text is None) == (template is None):
        raise InputError("give exactly one of text= (a column) or template= (a str)")
    keep_blank: frozenset[Hashable] = frozenset()
    if template is not None:
        # The whole template is checked before any row is rendered.
        _, fields = _templates.template_fields(template, df.columns)
        keep_blank = _keep_blank(blank, df.columns, [f.column for f in fields])
    else:
        _keep_blank(blank, df.columns, [])
    if dedupe not in (*DEDUPE_MODES, None):
        raise InputError(f"dedupe: expected 'phone+text', 'phone' or None, got {dedupe!r}")
    if long_text not in _texts.LONG_TEXT_POLICIES:
        raise InputError(
            f"long_text: expected one of {_texts.LONG_TEXT_POLICIES}, got {long_text!r}"
        )
    country = _phones.check_country(country)
    ops = _phones.check_operators(operators)
    phone_col = _column(df, phone, "phone")
    renames: dict[Hashable, str] = {}
    if phone == "phone":
        renames["phone"] = "phone_input"
    if text is not None:
        text_col = _column(df, text, "text")
        if text == "text":
            renames["text"] = "text_input"
    clash = [
        c for c in (*OUTPUT_COLUMNS, *renames.values()) if c in df.columns and c not in renames
    ]
    if clash:
        raise InputError(
            f"df: column {clash[0]!r} would be overwritten by validate(); rename it first"
        )

    def phones() -> pd.DataFrame:
        return _phones.normalize_phones(
            phone_col, country=country, operators=ops, allow_international=allow_international
        )

    def texts() -> _texts.TextCheck:
        if template is not None:
            rendered = _templates.render_template(
                df, template, translit=transliterate, keep_blank=keep_blank
            )
            return _texts.check_texts(
                rendered.text,
                missing=rendered.missing_at >= 0,
                failed=rendered.failed_at >= 0,
                not_scalar=rendered.odd_at >= 0,
                long_text=long_text,
                facts=rendered.facts,
            )
        piece = _templates.column_piece(text_col, translit=transliterate)
        return _texts.check_texts(
            piece.text,
            missing=piece.missing,
            failed=piece.failed,
            not_scalar=piece.odd,
            long_text=long_text,
            facts=piece.facts,
        )

    if len(df) >= PARALLEL_ROWS:
        # Phones and texts are independent, and Arrow's kernels release the GIL: on two
        # cores the two halves run side by side.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="massiva-phones") as pool:
            pending = pool.submit(phones)
            checked = texts()
            normal = pending.result()
    else:
        normal, checked = phones(), texts()
    phone_arr = pa.array(normal["phone"].array)
    if isinstance(phone_arr, pa.ChunkedArray):
        phone_arr = phone_arr.combine_chunks()

    # Exactly one reason per row: phone first, then text, then opt-out, then duplicate.
    n = len(df)
    code = np.zeros(n, dtype=np.int16)
    text_codes = checked.code
    for i, name in enumerate(_texts.TEXT_REASONS, start=1):
        code[text_codes == i] = _INDEX[name]
    phone_reason = normal["reason"]
    p_codes, p_names = pd.factorize(phone_reason, use_na_sentinel=True)
    for i, name in enumerate(p_names):
        code[p_codes == i] = _INDEX[str(name)]
    ok = code == 0
    blocked = _suppression_phones(suppress, country=country, operators=ops)
    if blocked is not None and ok.any():
        opted = np.asarray(
            pc.fill_null(pc.is_in(phone_arr, value_set=blocked), False).to_numpy(
                zero_copy_only=False
            ),
            dtype=bool,
        )
        code[ok & opted] = _INDEX[Reason.OPTED_OUT]
        ok &= ~opted
    if dedupe is not None:
        code[_duplicates(phone_arr, checked.text, ok, dedupe)] = _INDEX[Reason.DUPLICATE]
    out = _assemble(df, renames, normal, phone_arr, checked, code, phone, text, template)
    out.attrs["massiva"]["keep_blank"] = sorted(keep_blank, key=repr)
    return out


def _assemble(
    df: pd.DataFrame,
    renames: dict[Hashable, str],
    normal: pd.DataFrame,
    phone_arr: pa.Array,
    checked: _texts.TextCheck,
    code: np.ndarray[Any, Any],
    phone: Hashable,
    text: Hashable | None,
    template: str | None,
) -> pd.DataFrame:
    index = df.index
    n = len(df)
    reason_idx = pa.array(code.astype(np.int32) - 1, mask=code == 0)
    reason = pa.array(_ALL, _LARGE).take(reason_idx)
    suppressed_codes = (_INDEX[Reason.OPTED_OUT], _INDEX[Reason.DUPLICATE])
    state_codes = np.where(code == 0, 0, np.where(np.isin(code, suppressed_codes), 2, 1))
    has_text = ~np.asarray(pc.is_null(checked.text).to_numpy(zero_copy_only=False), dtype=bool)
    encoding_codes = np.where(has_text, np.where(checked.gsm, 0, 1), -1)
    out = df.rename(columns=renames) if renames else df.copy(deep=False)
    added = {
        "phone": _string(phone_arr, index),
        "text": _string(checked.text, index),
        "valid": pd.Series(code == 0, index=index),
        "state": pd.Series(pd.Categorical.from_codes(state_codes, dtype=STATE_DTYPE), index=index),
        "reason": _string(reason, index),
        "encoding": pd.Series(
            pd.Categorical.from_codes(encoding_codes, dtype=ENCODING_DTYPE), index=index
        ),
        "segments": pd.Series(pd.array(checked.segments, dtype="Int64"), index=index),
        "parts": pd.Series(pd.array(checked.parts, dtype="Int64"), index=index),
    }
    added["segments"] = added["segments"].mask(~has_text)
    added["parts"] = added["parts"].mask(~has_text)
    del normal, n
    out = pd.concat([out, pd.DataFrame(added, index=index)], axis=1)
    out.attrs["massiva"] = {
        "phone": renames.get(phone, phone),
        "phone_name": phone,
        "text": None if text is None else renames.get(text, text),
        "text_name": text,
        "template": template,
    }
    return out


def _shown(value: Any) -> str:
    """A cell as a short printable string for failure_cases."""
    if isinstance(value, str):
        text = value if value.isprintable() else repr(value)
    elif value is None or value is pd.NA or isinstance(value, int | float | np.generic):
        text = str(value)
    else:
        text = " ".join(repr(value).split())  # a frame's or an array's repr spans lines
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def _require(validated: pd.DataFrame, what: str) -> None:
    if not isinstance(validated, pd.DataFrame):
        raise InputError(f"{what}: expected a DataFrame from validate(), got {type(validated)}")
    missing = [c for c in ("phone", "text", "valid", "state", "reason") if c not in validated]
    if missing:
        raise InputError(
            f"{what}: column {missing[0]!r} missing; pass the frame validate() returns"
        )


def failure_cases(validated: pd.DataFrame) -> pd.DataFrame:
    """One row per row that will not be sent: where, why, and the offending value.

    Parameters
    ----------
    validated : DataFrame
        What :func:`validate` (or :func:`~massiva_frames.prepare.batching.plan_batches`) returned.

    Returns
    -------
    DataFrame
        Columns ``index`` (the input label), ``column`` (the input column at fault),
        ``reason`` (code), ``message`` and ``value`` (the offending value as a short
        printable string).

    Examples
    --------
    >>> df = pd.DataFrame({"tel": ["0414-1234567", "0212 5551234"], "msg": ["Hola", "Hola"]})
    >>> failure_cases(validate(df, phone="tel", text="msg"))[["index", "column", "reason", "value"]]
       index column          reason         value
    0      1    tel  phone_landline  0212 5551234
    """
    _require(validated, "validated")
    meta = validated.attrs.get("massiva", {})
    failing = validated[validated["reason"].notna()]
    rows: list[tuple[Any, Any, str, str, str]] = []
    if len(failing) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in FAILURE_COLUMNS})
    phone_src = meta.get("phone", "phone")
    phone_name = meta.get("phone_name", phone_src)
    text_src = meta.get("text")
    text_name = meta.get("text_name", "text")
    template = meta.get("template")
    field_of: dict[Any, Hashable] = {}
    if template is not None:
        field_of = _fields_at_fault(failing, template, meta.get("keep_blank", ()))
    for label, reason, phone_value, text_value in zip(
        failing.index,
        failing["reason"].to_numpy(dtype=object),
        (failing[phone_src] if phone_src in failing else failing["phone"]).to_numpy(dtype=object),
        failing["text"].to_numpy(dtype=object),
        strict=True,
    ):
        code = Reason(reason) if reason in _INDEX else None
        message = code.message if code is not None else str(reason)
        text_column = text_name if text_src is not None else "text"
        if code is None:
            column, value = text_column, text_value
        elif code.value.startswith("phone") or code in (Reason.OPTED_OUT, Reason.DUPLICATE):
            column, value = phone_name, phone_value
        elif code in _FIELD_REASONS:
            if template is not None and label in field_of:
                column = field_of[label]
                value = failing.at[label, column] if failing.index.is_unique else None
                message = f"{message} (column {column!r})"
            else:
                column = text_column
                value = failing.at[label, text_src] if text_src in failing else text_value
        else:
            column, value = text_column, text_value
        rows.append((label, column, str(reason), message, _shown(value)))
    out = pd.DataFrame(rows, columns=FAILURE_COLUMNS)
    out["reason"] = out["reason"].astype("string")
    out["message"] = out["message"].astype("string")
    out["value"] = out["value"].astype("string")
    return out


#: Reasons that come from one template field's value.
_FIELD_REASONS = (Reason.TEXT_MISSING_VALUE, Reason.TEXT_NOT_SCALAR, Reason.TEXT_FORMAT_ERROR)


def _fields_at_fault(
    failing: pd.DataFrame, template: str, keep_blank: Iterable[Hashable]
) -> dict[Any, Hashable]:
    """For rows failing on a field's value: the first template column with that fault."""
    reasons = failing["reason"].astype("string")
    wanted = reasons.isin([r.value for r in _FIELD_REASONS]).to_numpy(dtype=bool)
    sub = failing[wanted]
    if len(sub) == 0 or not sub.index.is_unique:
        return {}
    try:
        _, fields = _templates.template_fields(template, sub.columns)
    except InputError:
        return {}
    kept = set(keep_blank)
    sub_reasons = reasons[wanted].to_numpy(dtype=object)
    found: dict[Any, Hashable] = {}
    pending = np.ones(len(sub), dtype=bool)
    for field in fields:
        piece = _templates.column_text(
            sub[field.column], field, blank_is_missing=field.column not in kept
        )
        fault = np.select(
            [
                sub_reasons == Reason.TEXT_MISSING_VALUE.value,
                sub_reasons == Reason.TEXT_NOT_SCALAR.value,
            ],
            [piece.missing, piece.odd],
            default=piece.failed,
        )
        hit = pending & fault
        for label in sub.index[hit]:
            found[label] = field.column
        pending &= ~hit
    return found


def validation_summary(validated: pd.DataFrame) -> pd.DataFrame:
    """Counts by state and reason, with each reason's message.

    Returns
    -------
    DataFrame
        Columns ``state``, ``reason`` (<NA> for rows ready to send), ``message``, ``rows``
        and ``percent``; ready rows first, then invalid and suppressed, largest first.

    Examples
    --------
    >>> df = pd.DataFrame({"tel": ["04141234567", "02125551234"], "msg": ["Hola", "Hola"]})
    >>> validation_summary(validate(df, phone="tel", text="msg"))[["state", "reason", "rows"]]
         state          reason  rows
    0    ready            <NA>     1
    1  invalid  phone_landline     1
    """
    _require(validated, "validated")
    # Count by integer codes: no per-row Python.
    state_codes, state_names = pd.factorize(validated["state"].astype("string"))
    reason_codes, reason_names = pd.factorize(validated["reason"].astype("string"))
    width = len(reason_names) + 1
    keys = state_codes.astype(np.int64) * width + (reason_codes.astype(np.int64) + 1)
    found = np.bincount(keys, minlength=len(state_names) * width)
    counts: dict[tuple[str, str], int] = {}
    state_list, reason_list = [str(v) for v in state_names], [str(v) for v in reason_names]
    for key in np.flatnonzero(found).tolist():
        state = state_list[key // width]
        reason = "" if key % width == 0 else reason_list[key % width - 1]
        counts[(state, reason)] = int(found[key])
    order = {s: i for i, s in enumerate(STATES)}
    records: list[tuple[str, str | None, str, int]] = []
    for (state, reason), rows in counts.items():
        if not reason:
            message = "ready to send"
        else:
            message = Reason(reason).message if reason in _INDEX else reason
        records.append((state, reason or None, message, rows))
    records.sort(key=lambda r: (order.get(r[0], len(order)), -r[3], r[1] or ""))
    out = pd.DataFrame(records, columns=["state", "reason", "message", "rows"])
    out["reason"] = out["reason"].astype("string")
    out["percent"] = (100.0 * out["rows"] / max(len(validated), 1)).round(2)
    return out
