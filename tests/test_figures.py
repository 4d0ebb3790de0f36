"""Figures at the data's precision, readable at 30 rows and at hundreds of thousands.

Latency has the resolution of the provider's stamps (whole seconds, docs/protocol.md §2)
unless the stamps have more; count axes have whole-number ticks; latency bins are whole
multiples of that resolution and start at 0; bars too short to see are labelled; time
ticks are dated and zoned; legends never use ``loc="best"``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from test_analytics import T0, results_frame, status_log

from massiva_frames.analytics import plots
from massiva_frames.analytics.delivery import attach_delivery
from massiva_frames.analytics.shapes import STATES, resolution
from massiva_frames.analytics.summary import delivery_summary, observed_quantiles

CARACAS = "America/Caracas"


def campaign(
    n: int,
    *,
    seed: int = 3,
    delay_s: Any = None,
    stamp: str = "s",
    foreign: int = 0,
    spread_s: float = 600.0,
) -> pd.DataFrame:
    """``n`` accepted messages sent from T0 over ``spread_s`` seconds (microsecond
    ``sent_at``), 90 % delivered after ``delay_s`` (default: 2-10 s), 5 % failed, the
    rest pending; ``updated_at`` floored to ``stamp``; ``foreign`` more rows rejected."""
    rng = np.random.default_rng(seed)
    codes = rng.choice(["412", "414", "416", "424", "426"], n)
    phone = np.char.add(np.char.add("58", codes), np.char.zfill(np.arange(n).astype(str), 7))
    sent = T0 + pd.to_timedelta(rng.random(n) * spread_s, unit="s")
    state = np.repeat(["accepted", "rejected"], [n, foreign])
    message_id = pd.array(np.arange(1, n + foreign + 1), dtype="Int64")
    message_id[n:] = pd.NA
    res = pd.DataFrame(
        {
            "phone": pd.array(np.append(phone, ["13055550123"] * foreign), dtype="string"),
            "state": pd.Categorical(state, categories=list(STATES)),
            "message_id": message_id,
            "sent_at": pd.Series(
                sent.append(pd.DatetimeIndex([pd.NaT] * foreign, tz="UTC"))
            ).astype("datetime64[us, UTC]"),
        }
    )
    delay = rng.uniform(2, 10, n) if delay_s is None else np.broadcast_to(delay_s, n)
    fate = rng.random(n)
    logged = np.flatnonzero(fate < 0.95)
    updated = (sent[logged] + pd.to_timedelta(delay[logged], unit="s")).floor(stamp)
    log = pd.DataFrame(
        {
            "message_id": pd.array(logged + 1, dtype="Int64"),
            "status": pd.Categorical(
                np.where(fate[logged] < 0.90, "delivered", "failed"),
                categories=["delivered", "failed"],
            ),
            "updated_at": updated.tz_convert(CARACAS),
        }
    )
    return attach_delivery(res, log)


def drawn(fig: Figure) -> Figure:
    """Lay the figure out (ticks and limits as a saved PNG has them), warnings as errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig.draw_without_rendering()
    return fig


def tick_values(ax: Any, which: str) -> np.ndarray[Any, Any]:
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = sorted(axis.get_view_interval())
    ticks = np.asarray(axis.get_ticklocs())
    return ticks[(ticks >= lo - 1e-9) & (ticks <= hi + 1e-9)]


# ----------------------------------------------------------------------- latency values


