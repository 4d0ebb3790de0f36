"""What the commands that send a journal's rows share (``dispatch``, ``resend``): their
journal, run and client options, and the run itself with its results file and summary.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from ...wire.client import MassivaClient

__all__ = ["add_journal_argument", "add_run_arguments", "run_journalled", "run_options"]


def add_journal_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--journal`` (required unless ``MASSIVA_JOURNAL`` names one)."""
    default = os.environ.get("MASSIVA_JOURNAL") or None
    parser.add_argument(
        "--journal",
        required=default is None,
        default=default,
        metavar="PATH|URL",
        help="the send journal: a SQLite file or a postgresql:// URL (default: $MASSIVA_JOURNAL)",
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of the run: ``--out``, ``--now``, concurrency and rates,
    ``--allow-partial``, the client's and ``--progress``."""
    parser.add_argument(
        "--out", metavar="FILE", help="write the journal's results (.parquet or .csv)"
    )
    parser.add_argument(
        "--now", metavar="TIME", help="take this as the current time (America/Caracas)"
    )
    parser.add_argument("--concurrency", type=int, help="requests in flight (the send's)")
    parser.add_argument("--rate", type=float, help="most requests per second")
    parser.add_argument("--message-rate", type=float, help="most messages per second")
    parser.add_argument(
        "--allow-partial", action="store_true", help="credits short: send the rows that fit"
    )
    parser.add_argument("--base-url", help="API base URL (default: $MASSIVA_BASE_URL)")
    parser.add_argument("--timeout", type=float, default=30.0, help="read timeout, s (30)")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments :func:`add_run_arguments`'s options give ``dispatch`` and
    ``resend`` (``--out`` and the client's aside)."""
    return {
        "now": args.now,
        "concurrency": args.concurrency,
        "rate": args.rate,
        "message_rate": args.message_rate,
        "progress": bool(args.progress),
        "allow_partial": args.allow_partial,
    }


def run_journalled(
    command: str,
    args: argparse.Namespace,
    call: Callable[[MassivaClient | None], pd.DataFrame],
    *,
    required: bool,
) -> pd.DataFrame | int:
    """Run ``call(client)`` on ``args.journal``; write its results to ``args.out`` (if
    given) and print their summary.

    What ``dispatch`` and ``resend`` share: ``--out`` is checked before the client is made
    (``required``: without credentials it is an error), the results of a run stopped
    mid-way are still written, and results that cannot be written are kept in the journal.

    Returns
    -------
    DataFrame or int
        The results, or the exit code of a failure already reported on stderr.
    """
    from ..cli import error, failure_errors, one_line
    from ..outputs import check_output, write_table
    from .send import make_client, print_summary

    out = None if args.out is None else Path(args.out)
    errors = failure_errors()
    client = None
    try:
        if out is not None:
            check_output(out, "--out")
        client = make_client(args, required=required)
        results = call(client)
    except errors as exc:
        partial = getattr(exc, "results", None)
        if partial is not None and out is not None:
            try:
                write_table(partial, out)
            except errors as write_exc:
                error(command, f"cannot write --out {out}: {one_line(write_exc)}")
        return error(command, exc)
    finally:
        if client is not None:
            client.close()
    try:
        if out is not None:
            write_table(results, out)
    except errors as exc:
        print_summary(results, out=None)
        return error(
            command,
            f"cannot write --out {out}: {one_line(exc)}; nothing is lost: the results are in the "
            f"journal {args.journal}: load them with "
            f"mf.results_from_journal({str(args.journal)!r})",
        )
    print_summary(results, out=out)
    return results
