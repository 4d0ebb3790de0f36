"""What a send puts in its outbox: one record per input row, one message per part.

Every row that validation marked ``ready`` gets a stable key, the sha256 of campaign,
phone, text and occurrence (or of campaign and the user's own key column), so that a
re-run finds the messages it already sent. Keys are built from length-prefixed fields:
no campaign, phone or text can forge another row's key.

What a send reads back is here too: its pending messages (:func:`pending_of`) and, when
every message was new, its results frame without re-reading its own rows
(:func:`own_results`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from ..errors import InputError
from .results import JOURNAL_STATES, encode_label, results_frame
from .scheduling import resolve_send_at

if TYPE_CHECKING:
    from .journal.backend import JournalBackend
    from .journal.writes import Answered

# Internal to massiva_frames.sending.campaign.
__all__: list[str] = []


_JOURNAL_CODE = {state: code for code, state in enumerate(JOURNAL_STATES)}
#: the columns of Journal.message_outcomes
_OUTCOME_COLUMNS = (
    "m_state",
    "reason",
    "batch",
    "message_id",
    "sid",
    "request_status",
    "api_message",
    "sent_at",
)


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
    from ..prepare import texts as texts_module

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
        keys[at] = _pair_keys(campaign, phone[at], text[at])
    if "parts" in validated:
        parts = validated["parts"].to_numpy(dtype="float64", na_value=1).astype(np.int64)
    else:
        parts = np.ones(n, dtype=np.int64)
    rows = pd.DataFrame(
        {
            "position": np.arange(n),
            "row_key": _column(keys),
            "input_state": _column(state),
            "reason": _column(reason),
            "phone": _column(phone),
            "text": _column(text),
            "encoding": _column(objects(validated["encoding"])),
            # Python ints or None (SQLite binds no numpy scalars)
            "segments": _column(objects(validated["segments"].astype("Int64"))),
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
        columns = list(zip(*records, strict=True)) if records else [()] * 5
        messages = pd.DataFrame(
            {
                "row_key": _column(np.array(columns[0], dtype=object)),
                "part": np.array(columns[1], dtype=np.int64),
                "phone": _column(np.array(columns[2], dtype=object)),
                "text": _column(np.array(columns[3], dtype=object)),
                "position": np.array(columns[4], dtype=np.int64),
            }
        )
    else:  # the common case, without a Python loop
        messages = pd.DataFrame(
            {
                "row_key": _column(keys[at]),
                "part": np.ones(len(at), dtype=np.int64),
                "phone": _column(phone[at]),
                "text": _column(text[at]),
                "position": at,
            }
        )
    return rows, messages


def objects(series: pd.Series) -> np.ndarray[Any, Any]:
    """A column as Python objects, missing values as None (fast for Arrow strings)."""
    values: np.ndarray[Any, Any] = series.to_numpy(dtype=object, na_value=cast(Any, None))
    return values


def _column(values: np.ndarray[Any, Any]) -> pd.Series:
    # Kept as Python objects: no round trip through Arrow strings (the journal binds
    # Python objects, and pandas would infer a string dtype for a plain object array).
    return pd.Series(values, dtype=object, copy=False)


def _pair_keys(campaign: str, phone: np.ndarray[Any, Any], text: np.ndarray[Any, Any]) -> list[str]:
    """:func:`row_key` of each (phone, text) pair, the n-th copy of a pair with ``n``."""
    head = f"2:v1,{len(campaign)}:{campaign},"
    sha = hashlib.sha256
    # row_key() inlined: the same material, without a call per row. Every pair's first
    # occurrence has the field "1:0,"; equal pairs get equal keys, so distinct keys
    # mean distinct pairs (validation's default dedupe) and the keys are final.
    first = [
        sha(f"{head}{len(p)}:{p},{len(t)}:{t},1:0,".encode()).hexdigest()
        for p, t in zip(phone.tolist(), text.tolist(), strict=True)
    ]
    if len(set(first)) == len(first):
        return first
    pairs = pd.DataFrame({"p": _column(phone), "t": _column(text)})
    occurrence = pairs.groupby(["p", "t"], sort=False).cumcount()
    return [
        sha(f"{head}{len(p)}:{p},{len(t)}:{t},{len(str(o))}:{o},".encode()).hexdigest()
        for p, t, o in zip(phone.tolist(), text.tolist(), occurrence.tolist(), strict=True)
    ]


@dataclass
class StoredRows:
    """The input rows as the journal's ``rows`` table holds them, by position.

    ``simple`` rows are ready and send one message: their phone and text live in the
    message (``phone``/``text`` are None here), and they are written compactly.
    """

    label: np.ndarray[Any, Any]
    row_key: np.ndarray[Any, Any]
    state: np.ndarray[Any, Any]
    reason: np.ndarray[Any, Any]
    phone: np.ndarray[Any, Any]
    text: np.ndarray[Any, Any]
    encoding: np.ndarray[Any, Any]
    segments: np.ndarray[Any, Any]
    parts: np.ndarray[Any, Any]
    simple: np.ndarray[Any, Any]

    def records(self) -> tuple[Iterator[tuple[Any, ...]], Iterator[tuple[Any, ...]]]:
        """Two record streams for :meth:`Journal.replace_rows`: the simple rows,
        ``(position, label, row_key, encoding, segments)`` (``sending=``), and every
        other row in full, ``(position, label, row_key, input_state, reason, phone, text,
        encoding, segments, parts)``.
        """
        one = np.flatnonzero(self.simple)
        sending = zip(
            one.tolist(),
            self.label[one].tolist(),
            self.row_key[one].tolist(),
            self.encoding[one].tolist(),
            self.segments[one].tolist(),
            strict=True,
        )
        own = np.flatnonzero(~self.simple)
        others = zip(
            own.tolist(),
            *(
                getattr(self, name)[own].tolist()
                for name in ("label", "row_key", "state", "reason", "phone", "text")
            ),
            self.encoding[own].tolist(),
            self.segments[own].tolist(),
            self.parts[own].tolist(),
            strict=True,
        )
        return sending, others

    def results_columns(
        self, messages: pd.DataFrame, outcomes: dict[str, np.ndarray[Any, Any]]
    ) -> dict[str, np.ndarray[Any, Any]]:
        """The columns :func:`results.results_frame` takes, as the journal would give them.

        For rows that send one message each (no split row): ``messages`` are their
        messages and ``outcomes`` those messages' columns in the same order
        (:meth:`Journal.message_outcomes`). Mirrors ``journal.schema.RESULTS_SQL``: phone and
        text from the message for simple rows, the reason from the message for ready
        rows, message columns only where there is a message.
        """
        n = len(self.state)
        at = messages["position"].to_numpy(dtype=np.int64)
        ready = self.state == "ready"

        def by_row(values: np.ndarray[Any, Any], missing: Any = None) -> np.ndarray[Any, Any]:
            column = np.full(n, missing, dtype=object if missing is None else np.int64)
            column[at] = values
            return column

        reason = self.reason.copy()
        reason[at] = outcomes["reason"]
        input_state = self.state.copy()  # None: the row sends
        input_state[ready] = None
        columns = {
            "phone": by_row(objects(messages["phone"])),
            "text": by_row(objects(messages["text"])),
            "input_state": input_state,
            "reason": reason,
            "m_state": by_row(outcomes["m_state"].astype(np.int64), missing=-1),
            "encoding": self.encoding,
            "segments": self.segments,
        }
        own = np.flatnonzero(~self.simple)
        columns["phone"][own] = self.phone[own]
        columns["text"][own] = self.text[own]
        for name in ("batch", "message_id", "sid", "request_status", "api_message", "sent_at"):
            columns[name] = by_row(outcomes[name])
        return columns


def stored_rows(rows: pd.DataFrame, index: pd.Index) -> StoredRows:
    """The ``rows`` table of :func:`prepare_rows` output, labels JSON-encoded."""
    n = len(rows)
    labels: np.ndarray[Any, Any] = np.empty(n, dtype=object)
    if isinstance(index, pd.RangeIndex):
        labels[:] = ""  # rebuilt from start/stop/step
    else:
        labels[:] = [encode_label(label) for label in index]
    state = objects(rows["input_state"])
    parts = rows["parts"].to_numpy()
    # A ready one-part row's phone and text live in its message: not stored twice.
    simple = (state == "ready") & (parts == 1)
    own = np.flatnonzero(~simple)
    phone = np.full(n, None, dtype=object)
    text = np.full(n, None, dtype=object)
    phone[own] = [_storable(v) for v in objects(rows["phone"])[own].tolist()]
    text[own] = [_storable(v) for v in objects(rows["text"])[own].tolist()]
    return StoredRows(
        label=labels,
        row_key=objects(rows["row_key"]),
        state=state,
        reason=objects(rows["reason"]),
        phone=phone,
        text=text,
        encoding=objects(rows["encoding"]),
        segments=objects(rows["segments"]),
        parts=parts,
        simple=simple,
    )


def _storable(value: Any) -> Any:
    """A value SQLite can store: a lone surrogate (undecodable input) becomes ``?``."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "replace").decode("utf-8")
    return value


