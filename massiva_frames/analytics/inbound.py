"""What customers text back: replies attributed to the message sent, and opt-outs.

::

    replies(results, "callback-logs")                         # inbound -> message sent
    opt_outs("callback-logs")                                 # suppression list
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..errors import InputError
from .shapes import (
    DEFAULT_TZ,
    UTC_US,
    as_state,
    normalise_phone,
    read_log,
    require,
    to_utc,
    utc_numpy,
)

__all__ = ["DEFAULT_OPT_OUT_KEYWORDS", "opt_outs", "replies"]

#: Opt-out keywords (Spanish and English), matched accent- and case-insensitively as
#: whole words: "Baja por favor", "BAJA." and "dénme de baja" match, "bajar" does not.
DEFAULT_OPT_OUT_KEYWORDS: tuple[str, ...] = (
    "STOP",
    "BAJA",
    "SALIR",
    "CANCELAR",
    "DETENER",
    "PARAR",
    "DESUSCRIBIR",
    "DESUSCRIBIRME",
    "NO MAS",
    "UNSUBSCRIBE",
)

#: States of rows that may have reached the phone (a failed message never did).
_REACHABLE = ("accepted", "delivered", "unknown")


def replies(
    results: pd.DataFrame,
    inbound_log: pd.DataFrame | str | os.PathLike[str],
    *,
    tz: str = DEFAULT_TZ,
    within: pd.Timedelta | str | None = None,
) -> pd.DataFrame:
    """Attribute each inbound SMS to the last message sent to that phone before it.

    Parameters
    ----------
    results : DataFrame
        A results frame (``phone``, ``state``, ``sent_at``; ``message_id``/``text``).
        Only rows that may have reached the phone count as sent: ``accepted``,
        ``delivered`` and ``unknown`` (a ``failed`` message never arrived).
    inbound_log : DataFrame or path
        The inbound log (``read_callbacks(logdir, kind="inbound")``) or the LOGDIR.
    tz : str, default "America/Caracas"
        Zone of naive ``received_at`` values.
    within : Timedelta or str, optional
        Only attribute a reply received at most this long after the send (``"3D"``).

    Returns
    -------
    DataFrame
        The inbound log (its index and columns; ``received_at`` in UTC), plus ``row``
        (the results' index label of the message replied to), ``message_id``,
        ``sent_text``, ``sent_at`` and ``reply_delay``, and ``batch``/``campaign`` when
        the results have them. An inbound text with no earlier send to its phone is
        kept, with <NA> in those columns.

    Examples
    --------
    >>> inbound = read_callbacks("callback-logs", kind="inbound")  # doctest: +SKIP
    >>> replies(results, inbound)[["phone", "text", "row", "sent_text"]]  # doctest: +SKIP
    """
    require(results, ("phone", "state", "sent_at"), "results")
    inbound = read_log(inbound_log, "inbound", tz)
    require(inbound, ("phone", "received_at"), "the inbound log")

    received = to_utc(inbound["received_at"], naive_tz=tz)
    left = pd.DataFrame(
        {
            "_pos": np.arange(len(inbound)),
            "_phone": normalise_phone(inbound["phone"]).to_numpy(),
            "_t": utc_numpy(received),
        }
    )
    left = left[left["_phone"].notna() & left["_t"].notna()].sort_values("_t", kind="stable")

    state = as_state(results["state"])
    sent_at = to_utc(results["sent_at"], naive_tz="UTC")
    right = pd.DataFrame(
        {
            "_row": np.arange(len(results)),
            "_phone": normalise_phone(results["phone"]).to_numpy(),
            "_t": utc_numpy(sent_at),
        }
    )
    reachable = np.asarray(state.isin(_REACHABLE))
    right = right[reachable & right["_phone"].notna().to_numpy() & right["_t"].notna().to_numpy()]
    right = right.sort_values("_t", kind="stable")
    # one dtype on both sides, whatever pandas inferred for an empty side
    left["_phone"] = left["_phone"].astype(object)
    right["_phone"] = right["_phone"].astype(object)

    tolerance = None if within is None else pd.Timedelta(within)
    matched = pd.merge_asof(
        left, right, on="_t", by="_phone", direction="backward", tolerance=tolerance
    )
    row_pos = np.full(len(inbound), -1, dtype=np.intp)
    found = matched["_row"].notna().to_numpy()
    row_pos[matched["_pos"].to_numpy()[found]] = matched["_row"].to_numpy()[found].astype(np.intp)
    has = row_pos >= 0
    take = row_pos[has]

    out = inbound.copy()
    out["received_at"] = received
    rows = np.full(len(out), None, dtype=object)
    rows[has] = np.asarray(results.index, dtype=object)[take]
    out["row"] = pd.Series(rows, index=out.index, dtype=object)

    def pick(column: str, dtype: Any) -> pd.Series:
        source = results[column].reset_index(drop=True)
        values = source.take(np.where(has, row_pos, 0)).to_numpy(dtype=object)
        values[~has] = None
        return pd.Series(values, index=out.index).astype(dtype)

    if "message_id" in results.columns:
        out["message_id"] = pick("message_id", "Int64")
    if "text" in results.columns:
        out["sent_text"] = pick("text", "string")
    sent = utc_numpy(sent_at)[np.where(has, row_pos, 0)]
    sent[~has] = np.datetime64("NaT")
    out["sent_at"] = pd.Series(sent, index=out.index).dt.tz_localize("UTC")
    out["reply_delay"] = out["received_at"] - out["sent_at"]
    for column, dtype in (("batch", "Int64"), ("campaign", "string")):
        if column in results.columns:
            out[column] = pick(column, dtype)
    return out


def _fold(text: str) -> str:
    """Case- and accent-insensitive form: ``"Báj́a"`` -> ``"baja"``."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _fold_series(values: pd.Series) -> pd.Series:
    s = values.astype("string").str.normalize("NFKD")
    s = s.str.replace(r"[\u0300-\u036f]", "", regex=True)
    return s.str.casefold()


def opt_outs(
    inbound_log: pd.DataFrame | str | os.PathLike[str],
    *,
    keywords: Sequence[str] = DEFAULT_OPT_OUT_KEYWORDS,
    match: Literal["word", "start", "exact"] = "word",
    tz: str = DEFAULT_TZ,
) -> pd.DataFrame:
    """The suppression list: phones that texted an opt-out keyword.

    Matching ignores case and accents (``"Bája"`` = ``"BAJA"``) and works on whole
    words: with ``match="word"`` a keyword anywhere in the text counts ("por favor
    BAJA", "Stop."), but not inside a longer word ("bajar", "stopped"). ``"start"``
    requires the text to begin with the keyword; ``"exact"`` requires the keyword to
    be all there is (punctuation and spaces aside). Multi-word keywords (``"NO MAS"``)
    match across any spacing or punctuation.

    Parameters
    ----------
    inbound_log : DataFrame or path
        The inbound log (``text``, ``phone``, ``received_at``) or the LOGDIR.
    keywords : sequence of str, default DEFAULT_OPT_OUT_KEYWORDS
        The opt-out keywords.
    match : {"word", "start", "exact"}, default "word"
        How strict the match is (above).
    tz : str, default "America/Caracas"
        Zone of naive ``received_at`` values.

    Returns
    -------
    DataFrame
        One row per phone, columns ``phone`` (normalised), ``keyword`` (as given in
        ``keywords``), ``text`` and ``received_at`` of its first opt-out message, sorted
        by time. ``validate(df, suppress=opt_outs(...))`` accepts it as it is.

    Examples
    --------
    >>> inbound = pd.DataFrame({"phone": ["584141234567", "584241234567"],
    ...                         "text": ["Baja por favor", "Gracias"],
    ...                         "received_at": pd.Timestamp("2024-05-01 10:00", tz="UTC")})
    >>> opt_outs(inbound)[["phone", "keyword"]].to_dict("records")
    [{'phone': '584141234567', 'keyword': 'BAJA'}]
    """
    if isinstance(keywords, str):
        keywords = [keywords]
    if match not in ("word", "start", "exact"):
        raise InputError(f"match must be 'word', 'start' or 'exact', not {match!r}")
    inbound = read_log(inbound_log, "inbound", tz)
    require(inbound, ("phone", "text"), "the inbound log")
    empty = pd.DataFrame(
        {
            "phone": pd.Series(dtype="string"),
            "keyword": pd.Series(dtype="string"),
            "text": pd.Series(dtype="string"),
            "received_at": pd.Series(dtype=UTC_US),
        }
    )
    folded_kw: dict[str, str] = {}
    for kw in keywords:
        words = re.findall(r"[0-9a-z]+", _fold(str(kw)))
        if words:
            folded_kw.setdefault(" ".join(words), str(kw))
    if not folded_kw or inbound.empty:
        return empty

    # longest first, so "no mas" is tried before a shorter keyword it contains
    alternatives = "|".join(
        r"[^0-9a-z]+".join(map(re.escape, k.split()))
        for k in sorted(folded_kw, key=len, reverse=True)
    )
    edge = r"(?:[^0-9a-z]|$)"
    pattern = {
        "word": rf"(?:^|[^0-9a-z])({alternatives}){edge}",
        "start": rf"^[^0-9a-z]*({alternatives}){edge}",
        "exact": rf"^[^0-9a-z]*({alternatives})[^0-9a-z]*$",
    }[match]
    folded = _fold_series(inbound["text"])
    found = folded.str.extract(pattern, expand=False)
    hit = found.notna().to_numpy(bool)
    if not hit.any():
        return empty

    if "received_at" in inbound.columns:
        received = to_utc(inbound["received_at"], naive_tz=tz)
    else:
        received = pd.Series(pd.NaT, index=inbound.index, dtype=UTC_US)
    keyword = found[hit].str.replace(r"[^0-9a-z]+", " ", regex=True).map(folded_kw)
    out = pd.DataFrame(
        {
            "phone": normalise_phone(inbound["phone"])[hit].to_numpy(),
            "keyword": keyword.astype("string").to_numpy(),
            "text": inbound["text"].astype("string")[hit].to_numpy(),
            "received_at": received[hit].to_numpy(),
        }
    )
    out = out[out["phone"].notna()]
    out = out.sort_values("received_at", kind="stable", na_position="last")
    out = out.drop_duplicates("phone", keep="first").reset_index(drop=True)
    return out.astype({"phone": "string", "keyword": "string", "text": "string"})
