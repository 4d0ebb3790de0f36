"""The results frame's shape: states, columns and dtypes, and index labels that survive.

The results frame has one row per input row, the input's index, and only these columns
(docs/architecture.md), so ``df.join(results)`` never collides with the input's own columns::

    phone, text, state, reason, batch, message_id, sid, request_status, api_message,
    sent_at, encoding, segments, attempt, first_message_id

``attempt`` is 1 for a row sent once and N after N - 1 follow-up sends
(:func:`~massiva_frames.sending.resending.resend`); the message columns are those of the
latest attempt, and ``first_message_id`` is the first attempt's ``message_id`` (the link
to its callbacks). Rows without a message (invalid, suppressed) have neither.

Index labels are stored in the journal JSON-encoded (tagged for what JSON lacks:
tuples, timestamps, NaN...), with the index's kind, names and dtype beside them, so
``results_from_journal`` gives back the very index the input had.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError

# Label and frame helpers are the journal's own; the public names are the shape.
__all__ = ["RESULT_COLUMNS", "RESULT_DTYPES", "STATES"]

#: Result states, in the fixed order of the ``state`` category (docs/architecture.md).
STATES: tuple[str, ...] = (
    "invalid",
    "suppressed",
    "scheduled",
    "cancelled",
    "accepted",
    "rejected",
    "unknown",
    "delivered",
    "failed",
)

RESULT_COLUMNS: tuple[str, ...] = (
    "phone",
    "text",
    "state",
    "reason",
    "batch",
    "message_id",
    "sid",
    "request_status",
    "api_message",
    "sent_at",
    "encoding",
    "segments",
    "attempt",
    "first_message_id",
)

#: dtypes of the results frame, in column order.
RESULT_DTYPES: dict[str, Any] = {
    "phone": pd.StringDtype(),
    "text": pd.StringDtype(),
    "state": pd.CategoricalDtype(list(STATES)),
    "reason": pd.StringDtype(),
    "batch": pd.Int64Dtype(),
    "message_id": pd.Int64Dtype(),
    "sid": pd.StringDtype(),
    "request_status": pd.Int64Dtype(),
    "api_message": pd.StringDtype(),
    "sent_at": pd.DatetimeTZDtype("us", "UTC"),
    "encoding": pd.StringDtype(),
    "segments": pd.Int64Dtype(),
    "attempt": pd.Int64Dtype(),
    "first_message_id": pd.Int64Dtype(),
}

#: reason given to messages of a batch found in flight (the sending process died).
REASON_PROCESS_STOPPED = "in_doubt_process_stopped"


# --- index labels ------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A JSON-able form of one index label (tagged dicts for what JSON lacks)."""
    if isinstance(value, tuple):
        return {"~tuple": [_plain(v) for v in value]}
    if value is None or value is pd.NA:
        return None
    if value is pd.NaT:
        return {"~nat": 1}
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"~float": repr(value)}
    if isinstance(value, pd.Timestamp | dt.datetime):
        return {"~ts": pd.Timestamp(value).isoformat()}
    if isinstance(value, pd.Timedelta | dt.timedelta):
        return {"~td": int(pd.Timedelta(value).value)}
    if isinstance(value, dt.date):
        return {"~date": value.isoformat()}
    if isinstance(value, bytes):
        return {"~bytes": value.hex()}
    return {"~str": str(value)}


def _unplain(value: Any) -> Any:
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    if not isinstance(value, dict):
        return value
    tag, payload = next(iter(value.items()))
    if tag == "~tuple":
        return tuple(_unplain(v) for v in payload)
    if tag == "~nat":
        return pd.NaT
    if tag == "~float":
        return float(payload)
    if tag == "~ts":
        return pd.Timestamp(payload)
    if tag == "~td":
        return pd.Timedelta(payload)
    if tag == "~date":
        return dt.date.fromisoformat(payload)
    if tag == "~bytes":
        return bytes.fromhex(payload)
    return payload


def encode_label(value: Any) -> str:
    """JSON-encode one index label so that it survives any index dtype.

    Examples
    --------
    >>> encode_label(("a", 1))
    '{"~tuple":["a",1]}'
    """
    # ASCII escapes: a label with a lone surrogate still round-trips through SQLite.
    return json.dumps(_plain(value), separators=(",", ":"))


def decode_label(text: str) -> Any:
    """Inverse of :func:`encode_label`."""
    return _unplain(json.loads(text))


