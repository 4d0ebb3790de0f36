"""Batch planning: validated rows -> API requests, deterministic and near-minimal.

The requests follow docs/protocol.md §1.

Rows with the same text share one request (one ``texto``, many ``telefonos``); the rest
are paired (texts joined with ``|``, one per phone). Every request holds at most
``max_phones`` phones and, for GET, its exact URL (base URL, ``?``, credentials and all,
form-encoded as :func:`massiva_frames.wire.protocol.encode_query` does) is at most ``max_url``
characters.

How: each text's rows are cut into full shared requests; each text's leftover either
becomes one more shared request or joins the paired pool when it weighs less than one
request; the pool is packed heaviest-first, topping each request up with the lightest
entries. :func:`minimum_requests` computes a lower bound on the number of requests any
plan could use (for POST the exact minimum); the plan stays within 1% of it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from ..wire.protocol import (
    DEFAULT_BASE_URL,
    MAX_URL_LENGTH,
    SEND_PATH,
    build_send_params,
    encode_query,
)
from .phones import API_PHONE_LENGTH
from .texts import split_text
from .validation import Reason

__all__ = ["Batch", "iter_batches", "minimum_requests", "plan_batches"]

DEFAULT_MAX_PHONES = 500
# Encoded separators: ';' -> '%3B' between phones, '|' -> '%7C' between paired texts.
_SEP = 3
_PROBE_PHONE = "5" * API_PHONE_LENGTH
_PROBE_TEXT = "0"
_UTF8 = ("utf-8", "utf8", "utf_8")
_SWAPS = 48  # heavy-for-light trades tried per request when packing paired entries


@dataclass(frozen=True, slots=True, repr=False)
class Batch:
    """One request, ready to send: phones and one shared text, or one text per phone.

    Attributes
    ----------
    number : int
        The batch number (``batch`` column of the planned frame), from 0.
    index : pandas.Index
        Input row labels in request order, one per phone entry (a row split into parts
        appears once per part).
    phones : tuple of str
        Normalised phones, in request order.
    texts : tuple of str
        One text shared by every phone, or one text per phone (paired).
    part : tuple of int or None
        For batches carrying split texts: the part number (1-based) of each entry.
    """

    number: int
    index: pd.Index
    phones: tuple[str, ...]
    texts: tuple[str, ...]
    part: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.phones)

    def __repr__(self) -> str:
        kind = "shared" if self.shared else "paired"
        return f"Batch(number={self.number}, phones={len(self.phones)}, texts={kind})"

    @property
    def shared(self) -> bool:
        """True when one text goes to every phone."""
        return len(self.texts) == 1

    def params(self, usuario: str, clave: str, group: str | None = None) -> dict[str, str]:
        """The SendSms parameters of this batch (docs/protocol.md §1)."""
        return build_send_params(usuario, clave, self.phones, self.texts, group)


@dataclass
class _Bounds:
    method: str
    max_phones: int
    max_url: int
    fixed: int  # URL length with empty telefonos and texto values
    encoding: str

    @property
    def get(self) -> bool:
        return self.method == "GET"


def _bounds(
    method: str,
    max_phones: int,
    client: Any,
    base_url: str | None,
    usuario: str | None,
    clave: str | None,
    group: str | None,
    max_url: int,
) -> _Bounds:
    if not isinstance(method, str) or method.upper() not in ("GET", "POST"):
        raise InputError(f"method: expected 'GET' or 'POST', got {method!r}")
    method = method.upper()
    if isinstance(max_phones, bool) or not isinstance(max_phones, int) or max_phones < 1:
        raise InputError(f"max_phones: expected a positive int, got {max_phones!r}")
    if isinstance(max_url, bool) or not isinstance(max_url, int) or max_url < 1:
        raise InputError(f"max_url: expected a positive int, got {max_url!r}")
    encoding = str(getattr(client, "encoding", "utf-8") or "utf-8").lower()
    if method == "POST":
        return _Bounds(method, max_phones, max_url, 0, encoding)
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
    return _Bounds(method, max_phones, max_url, fixed, encoding)


def _quoted_lengths(text: pa.Array, encoding: str) -> np.ndarray[Any, Any]:
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


def _require(frame: pd.DataFrame, what: str, columns: tuple[str, ...]) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"{what}: expected a DataFrame, got {type(frame).__name__}")
    for column in columns:
        if column not in frame.columns:
            raise InputError(
                f"{what}: column {column!r} missing; pass the frame validate() returns"
            )


@dataclass
class _Rows:
    """The sendable rows of a validated frame (positions ascending) and their columns."""

    pos: np.ndarray[Any, Any]  # row positions in the frame
    phone_all: pa.Array  # whole columns: taken down to ``pos`` only when needed
    text_all: pa.Array
    parts: np.ndarray[Any, Any]  # 1 for a plain row
    split_texts: dict[int, list[str]]  # position -> parts, for parts > 1

    @functools.cached_property
    def phone(self) -> pa.Array:
        return self.phone_all.take(pa.array(self.pos))

    @functools.cached_property
    def text(self) -> pa.Array:
        return self.text_all.take(pa.array(self.pos))


def _rows(frame: pd.DataFrame) -> _Rows:
    text_all = _arrow(frame["text"])
    phone_all = _arrow(frame["phone"])
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
    return _Rows(pos, phone_all, text_all, parts, split)


def _arrow(series: pd.Series) -> pa.Array:
    arr = pa.array(series.astype("string[pyarrow]").array)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.cast(pa.large_string())


def _pack(
    weights: np.ndarray[Any, Any], counts: np.ndarray[Any, Any], cap: int, max_count: int
) -> np.ndarray[Any, Any]:
    """Bin per item; items sorted heaviest first.

    Each bin takes a run of the heaviest remaining items and tops up with the lightest
    ones; among the last ``_SWAPS + 1`` choices of how many heavy items to take, the one
    that leaves the least room wins (a few heavy items traded for more light ones often
    fills a request exactly). Binary searches on prefix sums: O(bins * log n).
    """
    n = len(weights)
    if not weights.any() and (counts == 1).all():
        return np.arange(n, dtype=np.int64) // max_count  # POST: only the phone cap binds
    wsum = np.concatenate([[0], np.cumsum(weights, dtype=np.int64)])
    csum = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    bins = np.empty(n, dtype=np.int64)
    lo, hi, b = 0, n, 0
    while lo < hi:
        jw = int(np.searchsorted(wsum, wsum[lo] + cap, side="right")) - 1 - lo
        jc = int(np.searchsorted(csum, csum[lo] + max_count, side="right")) - 1 - lo
        top = max(1, min(jw, jc, hi - lo))
        heavy = np.arange(max(1, top - _SWAPS), top + 1)
        room_w = cap - (wsum[lo + heavy] - wsum[lo])
        room_c = max_count - (csum[lo + heavy] - csum[lo])
        light_w = hi - np.searchsorted(wsum, wsum[hi] - room_w, side="left")
        light_c = hi - np.searchsorted(csum, csum[hi] - room_c, side="left")
        light = np.maximum(0, np.minimum(np.minimum(light_w, light_c), hi - lo - heavy))
        light = np.where(room_w < 0, 0, light)
        used = (wsum[lo + heavy] - wsum[lo]) + (wsum[hi] - wsum[hi - light])
        best = int(np.flatnonzero(used == used.max())[-1])  # ties: more heavy items
        j, k = int(heavy[best]), int(light[best])
        bins[lo : lo + j] = b
        if k:
            bins[hi - k : hi] = b
        lo, hi, b = lo + j, hi - k, b + 1
    return bins


_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def _fingerprints(text: pa.Array) -> np.ndarray[Any, Any]:
    """A 64-bit fingerprint per text from its length and first and last 8 bytes.

    Equal texts have equal fingerprints; different texts almost always differ. Read
    straight from the Arrow buffers: a few numpy passes instead of hashing every byte.
    """
    n = len(text)
    buffers = text.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[text.offset : text.offset + n + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else None
    padded = np.zeros((0 if data is None else len(data)) + 16, dtype=np.uint8)
    if data is not None:
        padded[8 : 8 + len(data)] = data
    start, end = offsets[:-1] + 8, offsets[1:] + 8
    length = end - start
    first = np.zeros(n, dtype=np.uint64)
    last = np.zeros(n, dtype=np.uint64)
    for k in range(8):
        inside = k < length
        shift = np.uint64(8 * k)
        first |= np.where(inside, padded[start + k], 0).astype(np.uint64) << shift
        last |= np.where(inside, padded[end - 1 - k], 0).astype(np.uint64) << shift
    mixed = length.astype(np.uint64) * _MIX[0]
    mixed ^= first * _MIX[1]
    mixed ^= (last ^ (last >> np.uint64(29))) * _MIX[2]
    return mixed


def _text_codes(text: pa.Array, rows: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], int]:
    """Group code per selected row: equal texts, equal codes (exact), and the count.

    Texts whose fingerprint no other row shares are alone in their group; only the rows
    with a shared fingerprint are hashed in full. When most rows share, hash them all.
    """
    if not len(rows):
        return np.zeros(0, dtype=np.int64), 0
    fingerprints = _fingerprints(text)[rows]
    shared = pd.Series(fingerprints.view(np.int64)).duplicated(keep=False).to_numpy()
    if shared.mean() > 0.5:
        encoded = pc.dictionary_encode(text.take(pa.array(rows)))
        codes = pc.fill_null(encoded.indices, 0).to_numpy().astype(np.int64)
        return codes, len(encoded.dictionary)
    codes = np.empty(len(rows), dtype=np.int64)
    encoded = pc.dictionary_encode(text.take(pa.array(rows[shared])))
    codes[shared] = pc.fill_null(encoded.indices, 0).to_numpy()
    known = len(encoded.dictionary)
    alone = int((~shared).sum())
    codes[~shared] = known + np.arange(alone)
    return codes, known + alone


def _plan(rows: _Rows, bounds: _Bounds) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Raw batch id per row of ``rows`` and the rows too long for one GET (mask)."""
    n = len(rows.pos)
    too_long = np.zeros(n, dtype=bool)
    raw = np.full(n, -1, dtype=np.int64)
    plain = rows.parts == 1
    m = bounds.max_phones
    lp = API_PHONE_LENGTH  # plan with the longest phone: the bound holds for every phone
    room = bounds.max_url - bounds.fixed  # for telefonos + texto values
    paired_cap = room + 2 * _SEP
    qlen = _quoted_lengths(rows.text, bounds.encoding) if bounds.get else np.zeros(n, np.int64)

    # Split rows: one indivisible paired item each (all parts in one request).
    split_idx = np.flatnonzero(~plain)
    split_weight = np.zeros(len(split_idx), dtype=np.int64)
    for k, i in enumerate(split_idx):
        pieces = rows.split_texts[int(rows.pos[i])]
        if bounds.get:
            q = _quoted_lengths(pa.array(pieces, pa.large_string()), bounds.encoding)
            phone_len = len(str(rows.phone[int(i)].as_py()))
            split_weight[k] = int(np.sum(q + phone_len + 2 * _SEP))
            too_long[i] = split_weight[k] > paired_cap
    if bounds.get:
        phone_len = pc.binary_length(rows.phone).to_numpy().astype(np.int64)
        too_long[plain] = (phone_len + qlen)[plain] > room  # docs/protocol.md §1: 2048 per request

    ok_plain = np.flatnonzero(plain & ~too_long)
    codes, n_groups = _text_codes(rows.text_all, rows.pos[ok_plain])
    counts = np.bincount(codes, minlength=n_groups)
    group_q = np.zeros(n_groups, dtype=np.int64)
    if bounds.get and n_groups:
        group_q[codes] = qlen[ok_plain]
        capacity = np.minimum(m, np.maximum(1, (room - group_q + _SEP) // (lp + _SEP)))
    else:
        capacity = np.full(n_groups, m, dtype=np.int64)
    full = counts // capacity
    tail = counts % capacity
    entry_weight = lp + group_q + 2 * _SEP if bounds.get else np.zeros(n_groups, np.int64)
    pooled = tail > 0
    if bounds.get:
        # A leftover that weighs less than one request rides along in paired requests.
        pooled &= tail * entry_weight < paired_cap
    own = full + (~pooled & (tail > 0))
    offset = np.concatenate([[0], np.cumsum(own)])[:-1]

    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])[:-1]
    sorted_codes = codes[order]
    rank = np.arange(len(order)) - starts[sorted_codes]
    chunk = rank // capacity[sorted_codes]
    in_pool = pooled[sorted_codes] & (chunk == full[sorted_codes])
    shared_rows = ok_plain[order]
    raw[shared_rows[~in_pool]] = (offset[sorted_codes] + chunk)[~in_pool]
    n_shared = int(own.sum())

    pool_rows = np.concatenate([shared_rows[in_pool], split_idx[~too_long[split_idx]]])
    pool_group = np.concatenate(
        [sorted_codes[in_pool], np.full(int((~too_long[split_idx]).sum()), n_groups)]
    )
    pool_weight = np.concatenate(
        [entry_weight[sorted_codes[in_pool]], split_weight[~too_long[split_idx]]]
    )
    pool_count = rows.parts[pool_rows]
    if len(pool_rows):
        # Heaviest first; one text's entries stay together; then input order. (POST: all
        # weigh nothing, and the pool is already in text, then input, order.)
        if bounds.get:
            item_order = np.lexsort((pool_rows, pool_group, -pool_weight))
        else:
            item_order = np.arange(len(pool_rows))
        cap = paired_cap if bounds.get else int(pool_count.sum()) + 1
        bins = _pack(pool_weight[item_order], pool_count[item_order], cap, m)
        raw[pool_rows[item_order]] = n_shared + bins
    return raw, too_long