class TestLatencyPrecision:
    def test_whole_second_stamps_give_whole_seconds(self) -> None:
        # sent at .940 (this machine), stamped 10:00:02 (the provider, whole seconds):
        # 1.06 s by subtraction, a fraction that only says where in its second it left
        sent = pd.Timestamp("2024-05-01 14:00:00.940", tz="UTC")
        res = results_frame([{"message_id": 1, "sent_at": sent}, {"message_id": 2}])
        log = status_log(
            [
                {"message_id": 1, "status": "delivered", "updated_at": "2024-05-01 10:00:02"},
                {"message_id": 2, "status": "delivered", "updated_at": "2024-05-01 10:00:07"},
            ]
        )
        out = attach_delivery(res, log)
        assert out["latency"].tolist() == [pd.Timedelta(seconds=2), pd.Timedelta(seconds=7)]
        assert out.attrs["delivery"]["latency_resolution_s"] == 1.0
        # the send time itself is kept as it was
        assert out["sent_at"].iloc[0] == sent

    def test_the_attached_frame_still_goes_to_parquet(self, tmp_path: Any) -> None:
        frame = campaign(20)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # attrs pyarrow cannot write as JSON: a warning
            frame.to_parquet(tmp_path / "final.parquet")
        back = pd.read_parquet(tmp_path / "final.parquet")
        assert back.attrs["delivery"]["latency_resolution_s"] == 1.0
        assert back["latency"].equals(frame["latency"])

    def test_sub_second_stamps_give_sub_second_latency(self) -> None:
        sent = pd.Timestamp("2024-05-01 14:00:00.100250", tz="UTC")
        res = results_frame([{"message_id": 1, "sent_at": sent}])
        millis = status_log(
            [{"message_id": 1, "status": "delivered", "updated_at": "2024-05-01 10:00:02.250"}]
        )
        out = attach_delivery(res, millis)
        assert out["latency"].iloc[0] == pd.Timedelta(milliseconds=2150)
        assert out.attrs["delivery"]["latency_resolution_s"] == 0.001
        micros = status_log(
            [
                {
                    "message_id": 1,
                    "status": "delivered",
                    "updated_at": "2024-05-01 10:00:02.250001",
                }
            ]
        )
        out = attach_delivery(res, micros)
        assert out["latency"].iloc[0] == pd.Timedelta(microseconds=2_149_751)

    def test_one_sub_second_stamp_is_enough_to_keep_fractions(self) -> None:
        frame = campaign(200, stamp="s")
        assert (frame["latency"].dropna() % pd.Timedelta(seconds=1) == pd.Timedelta(0)).all()
        finer = campaign(200, stamp="ms")
        fractions = finer["latency"].dropna() % pd.Timedelta(seconds=1)
        assert (fractions != pd.Timedelta(0)).any()

    def test_a_tick_early_is_zero_earlier_stays_negative(self) -> None:
        sent = pd.Timestamp("2024-05-01 14:00:00.300", tz="UTC")
        res = results_frame([{"message_id": i, "sent_at": sent} for i in (1, 2, 3)])
        log = status_log(
            [
                {"message_id": 1, "status": "delivered", "updated_at": "2024-05-01 10:00:00"},
                # the provider's clock a little behind ours: stamped in the second before
                {"message_id": 2, "status": "delivered", "updated_at": "2024-05-01 09:59:59"},
                {"message_id": 3, "status": "delivered", "updated_at": "2024-05-01 09:59:58"},
            ]
        )
        out = attach_delivery(res, log)
        assert out["latency"].tolist() == [
            pd.Timedelta(0),
            pd.Timedelta(0),
            pd.Timedelta(seconds=-2),
        ]

    def test_summary_latencies_are_observed_whole_seconds(self) -> None:
        frame = campaign(500, stamp="s")
        table = delivery_summary(frame, by="operator", total=True)
        for column in ("median_latency_s", "p90_latency_s"):
            values = table[column].to_numpy()
            assert (values == np.round(values)).all(), column
        delivered = frame.loc[frame["state"] == "delivered", "latency"].dt.total_seconds()
        assert table.loc["total", "median_latency_s"] == np.quantile(
            delivered, 0.5, method="inverted_cdf"
        )
        assert table.loc["total", "p90_latency_s"] == np.quantile(
            delivered, 0.9, method="inverted_cdf"
        )

    def test_observed_quantiles_per_group(self) -> None:
        values = np.array([1.0, 2.0, 3.0, 4.0, np.nan, 7.0, 5.0])
        group = np.array([0, 0, 0, 0, 1, 1, 1])
        got = observed_quantiles(values, group, 3, (0.0, 0.5, 0.9, 1.0))
        assert got[0].tolist() == [1.0, 2.0, 4.0, 4.0]
        assert got[1].tolist() == [5.0, 5.0, 7.0, 7.0]
        assert np.isnan(got[2]).all()

    def test_resolution(self) -> None:
        whole = pd.Series(pd.to_datetime(["2024-05-01 10:00:01", None]).tz_localize(CARACAS))
        assert resolution(whole) == pd.Timedelta(seconds=1)
        assert resolution(pd.Series(pd.to_timedelta(["1.5s"]))) == pd.Timedelta(milliseconds=1)
        assert resolution(pd.Series(pd.to_timedelta(["1.000001s"]))) == pd.Timedelta(1, "us")
        assert resolution(pd.Series([], dtype="timedelta64[us]")) == pd.Timedelta(seconds=1)


