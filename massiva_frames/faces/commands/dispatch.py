"""``massiva-frames dispatch``: send what is due in a journal, then exit (cron, Airflow).

Rows scheduled by ``send`` (``send_at``, quiet-hours window) whose time has come, and
rows an earlier run could not send (connection failed, credits short), go out with the
settings of the send that journalled them. Rows in doubt (``unknown``) are never resent.
Exit codes: 0 everything due was accepted (or nothing was due), 3 some of it was
rejected, is in doubt or could not be sent, 1 failure (one line on stderr).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

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
    from ...errors import MassivaError
    from ...sending.campaign import dispatch
    from ..cli import EXIT_OK, EXIT_PARTIAL
    from .send import _FAILURE_ERRORS, fail, make_client, print_summary, write_table

    out = None if args.out is None else Path(args.out)
    client = None
    try:
        client = make_client(args, required=True)
        results = dispatch(
            args.journal,
            client=client,
            now=args.now,
            concurrency=args.concurrency,
            rate=args.rate,
            message_rate=args.message_rate,
            progress=bool(args.progress),
            allow_partial=args.allow_partial,
        )
        if out is not None:
            write_table(results, out)
    except MassivaError as exc:
        partial = getattr(exc, "results", None)
        if partial is not None and out is not None:
            write_table(partial, out)
        return fail("dispatch", exc)
    except _FAILURE_ERRORS as exc:
        return fail("dispatch", exc)
    finally:
        if client is not None:
            client.close()
    print_summary(results, out=out)
    figures = results.attrs.get("send", {})
    due = int(figures.get("messages_due", 0))
    accepted = int(figures.get("accepted", 0))
    return EXIT_OK if accepted == due else EXIT_PARTIAL
