"""A synthetic campaign of a million rows, for the large figures of the Analytics guide.

The sample in ``data/samples/`` is what 1,200 rows really did in the sandbox; this is
what a campaign a thousand times larger looks like, drawn from a seed in a few seconds
and never written to disk. It has the columns the analytics read, in the shapes of
``send()``'s results and of ``read_callbacks(kind="status")`` (docs/architecture.md):

- operators in rough market shares, 0.3 % foreign numbers that the API rejects
  (operator ``other``), 3 % invalid rows, 1 % suppressed, two requests ``unknown``;
- 500 phones per request, two requests a second from 08:00 Caracas time (about 2 h
  15 min in all), ``sent_at`` from this machine's clock, with microseconds;
- of the accepted messages 90 % delivered, 6 % failed, the rest still pending; the
  provider's ``updated_at`` in whole seconds (docs/protocol.md §2): most deliveries
  3-15 s after the send, 0.5 % of them from 2 minutes to 3 hours later (phones
  switched off).

::

    results, status = large_campaign(1_000_000, seed=7)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["large_campaign"]

STATES = (
    "invalid",
    "suppressed",
    "scheduled",
    "accepted",
    "rejected",
    "unknown",
    "delivered",
    "failed",
)
#: docs/protocol.md §1: operator codes and rough market shares
OPERATORS = ((412, 0.22), (414, 0.34), (416, 0.16), (424, 0.18), (426, 0.10))
START = pd.Timestamp("2026-11-25 08:00", tz="America/Caracas")
PER_REQUEST = 500
REQUESTS_PER_SECOND = 0.24  # 120 messages a second


def _strings(values: np.ndarray, missing: np.ndarray) -> pd.Series:
    """A ``string`` Series from a numpy array (``missing`` rows <NA>), built by arrow:
    a million Python strings would take seconds."""
    import pyarrow as pa

    array = pa.array(values, mask=missing)
    if not pa.types.is_string(array.type):
        array = array.cast(pa.string())
    return pd.Series(pd.arrays.ArrowStringArray(array))


def large_campaign(n: int = 1_000_000, *, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The results frame and the status log of a synthetic campaign of ``n`` rows."""
    rng = np.random.default_rng(seed)
    codes = np.array([c for c, _ in OPERATORS], dtype=np.int64)
    shares = np.array([s for _, s in OPERATORS])
    number = rng.integers(0, 10_000_000, n)
    phone = 58 * 10**10 + rng.choice(codes, n, p=shares) * 10**7 + number
    kind = rng.random(n)
    foreign = kind < 0.003
    invalid = (kind >= 0.003) & (kind < 0.033)
    suppressed = (kind >= 0.033) & (kind < 0.043)
    phone[foreign] = 1_305_555 * 10**7 + number[foreign]  # 17 digits: not Venezuelan

    sendable = ~(invalid | suppressed)
    position = np.cumsum(sendable) - 1  # order among the rows sent
    batch = position // PER_REQUEST + 1
    lost = rng.choice(batch[sendable].max(), 2, replace=False) + 1  # answers never read
    state = np.full(n, STATES.index("accepted"), dtype=np.int8)
    state[np.isin(batch, lost)] = STATES.index("unknown")
    state[foreign] = STATES.index("rejected")
    state[invalid] = STATES.index("invalid")
    state[suppressed] = STATES.index("suppressed")

    offset = (batch - 1) / REQUESTS_PER_SECOND + rng.random(n) * 0.3
    sent_at = START.tz_convert("UTC") + pd.to_timedelta(offset, unit="s")
    message_id = pd.array(123451 + position, dtype="Int64")
    message_id[~sendable] = pd.NA
    batches = pd.array(batch, dtype="Int64")
    batches[~sendable] = pd.NA
    reason = np.select(
        [invalid, suppressed, foreign], ["phone_missing", "duplicate", "api_rejected"], ""
    )
    results = pd.DataFrame(
        {
            "phone": _strings(phone, invalid),
            "state": pd.Categorical.from_codes(state, categories=list(STATES)),
            "reason": _strings(reason, reason == ""),
            "batch": batches,
            "message_id": message_id,
            "sent_at": pd.Series(sent_at).astype("datetime64[us, UTC]").where(sendable),
        }
    )

    # the status log: one final callback for each accepted message that has one
    ids = np.flatnonzero(state == STATES.index("accepted"))
    fate = rng.random(len(ids))
    has_callback = fate < 0.96
    logged, ok = ids[has_callback], fate[has_callback] < 0.90
    delay = 2.5 + rng.lognormal(np.log(3.5), 0.45, len(logged))
    late = rng.random(len(logged)) < 0.005
    delay[late] = rng.uniform(120, 3 * 3600, late.sum())
    delay[~ok] = rng.exponential(20, (~ok).sum()) + 1
    sent = pd.DatetimeIndex(results["sent_at"].iloc[logged])
    updated = (sent + pd.to_timedelta(delay, unit="s")).floor("s")
    status = pd.DataFrame(
        {
            "message_id": results["message_id"].to_numpy()[logged],
            "status": pd.Categorical.from_codes((~ok).astype(np.int8), ["delivered", "failed"]),
            "updated_at": updated.tz_convert("America/Caracas").as_unit("us"),
            "line": _strings(np.full(len(logged), "584141234567"), ~ok),
            "received_at": (updated + pd.Timedelta(milliseconds=80)).as_unit("us"),
        }
    )
    return results, status
