"""Delivery plots (matplotlib), each returning its Figure.

The plots build :class:`matplotlib.figure.Figure` objects directly, never through
``pyplot``: no global figure state, so they are safe in threads and servers, need no
display, and a notebook shows the returned Figure as the cell's output. Each plot also
draws into an ``ax=`` you pass, which is how :func:`delivery_report_figure` combines
them.

Every plot takes a results frame after :func:`~massiva_frames.analytics.delivery.attach_delivery`
(``state``, ``phone``, ``sent_at``, ``status_at``, ``delivered_at``, ``latency``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import InputError
from .shapes import DEFAULT_TZ, as_state, to_utc
from .summary import operator_of

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
        Title "Delivery by operator"; one bar per operator with messages sent, each
        labelled with its delivery rate.

    Examples
    --------
    >>> fig = plot_delivery_by_operator(attach_delivery(results, status))  # doctest: +SKIP
    >>> fig.savefig("by-operator.png")                                     # doctest: +SKIP
    """
    _need(frame, ("phone", "state"), "plot_delivery_by_operator")
    fig, ax = _axes(ax, (7.0, 3.5))
    state = pd.Series(as_state(frame["state"]), index=frame.index)
    outcome = state.astype("string").replace({"accepted": "pending"})
    parts = [p for p in ("delivered", "failed", "pending") if (outcome == p).any()]
    parts += [p for p in ("rejected", "unknown") if (outcome == p).any()]
    ax.set_title("Delivery by operator")
    if not parts:
        _empty(ax, "no messages sent")
        return fig
    operator = operator_of(frame["phone"])
    table = pd.crosstab(operator, outcome).reindex(columns=parts, fill_value=0)
    table = table.loc[table.sum(axis=1) > 0]
    sent = table[[p for p in ("delivered", "failed", "pending") if p in table]].sum(axis=1)
    shown = table.div(table.sum(axis=1), axis=0) if normalize else table
    labels = [str(i) for i in shown.index][::-1]
    left = np.zeros(len(shown))
    for part in parts:
        values = shown[part].to_numpy(dtype=float)[::-1]
        ax.barh(labels, values, left=left, color=COLORS[part], label=part)
        left += values
    delivered = table["delivered"] if "delivered" in table else pd.Series(0, index=table.index)
    rate = (delivered / sent.where(sent > 0)).to_numpy()[::-1]
    for y, (x, r) in enumerate(zip(left, rate, strict=True)):
        if np.isfinite(r):
            ax.annotate(f" {r:.0%}", (x, y), va="center", ha="left", fontsize="small", color="0.2")
    ax.set_xlabel("share of messages" if normalize else "messages")
    ax.set_xlim(0, float(left.max()) * 1.15 or 1.0)
    # below the axes, so it never hides a bar or a rate label
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.22),
        ncol=len(parts),
        fontsize="small",
        frameon=False,
    )
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def _time_unit(seconds: pd.Series) -> tuple[float, str]:
    """A readable unit for durations: seconds, minutes or hours."""
    typical = float(seconds.quantile(0.9)) if len(seconds) else 0.0
    if typical >= 3 * 3600:
        return 3600.0, "hours"
    if typical >= 180:
        return 60.0, "minutes"
    return 1.0, "seconds"


def plot_latency(
    frame: pd.DataFrame, *, bins: int = 40, log: bool = False, ax: Axes | None = None
) -> Figure:
    """Histogram of delivery latency (send to delivered callback), delivered rows only.

    Parameters
    ----------
    frame : DataFrame
        A results frame after ``attach_delivery`` (``latency``).
    bins : int, default 40
        Histogram bins.
    log : bool, default False
        Logarithmic count axis (long tails).
    ax : matplotlib Axes, optional
        Draw into this Axes instead of a new Figure.

    Returns
    -------
    matplotlib.figure.Figure
        Title "Delivery latency", with the median and the 90th percentile marked.

    Examples
    --------
    >>> plot_latency(attach_delivery(results, status))  # doctest: +SKIP
    """
    _need(frame, ("latency",), "plot_latency")
    fig, ax = _axes(ax, (7.0, 3.5))
    ax.set_title("Delivery latency")
    seconds = pd.to_timedelta(frame["latency"], errors="coerce").dt.total_seconds().dropna()
    if seconds.empty:
        _empty(ax, "no delivered messages yet")
        return fig
    scale, unit = _time_unit(seconds)
    values = seconds / scale
    data = values.to_numpy(dtype=float)
    edges: Any = bins
    if unit == "seconds" and np.allclose(data, np.round(data)):
        # the provider's clock ticks in whole seconds: one bar per second (or per k s)
        # instead of bins that alias against that grid
        step = max(1, int(np.ceil((data.max() - data.min() + 1) / bins)))
        edges = np.arange(data.min() - 0.5, data.max() + step + 0.5, step)
    ax.hist(data, bins=edges, color=COLORS["delivered"], alpha=0.85)
    median, p90 = float(values.median()), float(values.quantile(0.9))
    ax.axvline(median, color="0.15", linestyle="--", label=f"median {median:.3g} {unit}")
    ax.axvline(p90, color="0.15", linestyle=":", label=f"90th percentile {p90:.3g} {unit}")
    ax.set_xlabel(f"{unit} from send to delivery")
    ax.set_ylabel("messages")
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize="small", frameon=False)
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

    Examples
    --------
    >>> plot_deliveries_over_time(final, freq="5min", cumulative=True)  # doctest: +SKIP
    """
    _need(frame, ("state", "sent_at", "status_at"), "plot_deliveries_over_time")
    import matplotlib.dates as mdates

    fig, ax = _axes(ax, (9.0, 3.5))
    ax.set_title("Deliveries over time")
    state = pd.Series(as_state(frame["state"]), index=frame.index)
    sent_rows = state.isin(["accepted", "delivered", "failed"])
    local = {
        "sent": to_utc(frame["sent_at"], naive_tz="UTC")[sent_rows],
        "delivered": to_utc(frame["status_at"], naive_tz="UTC")[state == "delivered"],
        "failed": to_utc(frame["status_at"], naive_tz="UTC")[state == "failed"],
    }
    local = {k: v.dropna().dt.tz_convert(tz).dt.tz_localize(None) for k, v in local.items()}
    if all(v.empty for v in local.values()):
        _empty(ax, "no messages sent")
        return fig
    bin_width = freq or _auto_freq(list(local.values()))
    try:
        pd.Timedelta(bin_width)
    except ValueError as exc:
        raise InputError(f"freq must be a fixed bin width such as '5min', not {freq!r}") from exc
    floor = {k: v.dt.floor(bin_width) for k, v in local.items()}
    starts = pd.concat(list(floor.values()))
    edges = pd.date_range(starts.min(), starts.max(), freq=bin_width)
    for name, times in floor.items():
        if times.empty:
            continue
        counts = times.value_counts().reindex(edges, fill_value=0).sort_index()
        if cumulative:
            counts = counts.cumsum()
        # repeat the last value at the end of the last bin, so that bin has a width
        x = np.append(edges.to_numpy(), (edges[-1] + pd.Timedelta(bin_width)).to_datetime64())
        y = np.append(counts.to_numpy(dtype=float), float(counts.iloc[-1]))
        ax.plot(
            x,
            y,
            drawstyle="steps-post" if not cumulative else "default",
            color=COLORS[name],
            label=name,
            marker="." if len(edges) < 3 else None,
        )
    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    ax.set_xlabel(f"time ({tz})")
    ax.set_ylabel("messages so far" if cumulative else f"messages per {bin_width}")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small", frameon=False)
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
