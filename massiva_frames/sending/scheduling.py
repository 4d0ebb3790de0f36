"""When messages go out: ``send_at`` times, quiet-hours windows, and pacing.

Times are stored and compared in UTC; a naive ``send_at`` and the ``window`` bounds are
read in ``America/Caracas`` time (the provider's local time, docs/protocol.md §2).
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError

# Internal to massiva_frames.sending.campaign; the zone of naive times is public.
__all__ = ["LOCAL_TZ"]

#: the zone of naive ``send_at`` values and of ``window`` bounds.
LOCAL_TZ = "America/Caracas"

_HHMM = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")
_HAS_OFFSET = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})\s*$", re.IGNORECASE)

#: a quiet-hours window: (opening, closing) as times of day, local time.
Window = tuple[dt.time, dt.time]


def _parse_time(value: str | dt.time) -> dt.time:
    if isinstance(value, dt.time):
        return value
    match = _HHMM.match(str(value))
    if match is None:
        raise InputError(f"window bound {value!r} is not a time of day like '08:00'")
    hour, minute, second = (int(g) if g else 0 for g in match.groups())
    if hour > 23 or minute > 59 or second > 59:
        raise InputError(f"window bound {value!r} is not a time of day like '08:00'")
    return dt.time(hour, minute, second)


def parse_window(window: Any) -> Window | None:
    """Parse ``("08:00", "20:00")`` into two :class:`datetime.time`; ``None`` passes.

    A window whose closing is earlier than its opening crosses midnight
    (``("20:00", "06:00")`` = from 8 pm to 6 am).

    Examples
    --------
    >>> parse_window(("08:00", "20:00"))
    (datetime.time(8, 0), datetime.time(20, 0))
    """
    if window is None:
        return None
    if isinstance(window, str) or len(window) != 2:
        raise InputError(f"window must be a pair like ('08:00', '20:00'), got {window!r}")
    opening, closing = (_parse_time(v) for v in window)
    if opening == closing:
        raise InputError(f"window {window!r} opens and closes at the same time")
    return opening, closing


def _offset(t: dt.time) -> pd.Timedelta:
    return pd.Timedelta(hours=t.hour, minutes=t.minute, seconds=t.second)


def apply_window(times: pd.Series, window: Window | None, *, tz: str = LOCAL_TZ) -> pd.Series:
    """Move each UTC time outside ``window`` to the window's next opening.

    Vectorised over a ``datetime64[..., UTC]`` series; times inside the window are kept.

    Examples
    --------
    >>> s = pd.Series(pd.to_datetime(["2025-01-06 02:00Z", "2025-01-06 15:00Z"]))
    >>> moved = apply_window(s, parse_window(("08:00", "20:00")))
    >>> moved.dt.tz_convert(LOCAL_TZ).dt.strftime("%d %H:%M").tolist()
    ['06 08:00', '06 11:00']
    """
    if window is None or times.empty:
        return times
    local = times.dt.tz_convert(tz).dt.tz_localize(None)
    midnight = local.dt.normalize()
    tod = local - midnight
    start, end = _offset(window[0]), _offset(window[1])
    if start < end:
        inside = (tod >= start) & (tod < end)
        next_day = tod >= end
    else:  # crosses midnight
        inside = (tod >= start) | (tod < end)
        next_day = pd.Series(False, index=times.index)
    opening = midnight + start + pd.to_timedelta(next_day.astype(int), unit="D")
    moved = opening.dt.tz_localize(
        tz, nonexistent="shift_forward", ambiguous=np.zeros(len(opening), dtype=bool)
    ).dt.tz_convert("UTC")
    return times.where(inside, moved.astype(times.dtype))


def next_open(moment: pd.Timestamp, window: Window | None, *, tz: str = LOCAL_TZ) -> pd.Timestamp:
    """``moment`` (UTC) if inside ``window``, else the window's next opening (UTC).

    Examples
    --------
    >>> next_open(pd.Timestamp("2025-01-07 01:30Z"), parse_window(("08:00", "20:00")))
    Timestamp('2025-01-07 12:00:00+0000', tz='UTC')
    """
    series = pd.Series([to_utc(moment)])
    return pd.Timestamp(apply_window(series, window, tz=tz).iloc[0])


def to_utc(value: Any, *, tz: str = LOCAL_TZ) -> pd.Timestamp:
    """One timestamp in UTC; a naive one is read in ``tz`` (America/Caracas)."""
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"send_at {value!r} is not a date and time") from exc
    if pd.isna(stamp):
        raise InputError(f"send_at {value!r} is not a date and time")
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize(tz)
    return stamp.tz_convert("UTC")


def _column_to_utc(column: pd.Series, tz: str) -> pd.Series:
    """Parse a column of times to UTC; unparseable values become NaT (reported per row).

    Works by position, so an index with repeated labels cannot mix rows up.
    """
    index = column.index
    column = column.reset_index(drop=True)
    dtype = column.dtype
    out = pd.Series(pd.NaT, index=column.index, dtype="datetime64[us, UTC]")
    if isinstance(dtype, pd.DatetimeTZDtype):
        out = column.dt.tz_convert("UTC").astype(out.dtype)
    elif pd.api.types.is_datetime64_dtype(dtype):
        localized = column.dt.tz_localize(tz, nonexistent="shift_forward", ambiguous="NaT")
        out = localized.dt.tz_convert("UTC").astype(out.dtype)
    else:
        present = (column.notna() & column.astype(str).str.strip().ne("")).to_numpy()
        at = np.flatnonzero(present)
        values = column.iloc[at]
        if len(at) and all(isinstance(v, pd.Timestamp | dt.datetime) for v in values.tolist()):
            stamps = [pd.Timestamp(v) for v in values.tolist()]
            local = [t.tz_localize(tz) if t.tzinfo is None else t for t in stamps]
            out.iloc[at] = pd.to_datetime(local, utc=True).astype(out.dtype)
        elif len(at):
            text = values.astype(str).str.strip().reset_index(drop=True)
            aware = text.str.contains(_HAS_OFFSET).to_numpy()
            if aware.any():
                parsed = pd.to_datetime(text[aware], errors="coerce", utc=True, format="mixed")
                out.iloc[at[aware]] = parsed.astype(out.dtype).to_numpy()
            if (~aware).any():
                naive = pd.to_datetime(text[~aware], errors="coerce", format="mixed")
                localized = naive.dt.tz_localize(tz, nonexistent="shift_forward", ambiguous="NaT")
                out.iloc[at[~aware]] = localized.dt.tz_convert("UTC").astype(out.dtype).to_numpy()
    out.index = index
    return out


def resolve_send_at(
    df: pd.DataFrame, send_at: Any, *, tz: str = LOCAL_TZ
) -> tuple[pd.Series, pd.Series]:
    """Each row's requested send time (UTC; NaT = now) and a mask of unparseable values.

    ``send_at`` is ``None``, one timestamp (or a string naming one) for every row, the
    name of a column of ``df``, or a sequence with one value per row. A name that is a
    column wins over a date string.
    """
    empty = pd.Series(pd.NaT, index=df.index, dtype="datetime64[us, UTC]")
    bad = pd.Series(False, index=df.index)
    if send_at is None:
        return empty, bad
    if isinstance(send_at, str) and send_at in df.columns:
        column = df[send_at]
    elif isinstance(send_at, pd.Series | np.ndarray | list | tuple):
        if len(send_at) != len(df):
            raise InputError(f"send_at has {len(send_at)} values for {len(df)} rows")
        column = pd.Series(list(send_at), index=df.index)
    else:
        return pd.Series(to_utc(send_at, tz=tz), index=df.index).astype(empty.dtype), bad
    parsed = _column_to_utc(column, tz).astype(empty.dtype)
    given = column.notna() & column.astype(str).str.strip().ne("")
    return parsed, given & parsed.isna()


class RateLimiter:
    """Pacing of requests (or messages) per second, shared by the threads of one send.

    A virtual schedule (GCRA): taking ``n`` units books ``n / rate`` seconds after the
    later of *now* and the end of the previous booking. :meth:`delay` says how long the
    caller must wait before it may take ``n``; the sending loop waits for completed
    requests meanwhile, so nobody sleeps holding a request.

    Examples
    --------
    >>> limiter = RateLimiter(10)
    >>> limiter.delay(1)
    0.0
    >>> limiter.take(5); 0.4 < limiter.delay(1) <= 0.5
    True
    """

    def __init__(self, rate: float | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate is not None and not rate > 0:
            raise InputError(f"a rate must be a positive number per second, got {rate!r}")
        self.rate = rate
        self._clock = clock
        self._next = -float("inf")
        self._lock = threading.Lock()

    def delay(self, amount: float = 1.0) -> float:
        """Seconds to wait before ``amount`` may be taken (0 when it may be now)."""
        if self.rate is None:
            return 0.0
        with self._lock:
            return max(0.0, self._next - self._clock())

    def take(self, amount: float = 1.0) -> None:
        """Book ``amount`` units from now (or from the end of the previous booking)."""
        if self.rate is None:
            return
        with self._lock:
            self._next = max(self._clock(), self._next) + amount / self.rate


def due_times(
    wanted: pd.Series, window: Window | None, now: pd.Timestamp, *, tz: str = LOCAL_TZ
) -> tuple[pd.Series, pd.Series]:
    """When each message goes out, and whether it is due at ``now``.

    ``wanted`` holds the requested UTC times (NaT = as soon as possible). Returns the
    time to store (integer µs since the epoch, or None = as soon as possible) and a
    boolean mask of the messages due now. A ``window`` moves times outside it to its
    next opening.

    Examples
    --------
    >>> now = pd.Timestamp("2025-01-06 23:30Z")  # 19:30 in Caracas
    >>> wanted = pd.Series(pd.to_datetime([None, "2025-01-07 01:00Z"], utc=True))
    >>> stored, due = due_times(wanted, parse_window(("08:00", "20:00")), now)
    >>> due.tolist(), pd.to_datetime(stored[1], unit="us", utc=True)
    ([True, False], Timestamp('2025-01-07 12:00:00+0000', tz='UTC'))
    """
    wanted = pd.Series(pd.to_datetime(wanted, utc=True), index=wanted.index)
    wanted = wanted.astype("datetime64[us, UTC]")
    now = pd.Timestamp(now).tz_convert("UTC").as_unit("us")
    explicit = wanted.notna()
    effective = wanted.fillna(now)
    if window is not None:
        effective = apply_window(effective, window, tz=tz)
        explicit |= effective > now
    due = effective <= now
    micros = effective.astype("int64").tolist() if len(effective) else []
    stored = pd.Series(
        [m if e else None for m, e in zip(micros, explicit.tolist(), strict=True)],
        index=wanted.index,
        dtype=object,
    )
    return stored, due
