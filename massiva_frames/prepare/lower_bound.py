"""``minimum_requests``: a lower bound on the number of requests any plan of the rows needs.

For POST it is the exact minimum; for GET it prices each text's rows as shared or paired
entries and counts paired entries fractionally through dual feasible functions, so a
plan from :func:`~massiva_frames.prepare.batching.plan_batches` can be measured against it
(it stays within 1%).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..wire.protocol import MAX_URL_LENGTH
from .phones import API_PHONE_LENGTH
from .sizing import (
    DEFAULT_MAX_PHONES,
    SEP,
    entry_sizes,
    ready_rows,
    request_limits,
    require_columns,
)

__all__ = ["minimum_requests"]


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
    request at all are left out, as :func:`~massiva_frames.prepare.batching.plan_batches`
    marks them invalid.

    Parameters
    ----------
    validated : DataFrame
        What :func:`~massiva_frames.prepare.validation.validate` returned.
    method, max_phones, client, base_url, usuario, clave, group, max_url
        As for :func:`~massiva_frames.prepare.batching.plan_batches`.

    Returns
    -------
    int
        No plan of these rows uses fewer requests.

    Examples
    --------
    >>> from massiva_frames.prepare.validation import validate
    >>> df = pd.DataFrame({"tel": ["04141234567"] * 3, "msg": ["a", "b", "c"]})
    >>> minimum_requests(validate(df, phone="tel", text="msg", dedupe=None), max_phones=2)
    2
    """
    require_columns(validated, "validated", ("phone", "text", "valid"))
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
    m = limits.max_phones
    if not limits.get:
        return math.ceil(int(rows.parts.sum()) / m)
    paired_cap = limits.paired_cap
    sizes = entry_sizes(rows, limits)
    qlen, phone_len = sizes.qlen, sizes.phone_len
    keep = (rows.parts == 1) & ~sizes.too_long
    split_fits = ~sizes.too_long[sizes.split_rows]
    idx = np.flatnonzero(keep)
    codes, _ = pd.factorize(pd.array(rows.text.take(pa.array(idx)), dtype="string[pyarrow]"))
    g = int(codes.max()) + 1 if len(codes) else 0
    c = np.bincount(codes, minlength=g)
    q_g = np.zeros(g, dtype=np.int64)
    q_g[codes] = qlen[idx]
    lp = np.full(g, API_PHONE_LENGTH, dtype=np.int64)
    np.minimum.at(lp, codes, phone_len[idx])
    cap = np.minimum(m, np.maximum(1, (limits.room - q_g + SEP) // (lp + SEP)))
    full, rest = c // cap, c % cap
    w = lp + q_g + 2 * SEP
    sw = sizes.split_weight[split_fits]
    sn = rows.parts[sizes.split_rows[split_fits]]
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
