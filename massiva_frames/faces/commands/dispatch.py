"""``massiva-frames dispatch``: send what is due in a journal, then exit (cron, Airflow).

Rows scheduled by ``send`` (``send_at``, quiet-hours window) whose time has come, and
rows an earlier run could not send (connection failed, credits short), go out with the
settings of the send that journalled them. Rows in doubt (``unknown``) are never resent.
Exit codes: the table of :data:`massiva_frames.faces.cli.EXIT_CODES`, as for ``send``:
0 everything due was accepted (or nothing was due), 3 some of what this run sent was
rejected, is in doubt or could not be sent, 1 error (one line on stderr). The results
file has the send's ``input_line`` column when the send came from the command line.
"""

from __future__ import annotations

import argparse
import os

__all__ = ["HELP", "add_arguments", "run"]

HELP = (
    "Send the rows of a send journal whose time has come, then exit: for cron or Airflow. "
    "Credentials come from the MASSIVA_USUARIO and MASSIVA_CLAVE environment variables."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``dispatch`` options to ``parser``."""
    default = os.environ.get("MASSIVA_JOURNAL") or None
    parser.add_argument(
        "--journal",
        required=default is None,
        default=default,
        metavar="PATH|URL",
        help="the send journal: a SQLite file or a postgresql:// URL (default: $MASSIVA_JOURNAL)",
    )
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


def run(args: argparse.Namespace) -> int:
    """Dispatch; print the summary; exit 0, 3 or 1.

    Examples
    --------
    >>> main(["dispatch", "--journal", "sends.db"])  # doctest: +SKIP
    0
    """
    from ..cli import EXIT_USAGE, error
    from ..outputs import suffix_problem

    problem = suffix_problem(args.out, "--out")
    if problem is not None:
        return error("dispatch", problem, EXIT_USAGE)

    from ...sending.campaign import dispatch
    from .send import exit_code, run_journalled

    outcome = run_journalled(
        "dispatch",
        args,
        lambda client: dispatch(
            args.journal,
            client=client,
            now=args.now,
            concurrency=args.concurrency,
            rate=args.rate,
            message_rate=args.message_rate,
            progress=bool(args.progress),
            allow_partial=args.allow_partial,
        ),
        required=True,
    )
    if isinstance(outcome, int):
        return outcome
    return exit_code(outcome.attrs.get("send", {}))
