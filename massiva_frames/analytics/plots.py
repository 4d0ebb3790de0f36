"""Delivery plots (matplotlib), each returning its Figure.

The plots build :class:`matplotlib.figure.Figure` objects directly, never through
``pyplot``: no global figure state, so they are safe in threads and servers, need no
display, and a notebook shows the returned Figure as the cell's output. Each plot also
draws into an ``ax=`` you pass, which is how :func:`delivery_report_figure` combines
them.

Every plot takes a results frame after :func:`~massiva_frames.analytics.delivery.attach_delivery`
(``state``, ``phone``, ``sent_at``, ``status_at``, ``delivered_at``, ``latency``).

They read the same at 30 rows and at a million: count axes have whole-number ticks
(with thousands separators), latency bins are whole multiples of the resolution of the
data (whole seconds for the provider's stamps, docs/protocol.md §2), bars too small to
see are labelled, dates are written in full where they change, in the zone named on the
axis, and every legend has a fixed place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import InputError
from .shapes import DEFAULT_TZ, as_state, resolution, to_utc
from .summary import observed_quantiles, operator_of

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "COLORS",
    "delivery_report_figure",
    "plot_deliveries_over_time",
    "plot_delivery_by_operator",
    "plot_latency",
]

#: One colour per outcome, shared by every plot (colour-blind-safe Okabe-Ito hues).
COLORS: dict[str, str] = {
    "delivered": "#009E73",
    "failed": "#D55E00",
    "pending": "#999999",
    "rejected": "#E69F00",
    "unknown": "#CC79A7",
    "sent": "#0072B2",
}

# Bin widths tried, smallest first, for deliveries over time.
_FREQS = (
    "1s",
    "5s",
    "10s",
    "30s",
    "1min",
    "5min",
    "10min",
    "15min",
    "30min",
    "1h",
    "3h",
    "6h",
    "12h",
    "1D",
    "7D",
)
_MAX_BINS = 60

#: Latency bin widths in seconds, smallest first (whole multiples of a 1-second clock).
_SECOND_STEPS: tuple[int, ...] = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
_SECOND_STEPS += (7200, 10800, 21600, 43200, 86400, 172800, 604800)
_US = 1_000_000  # microseconds per second


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """The Figure and Axes to draw on: the caller's, or a new pyplot-free Figure."""
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=figsize, layout="constrained")
        return fig, fig.add_subplot()
    root: Any = ax.figure
    while not isinstance(root, Figure):  # a SubFigure: climb to the Figure
        root = root.figure
    return root, ax


def _count_text(x: float, top: float) -> str:
    """A count for a tick: ``1,200`` on an axis up to 99,999, then ``250k``, ``1.5M``."""
    if x == 0:
        return "0"
    if top >= 1_000_000:
        return f"{x / 1_000_000:g}M"
    if top >= 100_000:
        return f"{x / 1_000:g}k"
    return f"{x:,.0f}"


