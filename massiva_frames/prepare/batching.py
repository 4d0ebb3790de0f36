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
entries. :func:`~massiva_frames.prepare.lower_bound.minimum_requests` computes a lower
bound on the number of requests any plan could use (for POST the exact minimum); the plan
stays within 1% of it. The options are resolved and the rows measured in :mod:`.sizing`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..wire.protocol import MAX_URL_LENGTH, build_send_params
from .arrow import as_large_strings
from .phones import API_PHONE_LENGTH
from .sizing import (
    DEFAULT_MAX_PHONES,
    SEP,
    ReadyRows,
    RequestLimits,
    entry_sizes,
    ready_rows,
    request_limits,
    require_columns,
)
from .texts import split_text
from .validation import Reason

__all__ = ["Batch", "iter_batches", "plan_batches"]

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
#: 8-byte words read per text, spread evenly from its first byte to its last
_WORDS = 4


def _fingerprints(text: pa.Array, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """A 64-bit fingerprint per text of ``rows``, from its length and ``_WORDS`` 8-byte words.

    Equal texts have equal fingerprints; different texts almost always differ (texts
    filled from one template share their first and last bytes, so the words are spread
    over the whole text). Read straight from the Arrow buffers, unaligned words viewed
    in place: a few numpy passes instead of hashing every byte.
    """
    n = len(text)
    buffers = text.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[text.offset : text.offset + n + 1]
    data = (
        np.frombuffer(buffers[2], dtype=np.uint8)
        if buffers[2] is not None
        else np.zeros(0, dtype=np.uint8)
    )
    start = offsets[rows]
    length = offsets[rows + 1] - start
    mixed = length.astype(np.uint64) * _MIX[0]
    long = np.flatnonzero(length >= 8)
    if len(long):
        # every 8-byte window of the data, in place: gathered as raw bytes (numpy copies
        # unaligned integers one by one), then read as integers
        windows = np.ndarray((len(data) - 7,), dtype="V8", buffer=data, strides=(1,))
        first, span = start[long], length[long] - 8
        h = mixed[long]
        for j in range(_WORDS):
            h ^= windows[first + span * j // (_WORDS - 1)].view(np.uint64)
            h *= _MIX[1]
            h ^= h >> np.uint64(31)
        mixed[long] = h
    short = np.flatnonzero(length < 8)
    if len(short):
        word = np.zeros(len(short), dtype=np.uint64)
        first, size = start[short], length[short]
        for k in range(7):
            inside = np.flatnonzero(k < size)
            word[inside] |= data[first[inside] + k].astype(np.uint64) << np.uint64(8 * k)
        mixed[short] ^= word * _MIX[1]
    out: np.ndarray[Any, Any] = mixed * _MIX[2]
    return out


def _text_codes(text: pa.Array, rows: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], int]:
    """Group code per selected row: equal texts, equal codes (exact), and the count.

    Texts whose fingerprint no other row shares are alone in their group; only the rows
    with a shared fingerprint are hashed in full. When most rows share, hash them all.
    """
    if not len(rows):
        return np.zeros(0, dtype=np.int64), 0
    fingerprints = _fingerprints(text, rows)
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


def _plan(
    rows: ReadyRows, limits: RequestLimits
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Raw batch id per row of ``rows`` and the rows too long for one GET (mask)."""
    n = len(rows.pos)
    raw = np.full(n, -1, dtype=np.int64)
    plain = rows.parts == 1
    m = limits.max_phones
    lp = API_PHONE_LENGTH  # plan with the longest phone: the bound holds for every phone
    room = limits.room  # for telefonos + texto values
    paired_cap = limits.paired_cap
    sizes = entry_sizes(rows, limits)
    qlen, too_long = sizes.qlen, sizes.too_long
    # Split rows: one indivisible paired item each (all parts in one request).
    split_idx, split_weight = sizes.split_rows, sizes.split_weight

    ok_plain = np.flatnonzero(plain & ~too_long)
    codes, n_groups = _text_codes(rows.text_all, rows.pos[ok_plain])
    counts = np.bincount(codes, minlength=n_groups)
    group_q = np.zeros(n_groups, dtype=np.int64)
    if limits.get and n_groups:
        group_q[codes] = qlen[ok_plain]
        capacity = np.minimum(m, np.maximum(1, (room - group_q + SEP) // (lp + SEP)))
    else:
        capacity = np.full(n_groups, m, dtype=np.int64)
    full = counts // capacity
    tail = counts % capacity
    entry_weight = lp + group_q + 2 * SEP if limits.get else np.zeros(n_groups, np.int64)
    pooled = tail > 0
    if limits.get:
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
        if limits.get:
            item_order = np.lexsort((pool_rows, pool_group, -pool_weight))
        else:
            item_order = np.arange(len(pool_rows))
        cap = paired_cap if limits.get else int(pool_count.sum()) + 1
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
    require_columns(validated, "validated", ("phone", "text", "valid", "state", "reason"))
    limits = request_limits(
        method=method,
        max_phones=max_phones,
        client=client,
        base_url=base_url,
        usuario=usuario,
        clave=clave,
        group=group,
        max_url=max_url,
    )
    rows = ready_rows(validated)
    raw, too_long = _plan(rows, limits)
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
    require_columns(planned, "planned", ("phone", "text", "batch", "batch_pos"))
    batch = planned["batch"].to_numpy(dtype="float64", na_value=np.nan)
    sel = np.flatnonzero(~np.isnan(batch))
    if not len(sel):
        return
    b = batch[sel].astype(np.int64)
    p = planned["batch_pos"].to_numpy(dtype="float64", na_value=0)[sel].astype(np.int64)
    order = np.lexsort((p, b))
    sel, b = sel[order], b[order]
    labels = planned.index[sel]
    phones = as_large_strings(planned["phone"]).take(pa.array(sel)).to_numpy(zero_copy_only=False)
    texts = as_large_strings(planned["text"]).take(pa.array(sel)).to_numpy(zero_copy_only=False)
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
