"""A synthetic campaign of a million rows, for the large figures of the Analytics guide.

The sample in ``data/samples/`` is what 1,200 rows really did in the sandbox; this is
what a campaign a thousand times larger looks like, drawn from a seed in a few seconds
and never written to disk. It has the shapes of ``send()``'s results and of
``read_callbacks(kind="status")`` (docs/architecture.md), with:

- operators in rough market shares, 0.3 % foreign numbers that the API rejects
  (operator ``other``), 3 % invalid rows, 1 % suppressed, a few ``unknown``;
- 500 phones per request, sent over about 2 h 20 min from 08:00 Caracas time, with
  this machine's microsecond ``sent_at``;
- of the accepted messages 90 % delivered, 6 % failed and the rest still pending;
  the provider's ``updated_at`` in whole seconds (docs/protocol.md §2): most
  deliveries 3-10 s after the send, 0.5 % of them from 2 minutes to 3 hours later
  (phones switched off).

    results, status = large_campaign(1_000_000, seed=7)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["large_campaign"]

STATES = ("invalid", "suppressed", "scheduled", "accepted", "rejected", "unknown", "delivered", "failed")
#: docs/protocol.md §1: operator codes and rough market shares
OPERATORS = (("414", 0.34), ("424", 0.18), ("412", 0.22), ("416", 0.16), ("426", 0.10))
START = pd.Timestamp("2026-11-25 08:00", tz="America/Caracas")
PER_REQUEST = 500
REQUESTS_PER_SECOND = 0.24  # 120 messages/s


def large_campaign(n: int = 1_000_000, *, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The results frame and the status log of a synthetic campaign of ``n`` rows."""
    rng = np.random.default_rng(seed)
    codes = np.array([c for c, _ in OPERATORS])
    shares = np.array([s for _, s in OPERATORS])
    number = rng.integers(0, 10_000_000, n)
    phone = pd.Series(
        pd.array(
            np.char.add(np.char.add("58", rng.choice(codes, n, p=shares)), np.char.zfill(number.astype(str), 7)),
            dtype="string",
        )
    )
    kind = rng.random(n)
    foreign = kind < 0.003
    invalid = (kind >= 0.003) & (kind < 0.033)
    suppressed = (kind >= 0.033) & (kind < 0.043)
    phone[foreign] = np.char.add("1305555", np.char.zfill(number[foreign].astype(str), 7))
    phone[invalid] = pd.NA

    state = np.full(n, "accepted", dtype=object)
    state[invalid] = "invalid"
    state[suppressed] = "suppressed"
    state[foreign] = "rejected"
    sendable = ~(invalid | suppressed)
    position = np.cumsum(sendable) - 1  # order among the rows sent
    batch = np.where(sendable, position // PER_REQUEST + 1, -1)
    unknown = sendable & np.isin(batch, rng.choice(batch.max(), 2, replace=False) + 1)
    state[unknown & ~foreign] = "unknown"

    request_at = START.tz_convert("UTC") + pd.to_timedelta(
        (batch - 1) / REQUESTS_PER_SECOND + rng.random(n) * 0.3, unit="s"
    )
    sent_at = pd.Series(request_at, dtype="datetime64[us, UTC]").where(sendable)
    accepted = state == "accepted"
    message_id = pd.array(123451 + position, dtype="Int64")
    message_id[~sendable] = pd.NA
    batches = pd.array(batch, dtype="Int64")
    batches[~sendable] = pd.NA

    results = pd.DataFrame(
        {
            "phone": phone,
            "text": pd.array(np.where(sendable, "Hola, tu saldo vence pronto.", None), dtype="string"),
            "state": pd.Categorical(state, categories=STATES),
            "reason": pd.Series(
                np.select([invalid, suppressed, foreign], ["phone_missing", "duplicate", "api_rejected"], ""),
                dtype="string",
            ).replace("", pd.NA),
            "batch": batches,
            "message_id": message_id,
            "sent_at": sent_at,
            "segments": pd.array(np.ones(n, dtype=int), dtype="Int64"),
        }
    )

    # the status log: one final callback per accepted message that has one
    ids = np.flatnonzero(accepted)
    fate = rng.random(len(ids))
    delivered = fate < 0.90
    failed = (fate >= 0.90) & (fate < 0.96)
    logged = ids[delivered | failed]
    ok = delivered[delivered | failed]
    delay = 2.5 + rng.lognormal(np.log(3.5), 0.45, len(logged))
    late = rng.random(len(logged)) < 0.005
    delay[late] = rng.uniform(120, 3 * 3600, late.sum())
    delay[~ok] = rng.exponential(20, (~ok).sum()) + 1
    sent = pd.DatetimeIndex(results["sent_at"].iloc[logged])
    updated = (sent + pd.to_timedelta(delay, unit="s")).floor("s")
    status = pd.DataFrame(
        {
            "message_id": results["message_id"].to_numpy()[logged],
            "status": pd.Categorical(np.where(ok, "delivered", "failed"), categories=["delivered", "failed"]),
            "updated_at": updated.tz_convert("America/Caracas").as_unit("us"),
            "line": pd.array(np.where(ok, "584141234567", None), dtype="string"),
            "received_at": (updated + pd.Timedelta(milliseconds=80)).as_unit("us"),
        }
    )
    return results, status
