"""Request sizing: the planning options resolved once, and the ready rows measured against them.

:func:`~massiva_frames.prepare.batching.plan_batches` and
:func:`~massiva_frames.prepare.lower_bound.minimum_requests` take the same keyword options;
:func:`request_limits` checks them and turns them into one :class:`RequestLimits` (phones
per request and, for GET, the URL room left once the base URL and credentials are paid
for). :func:`ready_rows` reads the rows of a validated frame that can be sent, and
:func:`entry_sizes` measures each as an entry of a GET request (docs/protocol.md §1).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from ..wire.protocol import DEFAULT_BASE_URL, SEND_PATH, build_send_params, encode_query
from .arrow import LARGE_STRING, as_large_strings
from .phones import API_PHONE_LENGTH
from .texts import split_text

__all__ = [
    "DEFAULT_MAX_PHONES",
    "SEP",
    "EntrySizes",
    "ReadyRows",
    "RequestLimits",
    "entry_sizes",
    "quoted_lengths",
    "ready_rows",
    "request_limits",
    "require_columns",
]

DEFAULT_MAX_PHONES = 500
#: Encoded separators: ';' -> '%3B' between phones, '|' -> '%7C' between paired texts.
SEP = 3
_PROBE_PHONE = "5" * API_PHONE_LENGTH
_PROBE_TEXT = "0"
_UTF8 = ("utf-8", "utf8", "utf_8")


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What bounds one request, from the planning options.

    Attributes
    ----------
    method : {"GET", "POST"}
        Upper-cased.
    max_phones : int
        Phones (entries) per request.
    max_url : int
        Characters of a GET URL.
    fixed : int
        A GET URL's length with empty ``telefonos`` and ``texto`` values (0 for POST).
    encoding : str
        The client's text encoding, lower-cased: what URL-encoded lengths are counted in.
    """

    method: str
    max_phones: int
    max_url: int
    fixed: int
    encoding: str

    @property
    def get(self) -> bool:
        """True when the URL length binds too."""
        return self.method == "GET"

    @property
    def room(self) -> int:
        """URL characters left for the ``telefonos`` and ``texto`` values."""
        return self.max_url - self.fixed

    @property
    def paired_cap(self) -> int:
        """The room for paired entries, each counted with both its separators."""
        return self.room + 2 * SEP


def request_limits(
    *,
    method: str,
    max_phones: int,
    client: Any,
    base_url: str | None,
    usuario: str | None,
    clave: str | None,
    group: str | None,
    max_url: int,
) -> RequestLimits:
    """Check the planning options and resolve them into :class:`RequestLimits`.

    For GET, the URL's fixed part is measured once: with ``client``'s own
    ``get_url_length``, else from ``base_url``, ``usuario``, ``clave`` and ``group`` as
    :func:`~massiva_frames.wire.protocol.encode_query` encodes them.

    Raises
    ------
    InputError
        An unknown method, a non-positive ``max_phones`` or ``max_url``, GET without a
        client or credentials, or a ``max_url`` that leaves no room for one phone.
    """
    if not isinstance(method, str) or method.upper() not in ("GET", "POST"):
        raise InputError(f"method: expected 'GET' or 'POST', got {method!r}")
    method = method.upper()
    if isinstance(max_phones, bool) or not isinstance(max_phones, int) or max_phones < 1:
        raise InputError(f"max_phones: expected a positive int, got {max_phones!r}")
    if isinstance(max_url, bool) or not isinstance(max_url, int) or max_url < 1:
        raise InputError(f"max_url: expected a positive int, got {max_url!r}")
    encoding = str(getattr(client, "encoding", "utf-8") or "utf-8").lower()
    if method == "POST":
        return RequestLimits(method, max_phones, max_url, 0, encoding)
    probe = len(_PROBE_PHONE) + len(_PROBE_TEXT)
    if client is not None:
        fixed = int(client.get_url_length([_PROBE_PHONE], _PROBE_TEXT, group)) - probe
    else:
        if not usuario or not clave:
            raise InputError(
                "method='GET' needs client= or usuario= and clave= to bound the URL length"
            )
        url = f"{(base_url or DEFAULT_BASE_URL).rstrip('/')}/{SEND_PATH}"
        query = encode_query(build_send_params(usuario, clave, [_PROBE_PHONE], _PROBE_TEXT, group))
        fixed = len(url) + 1 + len(query) - probe
    if fixed + API_PHONE_LENGTH + 1 > max_url:
        raise InputError(
            f"max_url: {max_url} leaves no room for a phone and a text after the base URL "
            "and credentials"
        )
    return RequestLimits(method, max_phones, max_url, fixed, encoding)


