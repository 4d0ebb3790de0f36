"""send_at parsing, quiet-hours windows and pacing: pure functions, table tests."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from massiva_frames.errors import InputError
from massiva_frames.sending.scheduling import (
    RateLimiter,
    apply_window,
    due_times,
    next_open,
    parse_window,
    resolve_send_at,
    to_utc,
)

CCS = "America/Caracas"


def local(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=CCS)


WINDOW_TABLE = [
    # window, local time, expected local time
    (("08:00", "20:00"), "2025-01-06 07:59", "2025-01-06 08:00"),
    (("08:00", "20:00"), "2025-01-06 08:00", "2025-01-06 08:00"),
    (("08:00", "20:00"), "2025-01-06 12:34:56", "2025-01-06 12:34:56"),
    (("08:00", "20:00"), "2025-01-06 19:59:59", "2025-01-06 19:59:59"),
    (("08:00", "20:00"), "2025-01-06 20:00", "2025-01-07 08:00"),
    (("08:00", "20:00"), "2025-01-06 23:30", "2025-01-07 08:00"),
    (("08:00", "20:00"), "2025-12-31 21:00", "2026-01-01 08:00"),  # across the year
    (("08:00", "20:00"), "2025-01-06 00:00", "2025-01-06 08:00"),
    (("20:00", "06:00"), "2025-01-06 21:00", "2025-01-06 21:00"),  # crosses midnight
    (("20:00", "06:00"), "2025-01-06 05:59", "2025-01-06 05:59"),
    (("20:00", "06:00"), "2025-01-06 06:00", "2025-01-06 20:00"),
    (("20:00", "06:00"), "2025-01-06 12:00", "2025-01-06 20:00"),
    (("09:30", "09:45"), "2025-01-06 09:45", "2025-01-07 09:30"),
    ((dt.time(8), dt.time(20)), "2025-01-06 06:00", "2025-01-06 08:00"),
]


@pytest.mark.parametrize(("window", "moment", "expected"), WINDOW_TABLE)
def test_window_table(window: tuple[str, str], moment: str, expected: str) -> None:
    parsed = parse_window(window)
    got = next_open(local(moment).tz_convert("UTC"), parsed)
    assert got == local(expected)
    assert str(got.tz) == "UTC"
    # the vectorised form agrees with the scalar one
    series = pd.Series([local(moment).tz_convert("UTC")]).astype("datetime64[us, UTC]")
    assert apply_window(series, parsed).iloc[0] == local(expected)


@pytest.mark.parametrize(
    "window",
    ["08:00-20:00", ("08:00",), ("8", "20:00"), ("08:00", "24:00"), ("08:00", "08:00"), ("x", "y")],
)
def test_bad_windows(window: object) -> None:
    with pytest.raises(InputError):
        parse_window(window)


def test_no_window_keeps_times() -> None:
    s = pd.Series(pd.to_datetime(["2025-01-06 03:00Z"], utc=True))
    assert apply_window(s, None).equals(s)
    assert parse_window(None) is None


SEND_AT_TABLE = [
    ("2025-01-06 09:00", "2025-01-06 13:00Z"),  # naive: Caracas (UTC-4)
    ("2025-01-06T09:00:00-04:00", "2025-01-06 13:00Z"),
    ("2025-01-06T09:00:00Z", "2025-01-06 09:00Z"),
    ("2025-01-06 09:00+01:00", "2025-01-06 08:00Z"),
    (pd.Timestamp("2025-01-06 09:00"), "2025-01-06 13:00Z"),
    (dt.datetime(2025, 1, 6, 9, 0, tzinfo=dt.UTC), "2025-01-06 09:00Z"),
]


@pytest.mark.parametrize(("value", "expected"), SEND_AT_TABLE)
def test_send_at_scalars(value: object, expected: str) -> None:
    assert to_utc(value) == pd.Timestamp(expected)
    df = pd.DataFrame({"x": [1, 2]})
    times, bad = resolve_send_at(df, value)
    assert (times == pd.Timestamp(expected)).all() and not bad.any()


def test_send_at_column_mixes_zones_blanks_and_garbage() -> None:
    df = pd.DataFrame(
        {"when": ["2025-01-06 09:00", "2025-01-06T09:00:00Z", None, "", "mañana", "2025-02-30"]}
    )
    times, bad = resolve_send_at(df, "when")
    assert times.iloc[0] == pd.Timestamp("2025-01-06 13:00Z")
    assert times.iloc[1] == pd.Timestamp("2025-01-06 09:00Z")
    assert times.iloc[2:].isna().all()
    assert bad.tolist() == [False, False, False, False, True, True]


def test_send_at_datetime_columns() -> None:
    naive = pd.DataFrame({"t": pd.to_datetime(["2025-01-06 09:00", None])})
    times, bad = resolve_send_at(naive, "t")
    assert times.iloc[0] == pd.Timestamp("2025-01-06 13:00Z") and pd.isna(times.iloc[1])
    assert not bad.any()
    aware = pd.DataFrame({"t": pd.to_datetime(["2025-01-06 09:00Z"], utc=True)})
    assert resolve_send_at(aware, "t")[0].iloc[0] == pd.Timestamp("2025-01-06 09:00Z")


def test_send_at_sequence_and_errors() -> None:
    df = pd.DataFrame({"x": [1, 2]})
    times, _ = resolve_send_at(df, ["2025-01-06 09:00", None])
    assert times.iloc[0] == pd.Timestamp("2025-01-06 13:00Z") and pd.isna(times.iloc[1])
    with pytest.raises(InputError, match="3 values for 2 rows"):
        resolve_send_at(df, [1, 2, 3])
    with pytest.raises(InputError, match="not a date"):
        resolve_send_at(df, "not a column nor a date")
    # a column name wins over a date string
    dated = pd.DataFrame({"2025-01-06": ["2025-03-01 10:00"]})
    assert resolve_send_at(dated, "2025-01-06")[0].iloc[0] == pd.Timestamp("2025-03-01 14:00Z")


def test_due_times() -> None:
    now = local("2025-01-06 12:00").tz_convert("UTC")
    wanted = pd.Series(
        pd.to_datetime(
            [None, "2025-01-06 15:00Z", "2025-01-06 17:00Z", "2025-01-07 01:00Z"], utc=True
        )
    )
    stored, due = due_times(wanted, None, now)
    assert due.tolist() == [True, True, False, False]
    assert stored.iloc[0] is None
    assert pd.Timestamp(stored.iloc[2], unit="us", tz="UTC") == pd.Timestamp("2025-01-06 17:00Z")
    stored, due = due_times(wanted, parse_window(("08:00", "20:00")), now)
    assert due.tolist() == [True, True, False, False]
    # 01:00Z is 21:00 in Caracas: moved to 08:00 the next day
    assert pd.Timestamp(stored.iloc[3], unit="us", tz="UTC") == local("2025-01-07 08:00")
    late = local("2025-01-06 22:00").tz_convert("UTC")
    stored, due = due_times(
        pd.Series([pd.NaT], dtype="datetime64[us, UTC]"), parse_window(("08:00", "20:00")), late
    )
    assert due.tolist() == [False]
    assert pd.Timestamp(stored.iloc[0], unit="us", tz="UTC") == local("2025-01-07 08:00")
    empty = due_times(pd.Series([], dtype="datetime64[us, UTC]"), None, now)
    assert empty[0].empty and empty[1].empty


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_books_slots() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock)
    assert limiter.delay(1) == 0.0
    limiter.take(1)
    assert limiter.delay(1) == pytest.approx(0.1)
    clock.now += 0.04
    assert limiter.delay(1) == pytest.approx(0.06)
    clock.now += 0.06
    assert limiter.delay(1) == 0.0
    limiter.take(5)  # a 5-unit booking holds the next half second
    assert limiter.delay(1) == pytest.approx(0.5)
    clock.now += 10  # idle time is not saved up: no burst after a pause
    limiter.take(1)
    assert limiter.delay(1) == pytest.approx(0.1)


def test_rate_limiter_off_and_invalid() -> None:
    off = RateLimiter(None)
    off.take(1000)
    assert off.delay(1000) == 0.0
    for rate in (0, -1):
        with pytest.raises(InputError):
            RateLimiter(rate)


def test_send_at_column_by_position_whatever_the_index_or_dtype() -> None:
    repeated = pd.DataFrame(
        {"t": ["2025-01-06 09:00", "2025-01-06T09:00:00Z", "garbage"]}, index=[7, 7, 7]
    )
    times, bad = resolve_send_at(repeated, "t")
    assert list(times.index) == [7, 7, 7]
    assert times.iloc[0] == pd.Timestamp("2025-01-06 13:00Z")
    assert times.iloc[1] == pd.Timestamp("2025-01-06 09:00Z")
    assert bad.tolist() == [False, False, True]
    categorical = pd.DataFrame({"t": pd.Categorical(["2025-01-06 09:00", None, "x"])})
    times, bad = resolve_send_at(categorical, "t")
    assert times.iloc[0] == pd.Timestamp("2025-01-06 13:00Z") and bad.tolist() == [
        False,
        False,
        True,
    ]
    # datetime objects: naive ones are Caracas time, aware ones keep their zone
    objects = pd.DataFrame(
        {"t": [dt.datetime(2025, 1, 6, 9), dt.datetime(2025, 1, 6, 9, tzinfo=dt.UTC)]},
        dtype=object,
    )
    times, _ = resolve_send_at(objects, "t")
    assert times.tolist() == [pd.Timestamp("2025-01-06 13:00Z"), pd.Timestamp("2025-01-06 09:00Z")]
