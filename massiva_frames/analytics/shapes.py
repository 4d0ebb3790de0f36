"""The shapes analytics reads, and how: the ``state`` categorical, UTC timestamps, phones.

The helpers every analytics module shares: required columns, a log given as a frame or
as a LOGDIR path, timestamps brought to ``datetime64[us, UTC]`` (naive ones read in a
zone), the resolution of a clock read from its values, the ``state`` column as a
categorical carrying every state, and callback phones in the canonical ``58XXXXXXXXXX``
form.

Shapes (docs/architecture.md, "The shapes every stage shares"): a results frame has ``phone``,
``text``, ``state`` (category), ``reason``, ``batch``, ``message_id`` (Int64), ``sid``,
``request_status``, ``api_message``, ``sent_at`` (UTC), ``encoding``, ``segments``; a
status log has ``message_id, status (delivered|failed), updated_at, user, detail, line,
received_at``; an inbound log has ``text, phone, line, email, received_at``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..errors import InputError

__all__ = [
    "DEFAULT_TZ",
    "STATES",
    "UTC_US",
    "as_state",
    "normalise_phone",
    "read_log",
    "require",
    "resolution",
    "to_utc",
    "utc_numpy",
]

#: docs/protocol.md §5: callback times carry no zone; Venezuelan local time.
DEFAULT_TZ = "America/Caracas"

#: Every value of the results' ``state`` column, in lifecycle order (docs/architecture.md).
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

#: The dtype of the timestamps analytics builds (microseconds, UTC).
UTC_US = "datetime64[us, UTC]"


def require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Raise :class:`InputError` unless ``frame`` is a DataFrame with ``columns``."""
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"{what} must be a DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{what} has no column {', '.join(map(repr, missing))}")


def read_log(log: Any, kind: Literal["status", "inbound"], tz: str) -> pd.DataFrame:
    """Accept a log frame, or a LOGDIR path that ``read_callbacks`` reads."""
    if isinstance(log, str | os.PathLike):
        from ..receiving import read_callbacks

        frame: pd.DataFrame = read_callbacks(log, kind=kind, tz=tz)
        return frame
    if not isinstance(log, pd.DataFrame):
        raise InputError(f"the {kind} log must be a DataFrame or a LOGDIR path")
    return log


def to_utc(values: pd.Series, *, naive_tz: str) -> pd.Series:
    """Timestamps as ``datetime64[us, UTC]``; naive ones are read in ``naive_tz``."""
    s = values
    if not isinstance(s.dtype, pd.DatetimeTZDtype) and not pd.api.types.is_datetime64_dtype(
        s.dtype
    ):
        try:
            s = pd.to_datetime(s, errors="coerce", format="ISO8601")
        except (ValueError, TypeError):
            # mixed offsets: let pandas bring them all to UTC
            s = pd.to_datetime(s, errors="coerce", format="ISO8601", utc=True)
    if not isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_localize(naive_tz, ambiguous="NaT", nonexistent="NaT")
    utc: pd.Series = s.dt.tz_convert("UTC").astype(UTC_US)
    return utc


def utc_numpy(values: pd.Series) -> np.ndarray[Any, Any]:
    """A UTC timestamp Series as a plain ``datetime64[us]`` array (NaT kept)."""
    naive = values.dt.tz_convert("UTC").dt.tz_localize(None)
    array: np.ndarray[Any, Any] = naive.to_numpy(dtype="datetime64[us]")
    return array


#: Resolutions :func:`resolution` tries, coarsest first (else: 1 µs).
_RESOLUTIONS = (pd.Timedelta(seconds=1), pd.Timedelta(milliseconds=1))


def resolution(values: pd.Series | np.ndarray[Any, Any]) -> pd.Timedelta:
    """The resolution the values show: 1 s, 1 ms or 1 µs.

    The coarsest of these that every value (timestamps or durations; missing ones
    ignored) is a whole multiple of: 1 s for the provider's whole-second stamps
    (docs/protocol.md §2), 1 µs for a clock with microseconds. No values: 1 s.

    Examples
    --------
    >>> resolution(pd.Series(pd.to_timedelta(["2s", "5s", None])))
    Timedelta('0 days 00:00:01')
    >>> resolution(pd.Series(pd.to_datetime(["2024-05-01 10:00:00.250"])))
    Timedelta('0 days 00:00:00.001000')
    """
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.DatetimeTZDtype):
        array = utc_numpy(values)
    else:  # never through Timestamp objects: a million of them take seconds
        array = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
    if array.dtype.kind not in "mM":
        raise InputError(f"resolution needs timestamps or durations, got {array.dtype}")
    ticks = array[~np.isnat(array)].astype(f"{array.dtype.kind}8[us]").view("int64")
    for step in _RESOLUTIONS:
        if not (ticks % (step // pd.Timedelta(1, "us"))).any():
            return step
    return pd.Timedelta(1, "us")


def as_state(values: pd.Series) -> pd.Categorical:
    """The ``state`` column as a categorical carrying every state in :data:`STATES`."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        current = pd.Categorical(values)  # the same codes, no refactorising
        extra = [c for c in current.categories if c not in STATES]
        wanted = [*STATES, *extra]
        if list(current.categories) == wanted:
            return current
        return current.set_categories(wanted)
    as_str = values.astype("string")
    extra = sorted(set(as_str.dropna().unique()) - set(STATES))
    return pd.Categorical(as_str, categories=[*STATES, *extra])


def normalise_phone(values: pd.Series) -> pd.Series:
    """Callback phones to the canonical ``58XXXXXXXXXX`` form (digits only).

    Callbacks carry phones as the provider formats them (docs/protocol.md §3: ``58412123456``);
    a leading ``+``/``00`` is dropped and a national ``0414…`` gets the country code.
    """
    s = values.astype("string").str.replace(r"\.0$", "", regex=True)
    s = s.str.replace(r"\D", "", regex=True)
    s = s.str.replace(r"^00", "", regex=True)
    s = s.mask(s.str.len().eq(11) & s.str.startswith("0"), "58" + s.str.slice(1))
    s = s.mask(s.str.len().eq(10) & s.str.startswith("4"), "58" + s)
    return s.mask(s.eq(""))