# --- read back from the journal ------------------------------------------------------


def pending_of(
    journal: JournalBackend, messages: pd.DataFrame, rows: pd.DataFrame, first_id: int | None
) -> pd.DataFrame:
    """This input's pending messages, in input order, with their journal id and state.

    ``first_id``: every message was just added, the i-th with id ``first_id + i``; they
    are all pending, due now, without a reason (nothing to read back).
    """
    columns = ["id", "row_key", "part", "phone", "text", "send_at", "reason", "position"]
    columns += ["segments", "parts"]
    if first_id is not None:
        at = messages["position"].to_numpy()
        none = pd.Series(np.full(len(messages), None, dtype=object), dtype=object, copy=False)
        fresh = messages.assign(
            id=np.arange(first_id, first_id + len(messages), dtype=np.int64),
            send_at=none,
            reason=none,
            segments=pd.Series(objects(rows["segments"])[at], dtype=object, copy=False),
            parts=rows["parts"].to_numpy()[at],
        )
        return fresh[columns]
    lean = journal.pending_messages()
    if lean.empty or messages.empty:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    lean["part"] = lean["part"].astype(np.int64)
    merged = messages.astype({"part": np.int64}).merge(lean, on=["row_key", "part"], sort=False)
    at = merged["position"].to_numpy()
    merged["segments"] = objects(rows["segments"])[at]
    merged["parts"] = rows["parts"].to_numpy()[at]
    return merged[columns]