def quoted_lengths(text: pa.Array, encoding: str) -> np.ndarray[Any, Any]:
    """``len(quote_plus(t))`` per text, vectorised for UTF-8."""
    if encoding in _UTF8:
        nbytes = pc.fill_null(pc.binary_length(text), 0).to_numpy().astype(np.int64)
        chars = pc.fill_null(pc.utf8_length(text), 0).to_numpy().astype(np.int64)
        # Count the (usually few) characters quote_plus escapes, not the many it keeps.
        escaped = pc.fill_null(pc.count_substring_regex(text, r"[^A-Za-z0-9_.~ \-]"), 0)
        safe = chars - escaped.to_numpy().astype(np.int64)
        # quote_plus: unreserved ASCII and ' ' (as '+') take 1, every other byte 3.
        return np.asarray(3 * nbytes - 2 * safe)
    out = []
    for value in text.to_pylist():
        try:
            out.append(len(quote_plus(value or "", safe="", encoding=encoding)))
        except (UnicodeEncodeError, LookupError):
            out.append(len(quote_plus(value or "", safe="")))
    return np.asarray(out, dtype=np.int64)


def require_columns(frame: pd.DataFrame, what: str, columns: tuple[str, ...]) -> None:
    """Raise InputError unless ``frame`` is a DataFrame with ``columns``."""
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"{what}: expected a DataFrame, got {type(frame).__name__}")
    for column in columns:
        if column not in frame.columns:
            raise InputError(
                f"{what}: column {column!r} missing; pass the frame validate() returns"
            )


@dataclass
class ReadyRows:
    """The sendable rows of a validated frame (positions ascending) and their columns."""

    pos: np.ndarray[Any, Any]  # row positions in the frame
    phone_all: pa.Array  # whole columns: taken down to ``pos`` only when needed
    text_all: pa.Array
    parts: np.ndarray[Any, Any]  # 1 for a plain row
    split_texts: dict[int, list[str]]  # position -> parts, for parts > 1

    @functools.cached_property
    def phone(self) -> pa.Array:
        """The phones of the sendable rows."""
        return self.phone_all.take(pa.array(self.pos))

    @functools.cached_property
    def text(self) -> pa.Array:
        """The texts of the sendable rows."""
        return self.text_all.take(pa.array(self.pos))


def ready_rows(frame: pd.DataFrame) -> ReadyRows:
    """The rows of ``frame`` that can be sent, with their texts split into parts."""
    text_all = as_large_strings(frame["text"])
    phone_all = as_large_strings(frame["phone"])
    # a row without a phone or a text cannot be sent, whatever its ``valid`` says
    valid = frame["valid"].to_numpy(dtype=bool, na_value=False, copy=True)
    valid &= ~np.asarray(pc.is_null(text_all).to_numpy(zero_copy_only=False), dtype=bool)
    valid &= ~np.asarray(pc.is_null(phone_all).to_numpy(zero_copy_only=False), dtype=bool)
    pos = np.flatnonzero(valid)
    if "parts" in frame.columns:
        parts = frame["parts"].to_numpy(dtype="float64", na_value=1)[pos].astype(np.int64)
    else:
        parts = np.ones(len(pos), dtype=np.int64)
    parts = np.maximum(parts, 1)
    split: dict[int, list[str]] = {}
    for i in np.flatnonzero(parts > 1):
        pieces = split_text(str(text_all[int(pos[i])].as_py()))
        split[int(pos[i])] = pieces
        parts[i] = len(pieces)
    return ReadyRows(pos, phone_all, text_all, parts, split)


@dataclass(frozen=True)
class EntrySizes:
    """What each ready row weighs in a GET request (all zeros for POST).

    Attributes
    ----------
    qlen : ndarray of int
        URL-encoded length of each row's text.
    phone_len : ndarray of int
        Length of each row's phone.
    split_rows : ndarray of int
        The rows (positions in :class:`ReadyRows`) whose text is split into parts.
    split_weight : ndarray of int
        Per split row: all its parts paired with its phone, separators included.
    too_long : ndarray of bool
        Rows that cannot fit in one GET request even alone.
    """

    qlen: np.ndarray[Any, Any]
    phone_len: np.ndarray[Any, Any]
    split_rows: np.ndarray[Any, Any]
    split_weight: np.ndarray[Any, Any]
    too_long: np.ndarray[Any, Any]


def entry_sizes(rows: ReadyRows, limits: RequestLimits) -> EntrySizes:
    """Measure ``rows`` against ``limits``: text and phone lengths, split rows' weights."""
    n = len(rows.pos)
    plain = rows.parts == 1
    split_rows = np.flatnonzero(~plain)
    split_weight = np.zeros(len(split_rows), dtype=np.int64)
    too_long = np.zeros(n, dtype=bool)
    if not limits.get:
        zeros = np.zeros(n, dtype=np.int64)
        return EntrySizes(zeros, zeros.copy(), split_rows, split_weight, too_long)
    qlen = quoted_lengths(rows.text, limits.encoding)
    phone_len = pc.binary_length(rows.phone).to_numpy().astype(np.int64)
    # Split rows: one indivisible paired entry each (all parts in one request).
    for k, i in enumerate(split_rows):
        pieces = rows.split_texts[int(rows.pos[i])]
        q = quoted_lengths(pa.array(pieces, LARGE_STRING), limits.encoding)
        split_weight[k] = int(np.sum(q + phone_len[i] + 2 * SEP))
    too_long[split_rows] = split_weight > limits.paired_cap
    # docs/protocol.md §1: 2048 characters per request
    too_long[plain] = (phone_len + qlen)[plain] > limits.room
    return EntrySizes(qlen, phone_len, split_rows, split_weight, too_long)
