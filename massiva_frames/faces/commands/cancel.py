"""``massiva-frames cancel``: take scheduled rows out of a send journal; they are never sent.

The pending (scheduled, not yet sent) messages that match every filter given become
``cancelled``: ``dispatch`` and re-runs of ``send`` skip them, and the results show them
as ``cancelled``. Rows already sent, in doubt or in flight are left as they are. Rows are
picked by ``--campaign``, ``--before`` (due before a time), and either ``--rows FILE`` (a
CSV or parquet file with an ``input_line`` column, such as rows of a ``send --out``
results file) or ``--key VALUE...`` (values of the send's ``--key`` column). Exit codes
(:data:`massiva_frames.faces.cli.EXIT_CODES`): 0 done (also when nothing matched), 3 some
matching rows were already sent or are in doubt, so they could not be cancelled, 1
error, 2 usage.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["HELP", "add_arguments", "run"]

HELP = (
    "Cancel scheduled rows of a send journal: the pending rows that match every filter "
    "become 'cancelled' and are never sent. Rows already sent or in doubt are left as they are."
)

#: the column of a results file that names the input's rows
_LINE = "input_line"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``cancel`` options to ``parser``."""
    parser.add_argument("--journal", required=True, metavar="PATH", help="the send journal")
    parser.add_argument("--campaign", metavar="NAME", help="only rows of this campaign")
    parser.add_argument(
        "--before",
        metavar="TIME",
        help="only rows due before this time (America/Caracas unless it has an offset)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--rows",
        metavar="FILE",
        help=f"only these rows: a CSV or parquet file with an {_LINE} column (a results file)",
    )
    which.add_argument(
        "--key",
        metavar="VALUE",
        nargs="+",
        action="extend",
        help="only the rows with these values in the send's --key column",
    )


def _lines(path: Path) -> list[Any]:
    """The ``input_line`` values of a CSV or parquet file."""
    import pandas as pd

    from ...errors import InputError

    if path.suffix.lower() == ".parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if _LINE not in frame.columns:
        raise InputError(
            f"--rows {path}: no {_LINE} column (give rows of a results file written by "
            "send or dispatch --out, or use --key)"
        )
    values = frame[_LINE].astype(str).str.strip()
    values = values[values != ""]
    if not values.str.fullmatch(r"\d+").all():
        bad = values[~values.str.fullmatch(r"\d+")].iloc[0]
        raise InputError(f"--rows {path}: {_LINE} {bad!r} is not a line number")
    return [int(v) for v in values]


def run(args: argparse.Namespace) -> int:
    """Cancel; print what was cancelled and what could not be; exit 0, 3, 1 or 2.

    Examples
    --------
    >>> main(["cancel", "--journal", "sends.db", "--campaign", "enero"])  # doctest: +SKIP
    cancelled 120 messages
    0
    """
    from ..cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, error, failure_errors

    if args.campaign is None and args.before is None and args.rows is None and not args.key:
        return error(
            "cancel", "say what to cancel: --campaign, --before, --rows or --key", EXIT_USAGE
        )

    from ...sending.cancelling import cancel

    try:
        rows = None if args.rows is None else _lines(Path(args.rows))
        counts = cancel(
            args.journal, campaign=args.campaign, before=args.before, rows=rows, keys=args.key
        )
    except failure_errors() as exc:
        return error("cancel", exc)
    line = f"cancelled {counts.cancelled} messages"
    if counts.already_cancelled:
        line += f" ({counts.already_cancelled} were already cancelled)"
    print(line, flush=True)
    if counts.untouched:
        print(
            f"not cancelled: {counts.sent} already sent, {counts.unknown} in doubt (unknown), "
            f"{counts.in_flight} in flight",
            flush=True,
        )
        return EXIT_PARTIAL
    return EXIT_OK
