"""The send scenarios' shared ground (``provider``, ``sender``, and ``secrets``'s sends): the
campaign they send, and a send's results checked against the sandbox's record of what it
accepted (lost, duplicated, sent once, unknown).
"""

from __future__ import annotations

import random
from typing import Any

from .figures import Figures

__all__ = ["TERMINAL", "campaign", "send_figures"]


#: the states a row may end in once a send is over (docs/architecture.md); `scheduled` is not one
TERMINAL = frozenset({"accepted", "rejected", "unknown", "invalid", "suppressed"})
_OPERATORS = ("412", "414", "416", "424", "426")


def campaign(rows: int, *, seed: int = 0) -> Any:
    """``rows`` distinct valid recipients in messy formats, one text each (1 in 10 rows
    share a promotional text): every (phone, text) is distinct, so the sandbox's record
    shows any message accepted twice. The index is a string label, not 0..n-1."""
    import pandas as pd

    rng = random.Random(seed)
    phones, texts = [], []
    for i in range(rows):
        op, number = _OPERATORS[i % 5], 1_000_000 + i
        shape = rng.randrange(4)
        phones.append(
            [f"0{op}-{number}", f"+58 {op} {number}", f"58{op}{number}", f"{op}{number}"][shape]
        )
        texts.append("Promo fin de semana: 2x1" if i % 10 == 0 else f"Hola #{i}, saldo {i % 997}")
    index = pd.Index([f"cliente-{i}" for i in range(rows)], name="cliente")
    return pd.DataFrame({"telefono": phones, "mensaje": texts}, index=index)


def send_figures(fig: Figures, df: Any, results: Any, messages: Any) -> None:
    """Compare a send's results with the sandbox's record of what it accepted.

    lost: an input row missing from the results, in no terminal state, ``accepted``
    without its message in the record (or with another phone/text), or in the record
    while its row says it was never sent (a re-run would send it again).
    duplicated: a (phone, text) the sandbox accepted more than once.
    """
    import pandas as pd

    fig.tried = len(df)
    missing = df.index.difference(results.index)
    extra = len(results) - len(df)
    states = results["state"].astype("string")
    open_rows = results.index[~states.isin(list(TERMINAL))]
    record = messages.assign(pair=messages["phone"].astype(str) + "\x1f" + messages["text"])
    times = record["pair"].value_counts()
    by_id = record.set_index("id")
    pair = results["phone"].astype("string") + "\x1f" + results["text"].astype("string")
    accepted = results[states == "accepted"]
    wrong_id = 0
    for label, mid, p in zip(
        accepted.index, accepted["message_id"], pair[states == "accepted"], strict=True
    ):
        if pd.isna(mid) or int(mid) not in by_id.index:
            wrong_id += 1
            fig.problem(f"{label}: accepted, message id {mid} not in the sandbox")
        elif by_id.loc[int(mid), "pair"] != p:
            wrong_id += 1
            fig.problem(f"{label}: message {mid} is another phone/text")
    in_record = pair.isin(times.index)
    said_unsent = results.index[in_record & states.isin(["scheduled", "invalid", "rejected"])]
    for label in list(missing[:3]) + list(open_rows[:3]) + list(said_unsent[:3]):
        fig.problem(f"{label}: lost ({states.get(label, 'missing')})")
    fig.lost = len(missing) + max(extra, 0) + len(open_rows) + wrong_id + len(said_unsent)
    # docs/architecture.md: every row comes back "with a state and, unless accepted, a reason".
    reasonless = results.index[(states != "accepted") & results["reason"].isna()]
    fig.crashes = (fig.crashes or 0) + len(reasonless)
    for label in list(reasonless[:3]):
        fig.problem(f"{label}: {states[label]} without a reason")
    fig.duplicated = int((times > 1).sum())
    once = pair.map(times).fillna(0) == 1
    fig.sent_once = int(((states == "accepted") & once).sum())
    unknown = states == "unknown"
    fig.unknown = int(unknown.sum())
    delivered = int((unknown & in_record).sum())
    fig.evidence.update(unknown_delivered=delivered, unknown_not_delivered=fig.unknown - delivered)
    counts = ", ".join(f"{s} {n}" for s, n in states.value_counts().items() if n)
    fig.notes.append(
        f"states: {counts}; unknown rows actually accepted by the provider: {delivered}, "
        f"not accepted: {fig.unknown - delivered}"
    )
    if fig.duplicated:
        for p in list(times[times > 1].index[:3]):
            fig.problem(f"accepted {times[p]} times: {p!r}")