def index_meta(index: pd.Index) -> dict[str, Any]:
    """What is needed, beyond the labels, to rebuild ``index`` exactly."""
    names = [_plain(n) for n in index.names]
    if isinstance(index, pd.RangeIndex):
        return {
            "kind": "range",
            "start": index.start,
            "stop": index.stop,
            "step": index.step,
            "names": names,
        }
    if isinstance(index, pd.MultiIndex):
        return {
            "kind": "multi",
            "names": names,
            "dtypes": [str(level.dtype) for level in index.levels],
        }
    meta: dict[str, Any] = {"kind": "index", "names": names, "dtype": str(index.dtype)}
    freq = getattr(index, "freqstr", None)
    if freq:
        meta["freq"] = freq
    return meta


def _astype_or_keep(index: pd.Index, dtype: str) -> pd.Index:
    try:
        return index.astype(dtype)
    except (TypeError, ValueError):
        return index


def rebuild_index(meta: dict[str, Any], labels: list[str]) -> pd.Index:
    """Rebuild an index from :func:`index_meta` and the JSON-encoded labels."""
    names = [_unplain(n) for n in meta.get("names", [None])]
    kind = meta.get("kind")
    if kind == "range" and len(labels) == len(range(meta["start"], meta["stop"], meta["step"])):
        return pd.RangeIndex(meta["start"], meta["stop"], meta["step"], name=names[0])
    values = [decode_label(label) for label in labels]
    if kind == "multi":
        tuples = [v if isinstance(v, tuple) else (v,) for v in values]
        multi = pd.MultiIndex.from_tuples(tuples, names=names) if tuples else None
        if multi is None:
            arrays: list[list[Any]] = [[] for _ in names]
            multi = pd.MultiIndex.from_arrays(arrays, names=names)
        levels = [
            _astype_or_keep(multi.get_level_values(i), dtype)
            for i, dtype in enumerate(meta.get("dtypes", []))
        ]
        if len(levels) == multi.nlevels:
            return pd.MultiIndex.from_arrays(levels, names=names)
        return multi
    index = pd.Index(values, name=names[0] if names else None, tupleize_cols=False)
    if not values:
        return _astype_or_keep(index, str(meta.get("dtype", "object")))
    rebuilt: pd.Index = _astype_or_keep(index, str(meta.get("dtype", "object")))
    if meta.get("freq"):
        try:
            if isinstance(rebuilt, pd.DatetimeIndex):
                rebuilt = pd.DatetimeIndex(rebuilt, freq=meta["freq"])
            elif isinstance(rebuilt, pd.TimedeltaIndex):
                rebuilt = pd.TimedeltaIndex(rebuilt, freq=meta["freq"])
        except ValueError:
            pass  # the labels no longer fit the frequency: keep them without it
    return rebuilt


# --- the results frame -------------------------------------------------------------------


#: message states of the journal, in the order of the codes the journal reads them as.
#: ``cancelled``: a pending message that ``cancel`` took out of the outbox (never sent).
JOURNAL_STATES: tuple[str, ...] = (
    "pending",
    "inflight",
    "accepted",
    "rejected",
    "unknown",
    "cancelled",
)

#: encodings, in the order of the codes the journal reads them as.
ENCODINGS: tuple[str, ...] = ("GSM-7", "UCS-2")

#: journal message state -> result state ('inflight': a request whose process died)
_FROM_JOURNAL = {
    "pending": "scheduled",
    "inflight": "unknown",
    "accepted": "accepted",
    "rejected": "rejected",
    "unknown": "unknown",
    "cancelled": "cancelled",
}

_STATE_CODE = {s: i for i, s in enumerate(STATES)}

#: result state code of each journal state code; the last entry is for "no message"
_STATE_OF_MESSAGE = np.array(
    [_STATE_CODE[_FROM_JOURNAL[s]] for s in JOURNAL_STATES] + [-1], dtype=np.int64
)

_NONE = np.array(None, dtype=object)


