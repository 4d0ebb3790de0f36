"""What a send puts in its outbox: one record per input row, one message per part.

Every row that validation marked ``ready`` gets a stable key, the sha256 of campaign,
phone, text and occurrence (or of campaign and the user's own key column), so that a
re-run finds the messages it already sent. Keys are built from length-prefixed fields:
no campaign, phone or text can forge another row's key.
"""

from __future__ import annotations

import hashlib
from typing import Any, cast

import numpy as np
import pandas as pd

from .errors import InputError
from .results import encode_label
from .scheduling import resolve_send_at

# Internal to massiva_frames.sending.
__all__: list[str] = []


def _material(*fields: str) -> bytes:
    # Length-prefixed fields: no campaign, phone or text can forge another row's key.
    return "".join(f"{len(f)}:{f}," for f in fields).encode("utf-8")


def row_key(campaign: str, phone: str, text: str, occurrence: int = 0) -> str:
    """The stable key of a row: sha256 of campaign, phone, text and occurrence.

    ``occurrence`` tells apart identical (phone, text) rows kept on purpose (validation
    with ``dedupe=None``): the n-th copy in input order gets ``n``.

    Examples
    --------
    >>> row_key("promo", "584141234567", "Hola")[:12]
    '099ffbd77baf'
    """
    material = _material("v1", campaign, phone, text, str(occurrence))
    return hashlib.sha256(material).hexdigest()


def user_row_key(campaign: str, value: str) -> str:
    """The stable key of a row from the user's own key column."""
    return hashlib.sha256(_material("v1-key", campaign, value)).hexdigest()


def split_texts(text: str, parts: int) -> list[str]:
    """The texts of a row split into ``parts`` messages (validation's own splitter)."""
    from . import texts as texts_module

    split = texts_module.split_text
    pieces = list(split(text))
    if len(pieces) != parts:
        raise InputError(f"split gave {len(pieces)} parts where validation counted {parts}")
    return pieces


def prepare_rows(
    df: pd.DataFrame,
    validated: pd.DataFrame,
    *,
    campaign: str,
    key: str | None,
    send_at: Any,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows (one per input row, by position) and messages (one per part) to journal.

    Rows that validation marked ``ready`` get their stable key; a bad ``send_at`` makes a
    row ``invalid`` (``send_at_invalid``); with a ``key`` column, a missing key makes it
    ``invalid`` (``key_missing``) and a repeated one ``suppressed`` (``duplicate_key``).
    """
    n = len(df)
    times, bad_times = resolve_send_at(df, send_at)
    state = objects(validated["state"])
    reason = objects(validated["reason"])
    phone = objects(validated["phone"])
    text = objects(validated["text"])
    ready = state == "ready"
    bad = ready & bad_times.to_numpy()
    state[bad], reason[bad] = "invalid", "send_at_invalid"
    ready &= ~bad
    keys = np.full(n, None, dtype=object)
    if key is not None:
        if key not in df.columns:
            raise InputError(f"key column {key!r} not found in the frame")
        values = df[key]
        missing = ready & values.isna().to_numpy()
        state[missing], reason[missing] = "invalid", "key_missing"
        ready &= ~missing
        as_text = values.astype(str).to_numpy(dtype=object)
        dup = ready & pd.Series(as_text).where(ready).duplicated().to_numpy()
        state[dup], reason[dup] = "suppressed", "duplicate_key"
        ready &= ~dup
        at = np.flatnonzero(ready)
        keys[at] = [user_row_key(campaign, v) for v in as_text[at].tolist()]
    else:
        # Identical (phone, text) rows kept on purpose (dedupe=None) get distinct keys.
        at = np.flatnonzero(ready)
        pairs = pd.DataFrame({"p": phone[at], "t": text[at]})
        occurrence = pairs.groupby(["p", "t"], sort=False).cumcount().tolist()
        head = f"2:v1,{len(campaign)}:{campaign},"
        sha = hashlib.sha256
        # row_key() inlined: the same material, without a call per row
        keys[at] = [
            sha(f"{head}{len(p)}:{p},{len(t)}:{t},{len(str(o))}:{o},".encode()).hexdigest()
            for p, t, o in zip(phone[at].tolist(), text[at].tolist(), occurrence, strict=True)
        ]
    if "parts" in validated:
        parts = validated["parts"].to_numpy(dtype="float64", na_value=1).astype(np.int64)
    else:
        parts = np.ones(n, dtype=np.int64)
    rows = pd.DataFrame(
        {
            "position": np.arange(n),
            "row_key": keys,
            "input_state": state,
            "reason": reason,
            "phone": phone,
            "text": text,
            "encoding": objects(validated["encoding"]),
            "segments": objects(validated["segments"]),
            "parts": np.where(ready, parts, 1),
            "send_at": times.array,  # tz-aware (UTC)
        }
    )
    at = np.flatnonzero(ready)
    if (parts[at] > 1).any():
        records: list[tuple[Any, ...]] = []
        for pos in at.tolist():
            if parts[pos] > 1:
                for part, piece in enumerate(split_texts(text[pos], int(parts[pos])), start=1):
                    records.append((keys[pos], part, phone[pos], piece, pos))
            else:
                records.append((keys[pos], 1, phone[pos], text[pos], pos))
        messages = pd.DataFrame.from_records(
            records, columns=["row_key", "part", "phone", "text", "position"]
        )
    else:  # the common case, without a Python loop
        messages = pd.DataFrame(
            {"row_key": keys[at], "part": 1, "phone": phone[at], "text": text[at], "position": at}
        )
    return rows, messages


def objects(series: pd.Series) -> np.ndarray[Any, Any]:
    """A column as Python objects, missing values as None (fast for Arrow strings)."""
    values: np.ndarray[Any, Any] = series.to_numpy(dtype=object, na_value=cast(Any, None))
    return values


def row_records(rows: pd.DataFrame, index: pd.Index) -> list[tuple[Any, ...]]:
    """The ``rows`` table records of :func:`prepare_rows` output, labels JSON-encoded."""
    if isinstance(index, pd.RangeIndex):
        labels: list[str] = [""] * len(index)  # rebuilt from start/stop/step
    else:
        labels = [encode_label(label) for label in index]

    state = objects(rows["input_state"])
    parts = rows["parts"].to_numpy()
    # A ready one-part row's phone and text live in its message: not stored twice.
    own = (state != "ready") | (parts > 1)
    none = np.array(None, dtype=object)
    phone = [_storable(v) for v in np.where(own, objects(rows["phone"]), none).tolist()]
    text = [_storable(v) for v in np.where(own, objects(rows["text"]), none).tolist()]
    segments = [None if v is None else int(v) for v in objects(rows["segments"]).tolist()]
    return list(
        zip(
            range(len(rows)),
            labels,
            objects(rows["row_key"]).tolist(),
            state.tolist(),
            objects(rows["reason"]).tolist(),
            phone,
            text,
            objects(rows["encoding"]).tolist(),
            segments,
            parts.tolist(),
            strict=True,
        )
    )


def _storable(value: Any) -> Any:
    """A value SQLite can store: a lone surrogate (undecodable input) becomes ``?``."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "replace").decode("utf-8")
    return value
