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

from .journalled import add_journal_argument, add_run_arguments

__all__ = ["HELP", "add_arguments", "run"]

HELP = (
    "Send the rows of a send journal whose time has come, then exit: for cron or Airflow. "
    "Credentials come from the MASSIVA_USUARIO and MASSIVA_CLAVE environment variables."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``dispatch`` options to ``parser``."""
    add_journal_argument(parser)
    add_run_arguments(parser)


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
    from .journalled import run_journalled, run_options
    from .send import exit_code

    outcome = run_journalled(
        "dispatch",
        args,
        lambda client: dispatch(args.journal, client=client, **run_options(args)),
        required=True,
    )
    if isinstance(outcome, int):
        return outcome
    return exit_code(outcome.attrs.get("send", {}))
