"""The ``massiva-frames`` command line.

Each subcommand lives in its own module under :mod:`massiva_frames.faces.commands`, which
exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Command
modules keep heavy imports (pandas, requests) inside ``run`` so ``--help`` stays fast.

Exit codes shared by every subcommand: 0 success, 1 failure, 2 usage error, 3 partial
(some rows invalid, rejected or unknown).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_PARTIAL", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("massiva_frames.faces.commands.demo", "run the end-to-end demo against the sandbox"),
    "sandbox": ("massiva_frames.faces.commands.sandbox", "serve a local Massiva API sandbox"),
    "validate": ("massiva_frames.faces.commands.validate", "validate a CSV/parquet file of phones"),
    "send": ("massiva_frames.faces.commands.send", "validate and send a CSV/parquet file"),
    "dispatch": ("massiva_frames.faces.commands.dispatch", "send what is due in a journal"),
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
    )
    from .._version import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, str] = {}
    for name, (module_name, help_text) in _available().items():
        module = importlib.import_module(module_name)
        sp = sub.add_parser(name, help=help_text, description=getattr(module, "HELP", help_text))
        module.add_arguments(sp)
        modules[name] = module_name
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``massiva-frames`` console script."""
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    module = importlib.import_module(modules[args.command])
    try:
        code: int = module.run(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # ``massiva-frames report ... | head``: the reader left; not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