# --------------------------------------------------------------------------- the plots


@pytest.mark.parametrize("n", [5, 30])
def test_small_campaigns_have_whole_number_count_ticks(n: int) -> None:
    frame = campaign(n)
    by_operator = drawn(plots.plot_delivery_by_operator(frame)).axes[0]
    latency = drawn(plots.plot_latency(frame)).axes[0]
    over_time = drawn(plots.plot_deliveries_over_time(frame)).axes[0]
    for ax, which in ((by_operator, "x"), (latency, "y"), (over_time, "y")):
        ticks = tick_values(ax, which)
        assert len(ticks) >= 2 and (ticks == np.round(ticks)).all(), (ax.get_title(), ticks)
        labels = [t.get_text() for t in getattr(ax, f"get_{which}ticklabels")()]
        assert all("." not in label for label in labels), labels


def test_large_counts_have_short_whole_ticks() -> None:
    frame = campaign(300_000, spread_s=3600)
    for ax, which in (
        (drawn(plots.plot_delivery_by_operator(frame)).axes[0], "x"),
        (drawn(plots.plot_latency(frame)).axes[0], "y"),
    ):
        ticks = tick_values(ax, which)
        assert (ticks == np.round(ticks)).all()
        labels = [t.get_text() for t in getattr(ax, f"get_{which}ticklabels")() if t.get_text()]
        # "120k" or "40,000": whole numbers, short enough not to run into each other
        assert all(label.rstrip("k").replace(",", "").isdigit() for label in labels), labels
        assert max(len(label) for label in labels) <= 6, labels
    top = drawn(plots.plot_delivery_by_operator(frame)).axes[0]
    assert [t.get_text() for t in top.get_xticklabels()][1].endswith("k")


def test_latency_bins_are_whole_seconds_from_zero() -> None:
    frame = campaign(400)
    ax = drawn(plots.plot_latency(frame)).axes[0]
    lefts = np.array([p.get_x() for p in ax.patches])
    widths = np.array([p.get_width() for p in ax.patches])
    assert (widths == 1.0).all()  # one bar per second of the provider's clock
    assert (lefts == np.round(lefts)).all()
    assert ax.get_xlim()[0] == 0.0
    assert (tick_values(ax, "x") == np.round(tick_values(ax, "x"))).all()
    delivered = frame.loc[frame["state"] == "delivered", "latency"].dt.total_seconds()
    assert sum(p.get_height() for p in ax.patches) == len(delivered)
    for patch in ax.patches:  # each bar holds exactly the latencies of its second
        left = patch.get_x()
        assert patch.get_height() == ((delivered >= left) & (delivered < left + 1)).sum()


def test_one_latency_for_all_is_one_bar_not_spikes() -> None:
    # the sandbox's callbacks come 2 s after acceptance: sent at .08, stamped 2 s later
    frame = campaign(50, delay_s=2.0, spread_s=0.0)
    ax = drawn(plots.plot_latency(frame)).axes[0]
    bars = [(p.get_x(), p.get_width(), p.get_height()) for p in ax.patches if p.get_height()]
    assert bars == [(2.0, 1.0, (frame["state"] == "delivered").sum())]
    assert ax.get_xlim() == (0.0, 3.0)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "median 2 s",
        "90th percentile 2 s",
    ]
    assert [t.get_text() for t in ax.texts] == [str((frame["state"] == "delivered").sum())]


def test_wide_latencies_take_wider_whole_second_bins() -> None:
    frame = campaign(400, delay_s=np.linspace(0, 170, 400))
    ax = drawn(plots.plot_latency(frame, bins=20)).axes[0]
    widths = {p.get_width() for p in ax.patches}
    assert len(widths) == 1 and widths.pop() in (10.0, 15.0)
    assert len(ax.patches) <= 20
    assert all(p.get_x() % 5 == 0 for p in ax.patches)