def _number(
    raw: np.ndarray[Any, Any], pos: np.ndarray[Any, Any], entries: np.ndarray[Any, Any]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Renumber batches by their first row and give each row its entry position."""
    planned = raw >= 0
    ids = raw[planned]
    if not len(ids):
        return raw, np.full(len(raw), -1, dtype=np.int64)
    uniq, first = np.unique(ids, return_index=True)  # rows are in input order
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
    lookup = np.full(int(uniq.max()) + 1, -1, dtype=np.int64)
    lookup[uniq] = rank
    batch = np.full(len(raw), -1, dtype=np.int64)
    batch[planned] = lookup[ids]
    order = np.argsort(batch[planned], kind="stable")  # rows are in input order already
    sorted_batch = batch[planned][order]
    size = entries[planned][order]
    cum = np.cumsum(size) - size
    start = np.concatenate([[True], sorted_batch[1:] != sorted_batch[:-1]])
    base = np.maximum.accumulate(np.where(start, cum, 0))
    batch_pos = np.full(len(raw), -1, dtype=np.int64)
    idx = np.flatnonzero(planned)[order]
    batch_pos[idx] = cum - base
    return batch, batch_pos


def plan_batches(
    validated: pd.DataFrame,
    *,
    method: str = "POST",
    max_phones: int = DEFAULT_MAX_PHONES,
    client: Any = None,
    base_url: str | None = None,
    usuario: str | None = None,
    clave: str | None = None,
    group: str | None = None,
    max_url: int = MAX_URL_LENGTH,
) -> pd.DataFrame:
    """Assign every ready row to one request; add ``batch`` and ``batch_pos``.

    Parameters
    ----------
    validated : DataFrame
        What :func:`~massiva_frames.prepare.validation.validate` returned.
    method : {"POST", "GET"}
        GET requests are also bounded by their exact URL length.
    max_phones : int, default 500
        Phones per request (docs/protocol.md §5: not stated by the provider; a configurable cap).
    client : MassivaClient, optional
        For GET: its ``get_url_length`` gives the base URL and credentials' share.
    base_url, usuario, clave, group : str, optional
        For GET without a client: what the URL will carry (``clave`` is only measured).
    max_url : int, default 2048
        docs/protocol.md §1: a GET URL is at most 2048 characters.

    Returns
    -------
    DataFrame
        A copy with ``batch`` (Int64, from 0, ordered by each batch's first row) and
        ``batch_pos`` (Int64, the row's first entry in its request) on ready rows and
        <NA> elsewhere. A GET row that cannot fit in 2048 characters even alone becomes
        ``invalid`` with reason ``url_too_long``. Same input, same plan.

    Examples
    --------
    >>> from massiva_frames.prepare.validation import validate
    >>> df = pd.DataFrame({"tel": ["04141234567", "04241234567", "04161234567"],
    ...                    "msg": ["Hola", "Hola", "Chao"]})
    >>> plan_batches(validate(df, phone="tel", text="msg"), max_phones=2)[["batch", "batch_pos"]]
       batch  batch_pos
    0      0          0
    1      0          1
    2      1          0
    """
    _require(validated, "validated", ("phone", "text", "valid", "state", "reason"))
    bounds = _bounds(method, max_phones, client, base_url, usuario, clave, group, max_url)
    rows = _rows(validated)
    raw, too_long = _plan(rows, bounds)
    batch, batch_pos = _number(raw, rows.pos, rows.parts)
    n = len(validated)
    out = validated.copy(deep=False)  # copy-on-write: columns are shared until changed
    full_batch = np.full(n, -1, dtype=np.int64)
    full_pos = np.full(n, -1, dtype=np.int64)
    full_batch[rows.pos] = batch
    full_pos[rows.pos] = batch_pos
    out["batch"] = pd.arrays.IntegerArray(full_batch, full_batch < 0)
    out["batch_pos"] = pd.arrays.IntegerArray(full_pos, full_pos < 0)
    if too_long.any():
        bad = np.zeros(n, dtype=bool)
        bad[rows.pos[too_long]] = True
        out.loc[bad, "valid"] = False
        out.loc[bad, "state"] = Reason.URL_TOO_LONG.state
        out.loc[bad, "reason"] = Reason.URL_TOO_LONG.value
    return out


def iter_batches(planned: pd.DataFrame) -> Iterator[Batch]:
    """Yield the planned requests in batch order, ready for the client.

    Examples
    --------
    >>> from massiva_frames.prepare.validation import validate
    >>> df = pd.DataFrame({"tel": ["04141234567", "04241234567"], "msg": ["Hola", "Hola"]})
    >>> [b.texts for b in iter_batches(plan_batches(validate(df, phone="tel", text="msg")))]
    [('Hola',)]
    """
    _require(planned, "planned", ("phone", "text", "batch", "batch_pos"))
    batch = planned["batch"].to_numpy(dtype="float64", na_value=np.nan)
    sel = np.flatnonzero(~np.isnan(batch))
    if not len(sel):
        return
    b = batch[sel].astype(np.int64)
    p = planned["batch_pos"].to_numpy(dtype="float64", na_value=0)[sel].astype(np.int64)
    order = np.lexsort((p, b))
    sel, b = sel[order], b[order]
    labels = planned.index[sel]
    phones = _arrow(planned["phone"]).take(pa.array(sel)).to_numpy(zero_copy_only=False)
    texts = _arrow(planned["text"]).take(pa.array(sel)).to_numpy(zero_copy_only=False)
    if "parts" in planned.columns:
        parts = planned["parts"].to_numpy(dtype="float64", na_value=1)[sel].astype(np.int64)
    else:
        parts = np.ones(len(sel), dtype=np.int64)
    bounds = np.flatnonzero(np.diff(b)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(sel)]])
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        number = int(b[start])
        t = texts[start:end]
        if (parts[start:end] > 1).any():
            yield _split_batch(number, labels[start:end], phones[start:end], t, parts[start:end])
        elif (t == t[0]).all():
            yield Batch(number, labels[start:end], tuple(phones[start:end].tolist()), (t[0],))
        else:
            yield Batch(
                number, labels[start:end], tuple(phones[start:end].tolist()), tuple(t.tolist())
            )


def _split_batch(
    number: int,
    labels: pd.Index,
    phones: np.ndarray[Any, Any],
    texts: np.ndarray[Any, Any],
    parts: np.ndarray[Any, Any],
) -> Batch:
    positions: list[int] = []
    out_phones: list[str] = []
    out_texts: list[str] = []
    part_no: list[int] = []
    for i, (phone, text, count) in enumerate(zip(phones, texts, parts, strict=True)):
        pieces = split_text(str(text)) if count > 1 else [str(text)]
        for k, piece in enumerate(pieces, start=1):
            positions.append(i)
            out_phones.append(str(phone))
            out_texts.append(piece)
            part_no.append(k)
    shared = len(set(out_texts)) == 1
    return Batch(
        number,
        labels[positions],
        tuple(out_phones),
        (out_texts[0],) if shared else tuple(out_texts),
        tuple(part_no),
    )


def _dff(weights: np.ndarray[Any, Any], cap: int, k: int) -> np.ndarray[Any, Any]:
    """Dual feasible function u^(k) (Fekete & Schepers), normalised by the capacity."""
    scaled = (k + 1) * weights
    exact = scaled % cap == 0
    return np.where(exact, weights / cap, np.floor(scaled / cap) / k)


def minimum_requests(
    validated: pd.DataFrame,
    *,
    method: str = "POST",
    max_phones: int = DEFAULT_MAX_PHONES,
    client: Any = None,
    base_url: str | None = None,
    usuario: str | None = None,
    clave: str | None = None,
    group: str | None = None,
    max_url: int = MAX_URL_LENGTH,
) -> int:
    """A lower bound on the number of requests any plan of these rows needs.

    For POST it is the exact minimum, ``ceil(entries / max_phones)``. For GET, each text
    either fills shared requests (at most ``cap`` phones fit with it) or pays its text for
    every phone in paired requests; the bound takes, per text, the cheapest of "one more
    shared request for the leftover", "leftover paired" and "all paired", with paired
    entries counted fractionally through dual feasible functions (which keep a
    bin-packing bound valid for indivisible entries). Rows that cannot fit in a GET
    request at all are left out, as :func:`plan_batches` marks them invalid.

    Examples
    --------
    >>> from massiva_frames.prepare.validation import validate
    >>> df = pd.DataFrame({"tel": ["04141234567"] * 3, "msg": ["a", "b", "c"]})
    >>> minimum_requests(validate(df, phone="tel", text="msg", dedupe=None), max_phones=2)
    2
    """
    _require(validated, "validated", ("phone", "text", "valid"))
    bounds = _bounds(method, max_phones, client, base_url, usuario, clave, group, max_url)
    rows = _rows(validated)
    m = bounds.max_phones
    if not bounds.get:
        return math.ceil(int(rows.parts.sum()) / m)
    room = bounds.max_url - bounds.fixed
    paired_cap = room + 2 * _SEP
    qlen = _quoted_lengths(rows.text, bounds.encoding)
    phone_len = pc.binary_length(rows.phone).to_numpy().astype(np.int64)
    plain = rows.parts == 1
    keep = plain & (phone_len + qlen <= room)
    split_w: list[int] = []
    split_n: list[int] = []
    for i in np.flatnonzero(~plain):
        pieces = rows.split_texts[int(rows.pos[i])]
        q = _quoted_lengths(pa.array(pieces, pa.large_string()), bounds.encoding)
        weight = int(np.sum(q + phone_len[i] + 2 * _SEP))
        if weight <= paired_cap:
            split_w.append(weight)
            split_n.append(len(pieces))
    idx = np.flatnonzero(keep)
    codes, _ = pd.factorize(pd.array(rows.text.take(pa.array(idx)), dtype="string[pyarrow]"))
    g = int(codes.max()) + 1 if len(codes) else 0
    c = np.bincount(codes, minlength=g)
    q_g = np.zeros(g, dtype=np.int64)
    q_g[codes] = qlen[idx]
    lp = np.full(g, API_PHONE_LENGTH, dtype=np.int64)
    np.minimum.at(lp, codes, phone_len[idx])
    cap = np.minimum(m, np.maximum(1, (room - q_g + _SEP) // (lp + _SEP)))
    full, rest = c // cap, c % cap
    w = lp + q_g + 2 * _SEP
    sw = np.asarray(split_w, dtype=np.int64)
    sn = np.asarray(split_n, dtype=np.int64)
    entries = int(c.sum() + sn.sum())
    best = math.ceil(entries / m) if entries else 0

    def bound(phi: np.ndarray[Any, Any], phi_split: np.ndarray[Any, Any]) -> int:
        a = full + (rest > 0)
        b = full + rest * phi
        whole = c * phi
        total = float(np.minimum(np.minimum(a, b), whole).sum() + phi_split.sum())
        return math.ceil(total - 1e-9)

    candidates = [(w / paired_cap, sw / paired_cap), (np.full(g, 1 / m), sn / m)]
    for lam in (0.25, 0.5, 0.75):
        candidates.append(
            (lam * w / paired_cap + (1 - lam) / m, lam * sw / paired_cap + (1 - lam) * sn / m)
        )
    # DFFs u^(k) bite for k near capacity / weight: take the weights most entries have.
    weights = np.concatenate([w, sw])
    mass = np.concatenate([c, np.ones(len(sw), dtype=np.int64)])
    uniq, inverse = np.unique(weights, return_inverse=True)
    common = uniq[np.argsort(-np.bincount(inverse, weights=mass), kind="stable")[:20]]
    ks: set[int] = set()
    for weight in common.tolist():
        base = paired_cap // max(int(weight), 1)
        ks.update(k for k in (base - 1, base, base + 1) if k >= 1)
    for k in sorted(ks):
        candidates.append((_dff(w, paired_cap, k), _dff(sw, paired_cap, k)))
    for phi, phi_split in candidates:
        best = max(best, bound(phi, phi_split))
    return best
