"""``massiva-frames journal copy SRC DST``: move a send journal between SQLite and PostgreSQL.

SRC and DST are each a SQLite file or a ``postgresql://`` URL (a password in the URL is
never printed; ``PGPASSWORD`` and the other libpq variables work too). The copy keeps
every state: the latest call's rows and settings, every message with its outcome, every
batch (one in flight stays in flight, read as ``unknown``) and every run. DST must be
new or empty. Exit codes: 0 copied, 1 failure (one line on stderr), 2 usage.
"""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "run"]

HELP = (
    "Work on send journals. 'journal copy SRC DST' copies a journal between a SQLite file "
    "and a PostgreSQL database (postgresql://user@host/db?schema=NAME), either way, every "
    "state preserved; DST must be new or empty."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``journal`` actions to ``parser``."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    copy = actions.add_parser(
        "copy",
        help="copy a journal (SQLite file or postgresql:// URL) into a new one",
        description="Copy a send journal into a new or empty one, every state preserved.",
    )
    copy.add_argument("source", metavar="SRC", help="a SQLite file or a postgresql:// URL")
    copy.add_argument("destination", metavar="DST", help="a SQLite file or a postgresql:// URL")


def run(args: argparse.Namespace) -> int:
    """Copy; print one line; exit 0 or 1.

    Examples
    --------
    >>> main(["journal", "copy", "sends.db", "postgresql://etl@db/sms"])  # doctest: +SKIP
    0
    """
    from ...sending.journal.postgres import copy_journal
    from ..cli import EXIT_OK, error, failure_errors

    try:
        print(copy_journal(args.source, args.destination))
    except failure_errors() as exc:
        return error("journal copy", exc)
    return EXIT_OK
