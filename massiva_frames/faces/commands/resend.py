"""``massiva-frames resend``: send again, as a new attempt, the rows whose delivery failed.

Reads each message's final status from the receiver's log (``--log LOGDIR``), and sends
again the rows of the journal's campaign whose latest attempt failed (``--states failed``,
the default; ``rejected`` too when asked), and with ``--pending-after 2h`` the rows
accepted that long ago without a final status. A delivered row is never sent again; a
row in doubt (unknown) only with ``--resend-unknown``. Running the same follow-up twice
sends each row once. Exit codes (:data:`massiva_frames.faces.cli.EXIT_CODES`): 0 done
(also when there was nothing to send again), 3 some of what this run sent was rejected,
is in doubt or could not be sent, 1 error (one line on stderr), 2 usage.
"""

from __future__ import annotations

import argparse

from .journalled import add_journal_argument, add_run_arguments

__all__ = ["HELP", "add_arguments", "run"]

HELP = (
    "Send again, as a new attempt of the same campaign, the rows of a send journal whose "
    "delivery failed (read from the receiver's log). Delivered rows are never sent again. "
    "Credentials come from the MASSIVA_USUARIO and MASSIVA_CLAVE environment variables."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``resend`` options to ``parser``."""
    add_journal_argument(parser)
    parser.add_argument(
        "--log", required=True, metavar="LOGDIR", help="the receiver's log directory"
    )
    parser.add_argument(
        "--campaign", metavar="NAME", help="the campaign to follow up (default: the latest send's)"
    )
    parser.add_argument(
        "--states",
        nargs="+",
        choices=("failed", "rejected"),
        default=["failed"],
        metavar="STATE",
        help="the outcomes to send again: failed (the default), rejected",
    )
    parser.add_argument(
        "--pending-after",
        metavar="DURATION",
        help="also send again rows accepted this long ago (e.g. 2h) with no final status",
    )
    parser.add_argument(
        "--resend-unknown",
        action="store_true",
        help="also send again rows in doubt (they may be received twice)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="report what would be sent; send and write nothing"
    )
    add_run_arguments(parser)


def _duration_problem(value: str | None) -> str | None:
    """Why ``--pending-after`` is not a duration of 0 or more (None when it is)."""
    if value is None:
        return None
    import pandas as pd

    try:
        span = pd.Timedelta(value)
    except (TypeError, ValueError):
        return f"--pending-after {value!r} is not a duration (e.g. 2h, 90min, 1d)"
    if pd.isna(span) or span < pd.Timedelta(0):
        return f"--pending-after {value!r} must be a duration of 0 or more"
    return None


def run(args: argparse.Namespace) -> int:
    """Resend; print the summary and what was decided; exit 0, 3, 1 or 2.

    Examples
    --------
    >>> main(["resend", "--journal", "sends.db", "--log", "logs"])  # doctest: +SKIP
    0
    """
    from ..cli import EXIT_USAGE, error
    from ..outputs import suffix_problem

    problem = suffix_problem(args.out, "--out") or _duration_problem(args.pending_after)
    if problem is not None:
        return error("resend", problem, EXIT_USAGE)

    from ..followup import resend
    from .journalled import run_journalled, run_options
    from .send import exit_code

    outcome = run_journalled(
        "resend",
        args,
        lambda client: resend(
            args.journal,
            args.log,
            client=client,
            campaign=args.campaign,
            states=args.states,
            pending_after=args.pending_after,
            dry_run=args.dry_run,
            resend_unknown=args.resend_unknown,
            **run_options(args),
        ),
        required=not args.dry_run,
    )
    if isinstance(outcome, int):
        return outcome
    print(decided_line(outcome.attrs.get("resend", {}), dry_run=args.dry_run), flush=True)
    return exit_code(outcome.attrs.get("send", {}))


def decided_line(counts: dict[str, int], *, dry_run: bool) -> str:
    """What the follow-up decided, in rows, in one line."""
    verb = "would send again" if dry_run else "sent again"
    chosen = [
        f"{counts.get(k, 0)} {label}"
        for k, label in (
            ("failed", "failed"),
            ("overdue", "without a final status past --pending-after"),
            ("rejected", "rejected"),
            ("unknown", "in doubt"),
        )
        if counts.get(k)
    ]
    line = f"follow-up: {verb} {counts.get('resent', 0)} row(s)"
    if chosen:
        line += f" ({', '.join(chosen)})"
    left = [
        f"{counts.get(k, 0)} {label}"
        for k, label in (
            ("queued", "queued by an earlier follow-up"),
            ("delivered", "delivered"),
            ("awaiting", "awaiting a final status"),
            ("not_chosen", "in a state not asked for"),
            ("in_doubt", "in doubt (--resend-unknown sends them again)"),
            ("elsewhere", "scheduled, cancelled or in flight"),
        )
        if counts.get(k)
    ]
    if left:
        line += "; " + ", ".join(left)
    return line