def test_sub_second_latencies_take_sub_second_bins() -> None:
    frame = campaign(400, stamp="ms", delay_s=np.linspace(0.05, 0.9, 400))
    ax = drawn(plots.plot_latency(frame)).axes[0]
    width = ax.patches[0].get_width()
    assert 0 < width < 1
    assert round(width * 1000) == pytest.approx(width * 1000)  # whole milliseconds


def test_a_far_tail_is_one_labelled_bar() -> None:
    delays = np.full(2000, 4.0)
    delays[:15] = 3 * 3600  # a few phones were off for hours
    frame = campaign(2000, delay_s=delays)
    ax = drawn(plots.plot_latency(frame)).axes[0]
    assert ax.get_xlim()[1] < 60  # the axis is not stretched to three hours
    hatched = [p for p in ax.patches if p.get_hatch()]
    late = int((frame.loc[frame["state"] == "delivered", "latency"] > pd.Timedelta("1h")).sum())
    assert len(hatched) == 1 and hatched[0].get_height() == late > 0
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(label.startswith(f"{late:,} at ") and "3 h" in label for label in labels)


def test_a_three_row_bar_is_labelled() -> None:
    frame = campaign(3000, foreign=3)
    ax = drawn(plots.plot_delivery_by_operator(frame)).axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert "other (3)" in labels
    texts = [t.get_text().strip() for t in ax.texts]
    assert "3 rejected" in texts
    other = labels.index("other (3)")
    bar = [p for p in ax.patches if abs(p.get_y() + p.get_height() / 2 - other) < 1e-9]
    assert sum(p.get_width() for p in bar) == 3


def test_time_ticks_are_dated_readable_and_distinct() -> None:
    short = campaign(30, spread_s=2.0)
    ax = drawn(plots.plot_deliveries_over_time(short)).axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert len(labels) == len(set(labels)) >= 2
    assert all(len(label) == 8 and label.count(":") == 2 for label in labels), labels
    assert ax.xaxis.get_major_formatter().get_offset() == "01 May 2024"
    assert ax.get_xlabel() == "time (America/Caracas, UTC-04:00)"

    long = campaign(500, spread_s=3 * 86400)
    ax = drawn(plots.plot_deliveries_over_time(long)).axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    days = [label for label in labels if label.endswith("May")]  # midnight: the day
    assert days == ["02 May", "03 May", "04 May"], labels
    assert set(labels) - set(days) == {"12:00"}
    assert ax.get_ylabel() == "messages per 3 hours"


def test_time_axis_across_a_change_of_offset() -> None:
    # New York falls back at 06:00 UTC on 3 Nov 2024: 01:00-02:00 local happens twice
    frame = campaign(300, spread_s=4 * 3600)
    frame["sent_at"] = frame["sent_at"] + (pd.Timestamp("2024-11-03 04:00", tz="UTC") - T0)
    frame["status_at"] = frame["status_at"] + (pd.Timestamp("2024-11-03 04:00", tz="UTC") - T0)
    ax = drawn(plots.plot_deliveries_over_time(frame, tz="America/New_York")).axes[0]
    assert ax.get_xlabel() == "time (America/New_York, UTC-04:00 to UTC-05:00)"
    sent = next(line for line in ax.lines if line.get_label() == "sent")
    assert sent.get_ydata()[:-1].sum() == 300


@pytest.mark.parametrize(
    "plot",
    [plots.plot_delivery_by_operator, plots.plot_latency, plots.plot_deliveries_over_time],
)
def test_legends_have_a_fixed_place(plot: Any) -> None:
    ax = plot(campaign(50)).axes[0]
    assert ax.get_legend()._loc != 0  # 0 is "best"


def test_report_of_many_rows_draws_without_warnings(tmp_path: Any) -> None:
    frame = campaign(200_000, spread_s=7200)
    fig = plots.delivery_report_figure(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Creating legend with loc='best' can be slow"
        fig.savefig(tmp_path / "report.png", dpi=60)
    assert (tmp_path / "report.png").stat().st_size > 0