def _is_none(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.asarray(pd.isna(values), dtype=bool)


def _strings(values: np.ndarray[Any, Any]) -> Any:
    return pd.array(values, dtype=RESULT_DTYPES["phone"])


def _ints(values: np.ndarray[Any, Any]) -> pd.arrays.IntegerArray:
    mask = _is_none(values)
    data = np.where(mask, 0, values).astype(np.int64)
    return pd.arrays.IntegerArray(data, mask)


def decode_codes(
    codes: np.ndarray[Any, Any], other: np.ndarray[Any, Any], values: tuple[str, ...]
) -> np.ndarray[Any, Any]:
    """Strings back from the journal's codes: ``values[code]``, None for -1, else ``other``."""
    codes = codes.astype(np.int64)
    table = np.array([*values, None, None], dtype=object)  # [len]: other, [-1]: None
    out: np.ndarray[Any, Any] = table[codes]
    unlisted = codes == len(values)
    out[unlisted] = other[unlisted]
    return out


def range_index(meta: dict[str, Any], n: int) -> pd.Index | None:
    """The RangeIndex :func:`index_meta` describes, if it has ``n`` labels (else None)."""
    if meta.get("kind") != "range":
        return None
    span = range(meta["start"], meta["stop"], meta["step"])
    if len(span) != n:
        return None
    names = [_unplain(v) for v in meta.get("names", [None])]
    return pd.RangeIndex(span.start, span.stop, span.step, name=names[0])


def results_frame(
    raw: Mapping[str, np.ndarray[Any, Any]],
    index: pd.Index,
    multi: Mapping[str, np.ndarray[Any, Any]],
) -> pd.DataFrame:
    """Turn the journal's joined rows (object arrays by column) into the results frame.

    ``raw`` has one entry per input row (the message state as a code, see
    ``journal.schema.RESULTS_SQL``); ``multi`` the rows split in several messages (``row``,
    the input row's number, and counts of the parts: ``n``, ``n_accepted``,
    ``n_rejected``, ``n_unknown``).
    """
    n = len(raw["segments"])
    if len(index) != n:
        raise InputError(f"index has {len(index)} labels for {n} journalled rows")
    if n == 0:
        return empty_results(index)
    input_state = raw["input_state"]  # None: the row sends (validation said ready)
    ready = _is_none(input_state)
    m_state = raw["m_state"].astype(np.int64)
    state = _STATE_OF_MESSAGE[m_state]  # result state codes
    reason = raw["reason"].copy()
    reason[ready & (m_state == JOURNAL_STATES.index("inflight"))] = REASON_PROCESS_STOPPED
    # A split row (several parts) is accepted only if every part is (documented in send).
    at = multi["row"].astype(np.int64)
    if len(at):
        n_parts = multi["n"].astype(np.int64)
        n_unknown = multi["n_unknown"].astype(np.int64)
        n_rejected = multi["n_rejected"].astype(np.int64)
        n_accepted = multi["n_accepted"].astype(np.int64)
        n_cancelled = multi.get("n_cancelled", np.zeros(len(at), dtype=object)).astype(np.int64)
        agg = np.select(
            [n_unknown > 0, n_rejected > 0, n_accepted == n_parts, n_cancelled > 0],
            [
                _STATE_CODE["unknown"],
                _STATE_CODE["rejected"],
                _STATE_CODE["accepted"],
                _STATE_CODE["cancelled"],
            ],
            _STATE_CODE["scheduled"],
        )
        differs = agg != state[at]
        reason[at[differs]] = ["some_parts_" + STATES[a] for a in agg[differs].tolist()]
        state[at] = agg
    missing = ready & (m_state == -1)
    state[missing], reason[missing] = _STATE_CODE["unknown"], "not_journalled"
    if not ready.all():
        others = np.flatnonzero(~ready)
        state[others] = [_STATE_CODE.get(s, -1) for s in input_state[others].tolist()]

    def sent(name: str) -> np.ndarray[Any, Any]:
        # message columns only for rows that send (an invalid row has no message)
        column: np.ndarray[Any, Any] = np.where(ready, raw[name], _NONE)
        return column

    # Without the journal's attempt columns (a send's own new messages): first attempts.
    if "attempt" not in raw:
        has_message = np.asarray(m_state != -1, dtype=bool)
        raw = {
            **raw,
            "attempt": np.where(has_message, 1, _NONE),
            "first_message_id": raw["message_id"],
        }
    sent_at = pd.to_datetime(_ints(sent("sent_at")), unit="us", utc=True)
    out = pd.DataFrame(
        {
            "phone": _strings(raw["phone"]),
            "text": _strings(raw["text"]),
            "state": pd.Categorical.from_codes(state, dtype=RESULT_DTYPES["state"]),
            "reason": _strings(reason),
            "batch": _ints(sent("batch")),
            "message_id": _ints(sent("message_id")),
            "sid": _strings(sent("sid")),
            "request_status": _ints(sent("request_status")),
            "api_message": _strings(sent("api_message")),
            "sent_at": pd.Series(sent_at).astype(RESULT_DTYPES["sent_at"]).array,
            "encoding": _strings(raw["encoding"]),
            "segments": _ints(raw["segments"]),
            "attempt": _ints(sent("attempt")),
            "first_message_id": _ints(sent("first_message_id")),
        },
        index=index,
    )
    return out


def empty_results(index: pd.Index | None = None) -> pd.DataFrame:
    """A results frame with no rows (or with ``index`` and every value missing)."""
    index = pd.RangeIndex(0) if index is None else index
    return pd.DataFrame(
        {
            c: pd.Series(pd.NA if t != RESULT_DTYPES["sent_at"] else pd.NaT, index=index, dtype=t)
            for c, t in RESULT_DTYPES.items()
        },
        index=index,
    )
