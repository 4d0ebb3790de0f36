"""``massiva-frames demo``: the whole flow against a local sandbox, with a report."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "run"]

HELP = (
    "Start a sandbox and a callback receiver on free loopback ports, validate and send the "
    "sample campaign, wait for the delivery callbacks, and print the validation summary, "
    "the send summary and the delivery report. Writes results.parquet, the callback logs "
    "and delivery.png into --out."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``massiva-frames demo``."""
    parser.add_argument(
        "--out",
        default="massiva-demo",
        help="output folder (default: ./massiva-demo); an earlier demo's files there are replaced",
    )
    parser.add_argument(
        "--rows", type=int, default=None, help="send only the first N rows of the sample"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the delivery callbacks (default: 30)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every accepted message got its delivery callback, else 3."""
    from ..cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, error

    if args.rows is not None and args.rows < 1:
        return error("demo", "--rows must be at least 1", EXIT_USAGE)

    from ...errors import MassivaError
    from ..demo import run_demo

    try:
        report = run_demo(args.out, rows=args.rows, callback_timeout=args.timeout)
    except (MassivaError, OSError) as exc:
        return error("demo", exc)
    pending = int((report.delivery["state"] == "accepted").sum())
    if pending:
        print(f"needs a look (exit 3): {pending} message(s) still without a delivery callback")
        return EXIT_PARTIAL
    return EXIT_OK