def answered_outcomes(
    answered: Sequence[Answered], first: int, n: int
) -> dict[str, np.ndarray[Any, Any]] | None:
    """:meth:`Journal.message_outcomes` of ids ``first`` to ``first + n - 1``, built from
    the outcomes the request loop committed (the very values its statements wrote).

    None unless they cover every one of those messages exactly once: a message that
    waits (not due, credits short, run stopped) was written elsewhere, so the caller
    reads the journal instead.
    """
    columns = {name: np.full(n, None, dtype=object) for name in _OUTCOME_COLUMNS}
    seen = np.zeros(n, dtype=bool)
    for answer in answered:
        for fate in answer.fates:
            at = np.asarray(fate.ids, dtype=np.int64) - first
            if not len(at):
                continue
            if at.min() < 0 or at.max() >= n or seen[at].any():
                return None
            seen[at] = True
            columns["m_state"][at] = _JOURNAL_CODE[fate.state]
            columns["reason"][at] = fate.reason
            # as journal.schema.TURN_SQL: a message that never left has no batch
            columns["batch"][at] = None if fate.state == "pending" else answer.number
            columns["request_status"][at] = answer.request_status
            columns["api_message"][at] = fate.api_message
            columns["sent_at"][at] = fate.sent_at
            if fate.message_ids is not None:
                columns["message_id"][at] = fate.message_ids
            if fate.sids is not None:
                columns["sid"][at] = fate.sids
    return columns if seen.all() else None


def own_results(
    journal: JournalBackend,
    stored: StoredRows,
    messages: pd.DataFrame,
    first: int,
    index: pd.Index,
    answered: Sequence[Answered] = (),
) -> pd.DataFrame:
    """The results frame when every message of this call is new and unsplit.

    The rows are the ones just journalled (``stored``, in memory). The message columns
    are the outcomes the request loop committed (``answered``) when they cover every
    message; otherwise they are read back from the journal by id range (``first``...),
    as :meth:`Journal.results` would join them, without the join nor reading back phone
    and text. Either way the frame equals ``results_from_journal`` (tested).
    """
    outcomes = answered_outcomes(answered, first, len(messages))
    if outcomes is None:
        outcomes = journal.message_outcomes(first, first + len(messages) - 1)
    if len(outcomes["m_state"]) != len(messages):  # cannot happen: the full read
        return journal.results(index=index)
    empty = np.array([], dtype=np.int64)
    multi = {"row": empty, "n": empty, "n_accepted": empty, "n_rejected": empty}
    multi["n_unknown"] = empty
    return results_frame(stored.results_columns(messages, outcomes), index, multi)
