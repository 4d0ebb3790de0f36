"""``massiva-frames report``: delivery summary from a results file and the callback logs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["HELP", "add_arguments", "run"]

HELP = (
    "Join a results file (parquet or CSV, as send() returns it) with the receiver's "
    "callback logs, print the delivery summary (sent, delivered, failed, pending, rates, "
    "latency) by operator or any other key, and optionally write the plots to a PNG, the "
    "results with delivery attached, and the opt-out list found in the inbound messages."
)

_BY_CHOICES = "operator, prefix, batch, campaign, hour, date or any results column"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``massiva-frames report``."""
    parser.add_argument(
        "--results", required=True, metavar="FILE", help="results file (.parquet or .csv)"
    )
    parser.add_argument(
        "--logs", required=True, metavar="LOGDIR", help="the callback receiver's log directory"
    )
    parser.add_argument("--png", metavar="FILE", help="write the delivery plots to this PNG file")
    parser.add_argument(
        "--by",
        action="append",
        metavar="KEY",
        help=f"summary key, repeatable: {_BY_CHOICES} (default: operator)",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="write the results with delivery attached (.parquet or .csv)",
    )
    parser.add_argument(
        "--opt-outs",
        metavar="FILE",
        help="write the opt-out phones found in the inbound log (CSV with a phone column)",
    )
    parser.add_argument(
        "--tz",
        default="America/Caracas",
        help="zone of the provider's timestamps and of the hour/date keys "
        "(default: America/Caracas)",
    )


def _read_results(path: Path) -> pd.DataFrame:
    import pandas as pd

    if path.suffix.lower() == ".csv":
        # a results CSV carries its index (or the send's ``input_line``) first
        return pd.read_csv(path, index_col=0)
    return pd.read_parquet(path)


def _table_text(summary: pd.DataFrame) -> str:
    import pandas as pd

    formatters: dict[Any, Any] = {}
    for column in summary.columns:
        if column.endswith("_rate"):
            formatters[column] = lambda v: f"{v:.1%}"
        elif column.endswith("_latency_s"):
            formatters[column] = lambda v: f"{v:.1f}"
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        # nothing sent in a group: its rates and latencies are "-", not NaN
        return summary.to_string(formatters=formatters, na_rep="-")


def run(args: argparse.Namespace) -> int:
    """Print the delivery report; 0 on success, 1 on a missing or unreadable input."""
    from ..cli import EXIT_OK, EXIT_USAGE, error
    from ..outputs import suffix_problem

    outputs = (
        (args.png, "--png", (".png",)),
        (args.output, "--output", (".parquet", ".pq", ".csv")),
        (args.opt_outs, "--opt-outs", (".csv",)),
    )
    for path, option, suffixes in outputs:
        problem = suffix_problem(path, option, suffixes)
        if problem is not None:
            return error("report", problem, EXIT_USAGE)

    from ...errors import MassivaError
    from ..outputs import check_output, write_atomic, write_table

    def fail(message: str) -> int:
        return error("report", message)

    results_path, logdir = Path(args.results), Path(args.logs)
    if not results_path.is_file():
        return fail(f"no results file at {str(results_path)!r}")
    if not logdir.is_dir():
        return fail(f"no callback log directory at {str(logdir)!r}")
    try:
        for path, option, _ in outputs:
            if path is not None:
                check_output(path, option)
    except MassivaError as exc:
        return error("report", exc)

    from ...analytics.delivery import attach_delivery
    from ...analytics.inbound import opt_outs, replies
    from ...analytics.summary import delivery_summary
    from ...receiving import read_callbacks

    try:
        results = _read_results(results_path)
    except (OSError, ValueError) as exc:
        return fail(f"cannot read {str(results_path)!r}: {type(exc).__name__}: {exc}")
    try:
        status = read_callbacks(logdir, kind="status", tz=args.tz)
        final = attach_delivery(results, status, tz=args.tz)
        keys = args.by or ["operator"]
        summaries = [(key, delivery_summary(final, by=key, tz=args.tz, total=True)) for key in keys]
        inbound = read_callbacks(logdir, kind="inbound", tz=args.tz)
        got_replies = replies(final, inbound, tz=args.tz)
        suppress = opt_outs(inbound, tz=args.tz)
    except MassivaError as exc:
        return fail(str(exc))

    stats = final.attrs.get("delivery", {})
    print(
        f"{len(final)} result rows; {len(status)} status callbacks for "
        f"{stats.get('messages', 0)} messages "
        f"({stats.get('unmatched_ids', 0)} matching no accepted row)"
    )
    for key, summary in summaries:
        print(f"\nDelivery by {key}")
        print(_table_text(summary))
    attributed = int(got_replies["row"].notna().sum()) if len(got_replies) else 0
    print(
        f"\n{len(inbound)} inbound messages, {attributed} attributed to a send; "
        f"{len(suppress)} opt-outs"
    )

    try:
        if args.png:
            from ...analytics.plots import delivery_report_figure

            figure = delivery_report_figure(final, tz=args.tz)
            write_atomic(args.png, lambda temp: figure.savefig(temp, dpi=100, format="png"))
            print(f"wrote {args.png}")
        if args.output:
            write_table(final, args.output)
            print(f"wrote {args.output}")
        if args.opt_outs:
            write_atomic(args.opt_outs, lambda temp: suppress.to_csv(temp, index=False))
            print(f"wrote {args.opt_outs}")
    except (OSError, ValueError) as exc:
        return fail(f"cannot write: {type(exc).__name__}: {exc}")
    return EXIT_OK
