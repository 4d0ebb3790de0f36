"""The ``massiva-frames`` command line.

Each subcommand lives in its own module under :mod:`massiva_frames.faces.commands`, which
exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Command
modules keep heavy imports (pandas, requests) inside ``run`` so ``--help`` stays fast.

Every subcommand shares one exit-code table (:data:`EXIT_CODES`, printed by ``--help``)
and one error line on stderr, ``massiva-frames COMMAND: error: MESSAGE``
(:func:`error`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import shutil
import signal
import sys
import textwrap
import threading
from collections.abc import Sequence

__all__ = [
    "EXIT_CODES",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "Terminated",
    "error",
    "failure_errors",
    "main",
    "one_line",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3

#: the exit codes of every command, as ``massiva-frames --help`` shows them
EXIT_CODES = """\
exit codes (every command):
  0  done: everything this run had to do went through, or there was nothing to do
     (a re-run that finds every row already sent exits 0)
  3  done, but rows need a look: rows this run judged invalid for the first time, or
     rows it sent that came back rejected, in doubt (unknown) or could not be sent
     (connection failed, credits short with --allow-partial); validate: rows invalid;
     demo: accepted messages without a delivery callback; cancel: matching rows already
     sent or in doubt, so not cancelled; resend: as send, for the rows it sent again.
     Suppressed rows (duplicates, opt-outs), rows scheduled for later and rows a
     follow-up leaves alone (delivered, awaiting a status) are by design: not 3
  1  error: nothing more was done (one line on stderr: massiva-frames COMMAND: error: ...)
  2  usage: a wrong option, value or output file name
  130, 143  stopped by Ctrl-C (SIGINT) or SIGTERM: no new request was made, the answers
     to the requests in flight were awaited and recorded (a second signal stops at
     once, leaving those rows in doubt); the same command again sends the rest
"""

#: exit codes of a run stopped by Ctrl-C and by SIGTERM (128 + the signal's number)
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: a send stops as it does on Ctrl-C."""


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    """SIGTERM handler: the first one stops the run cleanly (:class:`Terminated`, which
    the request loop treats as Ctrl-C), a second one ends the process at once."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Terminated()


#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("massiva_frames.faces.commands.demo", "run the end-to-end demo against the sandbox"),
    "sandbox": ("massiva_frames.faces.commands.sandbox", "serve a local Massiva API sandbox"),
    "validate": ("massiva_frames.faces.commands.validate", "validate a CSV/parquet file of phones"),
    "send": ("massiva_frames.faces.commands.send", "validate and send a CSV/parquet file"),
    "dispatch": ("massiva_frames.faces.commands.dispatch", "send what is due in a journal"),
    "cancel": ("massiva_frames.faces.commands.cancel", "cancel scheduled rows of a journal"),
    "resend": (
        "massiva_frames.faces.commands.resend",
        "send again the rows whose delivery failed (follow-up)",
    ),
    "credits": ("massiva_frames.faces.commands.credits", "print the account's credits"),
    "receive": ("massiva_frames.faces.commands.receive", "serve the callback receiver"),
    "report": ("massiva_frames.faces.commands.report", "delivery report from results and logs"),
    "journal": ("massiva_frames.faces.commands.journal", "copy a journal (SQLite <-> PostgreSQL)"),
}


def _available() -> dict[str, tuple[str, str]]:
    found = {}
    for name, (module, help_text) in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            found[name] = (module, help_text)
    return found


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, str]]:
    """Build the top-level parser; returns it and the subcommand -> module map."""
    parser = argparse.ArgumentParser(
        prog="massiva-frames",
        description="Bulk SMS through the Massiva API from pandas DataFrames.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from .._version import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, str] = {}
    width = max(40, min(100, shutil.get_terminal_size().columns - 2))
    for name, (module_name, help_text) in _available().items():
        module = importlib.import_module(module_name)
        sp = sub.add_parser(
            name,
            help=help_text,
            description=textwrap.fill(getattr(module, "HELP", help_text), width),
            epilog="exit codes: 0 done, 3 done but rows need a look, 1 error, 2 usage\n"
            "(massiva-frames --help shows the table)",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sp)
        modules[name] = module_name
    return parser, modules


def one_line(exc: BaseException) -> str:
    """An exception as one line: the class for the package's errors, then the message.

    Messages of the package's errors are built from masked values, so they are safe to
    show; an ``OSError`` shows its reason and file.
    """
    from ..errors import InputError, MassivaError

    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    else:
        text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, MassivaError) and type(exc) is not InputError:
        return f"{type(exc).__name__}: {text}"
    return text


def failure_errors() -> tuple[type[BaseException], ...]:
    """The errors a command reports as one line: the package's, the OS's, SQLite's,
    and ``ValueError`` (a bad value pandas or pyarrow met in a file)."""
    import sqlite3

    from ..errors import MassivaError

    return (MassivaError, sqlite3.Error, OSError, ValueError)


def error(command: str, problem: BaseException | str, code: int = EXIT_FAILURE) -> int:
    """Print ``massiva-frames COMMAND: error: ...`` on stderr; return ``code``."""
    message = problem if isinstance(problem, str) else one_line(problem)
    print(f"massiva-frames {command}: error: {message}", file=sys.stderr, flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``massiva-frames`` console script."""
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    module = importlib.import_module(modules[args.command])
    # A scheduler stops a task with SIGTERM (cron's kill, Airflow, systemd, Kubernetes):
    # the run stops as on Ctrl-C, recording what is in flight. Commands that serve
    # (receive, sandbox) install their own handlers.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop_like_ctrl_c) if in_main else None
    try:
        code: int = module.run(args)
        sys.stdout.flush()
    except Terminated:
        print(
            f"massiva-frames {args.command}: stopped by SIGTERM; what was in flight is "
            "recorded, the same command again does the rest",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # ``massiva-frames report ... | head``: the reader left; not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