def _count_axis(axis: Any) -> None:
    """Whole-number ticks on a linear axis of counts, short enough not to collide."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))
    axis.set_major_formatter(
        FuncFormatter(lambda x, _: _count_text(x, max(abs(v) for v in axis.get_view_interval())))
    )


def _legend_below(ax: Axes, *, ncol: int) -> None:
    """The legend under the axes, centred: a fixed place (``loc="best"`` is slow on big
    plots) where it never hides a bar, a line or a label."""
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        ncol=ncol,
        fontsize="small",
        frameon=False,
    )


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _need(frame: pd.DataFrame, columns: tuple[str, ...], plot: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"{plot} takes a DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        hint = " (run attach_delivery first)" if set(missing) & {"latency", "status_at"} else ""
        raise InputError(f"{plot}: the frame has no column {', '.join(map(repr, missing))}{hint}")


def plot_delivery_by_operator(
    frame: pd.DataFrame, *, normalize: bool = False, ax: Axes | None = None
) -> Figure:
    """Horizontal stacked bars of delivered / failed / pending messages per operator.

    Parameters
    ----------
    frame : DataFrame
        A results frame after ``attach_delivery`` (``phone``, ``state``).
    normalize : bool, default False
        Show shares of each operator's sent messages instead of counts.
    ax : matplotlib Axes, optional
        Draw into this Axes instead of a new Figure.

    Returns
    -------
    matplotlib.figure.Figure
        Title "Delivery by operator"; one bar per operator with messages sent (or
        refused by the API), its total in the operator's label. Each bar ends with its
        delivery rate (``91% delivered``), or, when nothing of it was sent, with its
        counts (``3 rejected``), so a bar too short to see still shows. Whole-number
        ticks on the count axis.

    Examples
    --------
    >>> fig = plot_delivery_by_operator(attach_delivery(results, status))  # doctest: +SKIP
    >>> fig.savefig("by-operator.png")                                     # doctest: +SKIP
    """
    _need(frame, ("phone", "state"), "plot_delivery_by_operator")
    fig, ax = _axes(ax, (7.0, 3.5))
    state = as_state(frame["state"])
    operator = pd.Categorical(operator_of(frame["phone"]))
    # one pass: an (operator x state) count matrix, then the states shown, renamed
    n_states = len(state.categories)
    cells = np.bincount(
        operator.codes.astype(np.intp) * n_states + state.codes,
        minlength=len(operator.categories) * n_states,
    ).reshape(len(operator.categories), n_states)
    by_state = pd.DataFrame(cells, index=operator.categories, columns=state.categories)
    shown_states = {"delivered": "delivered", "failed": "failed", "accepted": "pending"}
    shown_states |= {"rejected": "rejected", "unknown": "unknown"}
    table = by_state[list(shown_states)].rename(columns=shown_states)
    parts = [p for p in table.columns if table[p].any()]
    ax.set_title("Delivery by operator")
    if not parts:
        _empty(ax, "no messages sent")
        return fig
    table = table[parts]
    table = table.loc[table.sum(axis=1) > 0][::-1]  # the first operator on top
    sent = table[[p for p in ("delivered", "failed", "pending") if p in table]].sum(axis=1)
    totals = table.sum(axis=1)
    shown = table.div(totals, axis=0) if normalize else table
    y = np.arange(len(shown))
    left = np.zeros(len(shown))
    for part in parts:
        values = shown[part].to_numpy(dtype=float)
        ax.barh(y, values, left=left, color=COLORS[part], label=part)
        left += values
    ax.set_yticks(y, [f"{name} ({n:,})" for name, n in zip(shown.index, totals, strict=True)])
    delivered = table["delivered"] if "delivered" in table else pd.Series(0, index=table.index)
    for row, (x, n_sent) in enumerate(zip(left, sent, strict=True)):
        if n_sent > 0:
            label = f" {delivered.iloc[row] / n_sent:.0%} delivered"
        else:  # nothing sent: name what the bar holds, however thin it is
            counts = table.iloc[row]
            label = " " + ", ".join(f"{counts[p]:,} {p}" for p in parts if counts[p])
        ax.annotate(label, (x, row), va="center", ha="left", fontsize="small", color="0.2")
    if normalize:
        from matplotlib.ticker import PercentFormatter

        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_xlabel("share of the operator's messages")
    else:
        _count_axis(ax.xaxis)
        ax.set_xlabel("messages")
    # room for the labels at the end of the longest bar
    ax.set_xlim(0, float(left.max()) * 1.3 or 1.0)
    ax.set_ylim(-0.6, len(shown) - 0.4)
    _legend_below(ax, ncol=len(parts))
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def _time_unit(typical_s: float) -> tuple[int, str]:
    """A readable unit for durations (seconds, minutes or hours) and its size in seconds."""
    if typical_s >= 3 * 3600:
        return 3600, "hours"
    if typical_s >= 180:
        return 60, "minutes"
    return 1, "seconds"


def _steps(tick_us: int, unit_s: int) -> list[int]:
    """Candidate bin widths in microseconds: whole multiples of the data's tick, and of
    the unit once the unit is minutes or hours, in 1-2-5 steps below a second."""
    small = [m * 10**e for e in range(7) for m in (1, 2, 5) if m * 10**e < _US]
    steps = [s for s in small if s % tick_us == 0] + [s * _US for s in _SECOND_STEPS]
    return [s for s in steps if s % tick_us == 0 and (s >= unit_s * _US or unit_s == 1)]


def _latency_bins(
    ticks: np.ndarray[Any, Any], tail: int, tick_us: int, unit_s: int, bins: int
) -> tuple[np.ndarray[Any, Any], int, int | None]:
    """Bin edges (microseconds) aligned to the data's resolution, the bin width, and
    where the "and later" bar starts (None: no such bar).

    The axis starts at 0 (at the earliest value when some are negative), bins are the
    smallest candidate width giving at most ``bins`` bars, and when the slowest 1 %
    would take more than half the axis, they are gathered in one last bar instead.
    """
    lowest, highest = int(ticks.min()), int(ticks.max())
    lo = min(lowest, 0)
    steps = _steps(tick_us, unit_s)
    step = next((s for s in steps if (tail - lo) // s + 1 <= bins), steps[-1])
    cut: int | None = (tail // step + 1) * step
    if cut is not None and highest - lo < 2 * (cut - lo):
        # the slowest 1 % would take less than half the axis: draw them as they are
        step = next((s for s in steps if (highest - lo) // s + 1 <= bins), steps[-1])
        cut = None
    first, last = lo // step, (highest if cut is None else cut - 1) // step
    edges = np.arange(first, last + 2, dtype=np.int64) * step
    return edges, step, cut


def _duration_text(us: float) -> str:
    """``0.0595 s``, ``2 s``, ``1 min 30 s``, ``2 h 59 min 53 s``: no more digits than
    the data has."""
    seconds = us / _US
    if abs(seconds) < 60:
        return f"{seconds:.6g} s"
    whole, rest = divmod(round(us), 60 * _US)
    hours, minutes = divmod(int(whole), 60)
    parts = [f"{hours} h"] if hours else []
    parts += [f"{minutes} min"] if minutes else []
    parts += [f"{rest / _US:.6g} s"] if rest else []
    return " ".join(parts)


def plot_latency(
    frame: pd.DataFrame, *, bins: int = 40, log: bool = False, ax: Axes | None = None
) -> Figure:
    """Histogram of delivery latency (send to delivered callback), delivered rows only.

    Bins are whole multiples of the resolution of the latencies (whole seconds when the
    provider's stamps are, see
    :func:`~massiva_frames.analytics.delivery.attach_delivery`), so none of them falls
    between two possible values; the axis starts at 0. When the slowest 1 % of the
    messages would take more than half the axis, they are drawn as one hatched bar at
    its end, labelled with their count and the slowest latency.

    Parameters
    ----------
    frame : DataFrame
        A results frame after ``attach_delivery`` (``latency``).
    bins : int, default 40
        The most bars to draw (fewer when the data has fewer distinct values).
    log : bool, default False
        Logarithmic count axis (long tails).
    ax : matplotlib Axes, optional
        Draw into this Axes instead of a new Figure.

    Returns
    -------
    matplotlib.figure.Figure
        Title "Delivery latency", in seconds, minutes or hours (by the 90th
        percentile), with the median and the 90th percentile marked: observed
        latencies, as in :func:`~massiva_frames.analytics.summary.delivery_summary`.

    Examples
    --------
    >>> plot_latency(attach_delivery(results, status))  # doctest: +SKIP
    """
    _need(frame, ("latency",), "plot_latency")
    if bins < 1:
        raise InputError(f"bins must be at least 1, got {bins!r}")
    fig, ax = _axes(ax, (7.0, 3.5))
    ax.set_title("Delivery latency")
    latency = pd.to_timedelta(frame["latency"], errors="coerce").dropna()
    if latency.empty:
        _empty(ax, "no delivered messages yet")
        return fig
    tick_us = max(1, resolution(latency) // pd.Timedelta(1, "us"))
    ticks = latency.to_numpy(dtype="timedelta64[us]").view("int64")
    one = np.zeros(len(ticks), np.intp)
    median, p90, tail = observed_quantiles(ticks.astype(float), one, 1, (0.5, 0.9, 0.99))[0]
    unit_s, unit = _time_unit(p90 / _US)
    edges, step, cut = _latency_bins(ticks, int(tail), tick_us, unit_s, bins)
    counts = np.bincount((ticks[ticks < edges[-1]] - edges[0]) // step, minlength=len(edges) - 1)
    scale = float(unit_s * _US)
    ax.bar(
        edges[:-1] / scale,
        counts,
        width=step / scale,
        align="edge",
        color=COLORS["delivered"],
        alpha=0.85,
        linewidth=0,
    )
    if len(counts) <= 12:  # few bars: each one's count, so a short one still reads
        top_count = float(counts.max())
        for left_edge, count in zip(edges[:-1], counts, strict=True):
            if count:
                ax.annotate(
                    _count_text(count, top_count),
                    ((left_edge + step / 2) / scale, count),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize="x-small",
                    color="0.2",
                )
    right = edges[-1] / scale
    later = 0
    if cut is not None:
        later = int((ticks >= cut).sum())
        ax.bar(
            cut / scale,
            later,
            width=step / scale,
            align="edge",
            color="white",
            edgecolor=COLORS["delivered"],
            hatch="///",
            linewidth=0.8,
            label=(
                f"{later:,} at {_duration_text(cut)} or later "
                f"(slowest {_duration_text(ticks.max())})"
            ),
        )
        right += step / scale
    ax.axvline(
        median / scale, color="0.15", linestyle="--", label=f"median {_duration_text(median)}"
    )
    ax.axvline(
        p90 / scale, color="0.15", linestyle=":", label=f"90th percentile {_duration_text(p90)}"
    )
    ax.set_xlim(edges[0] / scale, right)
    if tick_us % _US == 0 and unit_s == 1:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"{unit} from send to delivery")
    ax.set_ylabel("messages")
    top = max(int(counts.max()), later, 1)
    if log:
        ax.set_yscale("log")
        ax.set_ylim(0.5, top * 3)  # headroom for the bars' counts
    else:
        _count_axis(ax.yaxis)
        ax.set_ylim(0, top * 1.1)  # headroom for the bars' counts
    _legend_below(ax, ncol=2)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def _auto_freq(times: list[pd.Series]) -> str:
    stamps = pd.concat([t.dropna() for t in times])
    if stamps.empty:
        return "1min"
    span = stamps.max() - stamps.min()
    for freq in _FREQS:
        if span / pd.Timedelta(freq) <= _MAX_BINS:
            return freq
    return _FREQS[-1]


def _per(width: pd.Timedelta) -> str:
    """``second``, ``5 seconds``, ``minute``, ``10 minutes``, ``hour``, ``day``, ``7 days``."""
    for size, name in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        n = width.total_seconds() / size
        if n >= 1 and n == int(n):
            return name if n == 1 else f"{int(n)} {name}s"
    return str(width)


def _date_axis(axis: Any, span: pd.Timedelta) -> None:
    """Ticks a reader can place on an axis of wall-clock times: ``08:45:10`` (never a
    bare ``:10``, never two ticks in one second), the date once in the corner."""
    import matplotlib.dates as mdates

    locator: Any
    if span <= pd.Timedelta(minutes=2):
        every = next(n for n in (1, 2, 5, 10, 15, 30) if span.total_seconds() / n <= 8)
        locator = mdates.SecondLocator(bysecond=range(0, 60, every))  # type: ignore[no-untyped-call]
    else:
        locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
    formatter = mdates.ConciseDateFormatter(  # type: ignore[no-untyped-call]
        locator,
        formats=["%Y", "%b", "%d %b", "%H:%M", "%H:%M", "%H:%M:%S"],
        zero_formats=["", "%Y", "%b", "%d %b", "%H:%M", "%H:%M:%S"],
        offset_formats=["", "%Y", "%b %Y", "%d %b %Y", "%d %b %Y", "%d %b %Y"],
    )
    axis.set_major_locator(locator)
    axis.set_major_formatter(formatter)


def plot_deliveries_over_time(
    frame: pd.DataFrame,
    *,
    freq: str | None = None,
    cumulative: bool = False,
    tz: str = DEFAULT_TZ,
    ax: Axes | None = None,
) -> Figure:
    """Messages sent, delivered and failed per time bin (or cumulated), in local time.

    Parameters
    ----------
    frame : DataFrame
        A results frame after ``attach_delivery`` (``state``, ``sent_at``,
        ``status_at``).
    freq : str, optional
        Bin width as a pandas frequency (``"1min"``, ``"1h"``); by default the smallest
        of 1 s ... 7 days that gives at most 60 bins.
    cumulative : bool, default False
        Running totals instead of counts per bin.
    tz : str, default "America/Caracas"
        Zone of the time axis.
    ax : matplotlib Axes, optional
        Draw into this Axes instead of a new Figure.

    Returns
    -------
    matplotlib.figure.Figure
        Title "Deliveries over time"; one line each for sent, delivered and failed.
        Times on the axis read ``08:45:10`` or ``14:30`` with the date in the corner,
        and the axis names the zone and its UTC offset. Whole-number count ticks.

    Examples
    --------
    >>> plot_deliveries_over_time(final, freq="5min", cumulative=True)  # doctest: +SKIP
    """
    _need(frame, ("state", "sent_at", "status_at"), "plot_deliveries_over_time")
    fig, ax = _axes(ax, (9.0, 3.5))
    ax.set_title("Deliveries over time")
    state = pd.Series(as_state(frame["state"]), index=frame.index)
    sent_rows = state.isin(["accepted", "delivered", "failed"])
    times = {
        "sent": to_utc(frame["sent_at"], naive_tz="UTC")[sent_rows],
        "delivered": to_utc(frame["status_at"], naive_tz="UTC")[state == "delivered"],
        "failed": to_utc(frame["status_at"], naive_tz="UTC")[state == "failed"],
    }
    zoned = {k: v.dropna().dt.tz_convert(tz) for k, v in times.items()}
    if all(v.empty for v in zoned.values()):
        _empty(ax, "no messages sent")
        return fig
    # bins of wall-clock time: whole local minutes, hours and days, also across a
    # change of the zone's offset
    local = {k: v.dt.tz_localize(None) for k, v in zoned.items()}
    bin_width = freq or _auto_freq(list(local.values()))
    try:
        width = pd.Timedelta(bin_width)
    except ValueError as exc:
        raise InputError(f"freq must be a fixed bin width such as '5min', not {freq!r}") from exc
    floor = {k: v.dt.floor(width) for k, v in local.items()}
    starts = pd.concat([v for v in floor.values() if not v.empty])
    edges = pd.date_range(starts.min(), starts.max(), freq=width)
    for name, stamps in floor.items():
        if stamps.empty:
            continue
        counts = stamps.value_counts().reindex(edges, fill_value=0).sort_index()
        if cumulative:
            counts = counts.cumsum()
        # repeat the last value at the end of the last bin, so that bin has a width
        x = np.append(edges.to_numpy(), (edges[-1] + width).to_datetime64())
        y = np.append(counts.to_numpy(dtype=float), float(counts.iloc[-1]))
        ax.plot(
            x,
            y,
            drawstyle="steps-post" if not cumulative else "default",
            color=COLORS[name],
            label=name,
            marker="." if len(edges) < 3 else None,
        )
    _date_axis(ax.xaxis, edges[-1] + width - edges[0])
    stamps = pd.concat([v for v in zoned.values() if not v.empty])
    offsets = [t.strftime("%z") for t in (stamps.min(), stamps.max())]
    utc = " to ".join(dict.fromkeys(f"UTC{o[:3]}:{o[3:]}" for o in offsets))
    ax.set_xlabel(f"time ({tz}, {utc})")
    ax.set_ylabel("messages so far" if cumulative else f"messages per {_per(width)}")
    _count_axis(ax.yaxis)
    ax.set_ylim(bottom=0)
    _legend_below(ax, ncol=3)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def delivery_report_figure(
    frame: pd.DataFrame,
    *,
    title: str | None = "Delivery report",
    freq: str | None = None,
    tz: str = DEFAULT_TZ,
) -> Figure:
    """The three delivery plots on one Figure (what ``massiva-frames report --png`` writes).

    Parameters
    ----------
    frame : DataFrame
        A results frame after ``attach_delivery``.
    title : str or None, default "Delivery report"
        The Figure's title.
    freq, tz
        As in :func:`plot_deliveries_over_time`.

    Returns
    -------
    matplotlib.figure.Figure
        Top left by operator, top right latency, bottom deliveries over time.

    Examples
    --------
    >>> delivery_report_figure(final).savefig("delivery.png")  # doctest: +SKIP
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13.0, 8.0), layout="constrained")
    grid = fig.add_gridspec(2, 2)
    plot_delivery_by_operator(frame, ax=fig.add_subplot(grid[0, 0]))
    plot_latency(frame, ax=fig.add_subplot(grid[0, 1]))
    plot_deliveries_over_time(frame, freq=freq, tz=tz, ax=fig.add_subplot(grid[1, :]))
    if title:
        fig.suptitle(title, fontweight="bold")
    return fig
