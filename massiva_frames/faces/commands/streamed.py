"""``massiva-frames send`` on a source bigger than memory: a parquet dataset (directory or
glob) or a CSV file sent chunk by chunk, the results written as a parquet dataset.

The command streams when ``--chunk-rows`` is given, the input is a directory or a glob,
or ``--out`` ends with ``/`` (a directory). The journal
is then required (``--journal`` or ``MASSIVA_JOURNAL``): a killed run resumes from it.
Rows are labelled by their row number in the source (from 0); ``--keep`` is not offered
(the parts hold the results columns only; join them back on the row number).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...wire.client import MassivaClient

__all__ = ["run_streamed", "streams"]


def streams(args: argparse.Namespace) -> bool:
    """Whether the arguments ask for a streamed send."""
    source, out = str(args.input), str(args.out)
    return (
        args.chunk_rows is not None
        or os.path.isdir(source)
        or any(c in source for c in "*?[")
        or out.endswith(("/", os.sep))
    )


def run_streamed(
    args: argparse.Namespace,
    options: dict[str, Any],
    make_client: Callable[..., MassivaClient | None],
) -> int:
    """Send ``args.input`` chunk by chunk into the ``args.out`` dataset; the exit code.

    ``options`` are the keyword arguments the flags ask for (``send``'s), and
    ``make_client(args, required=...)`` builds the client as ``send`` does."""
    from ...sending.streaming import send_stream
    from ..cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, error, failure_errors
    from ..inputs import read_phone_list

    if args.journal is None and not args.dry_run:
        return error(
            "send",
            "a streamed send needs --journal (or MASSIVA_JOURNAL): a killed run resumes from it",
            EXIT_USAGE,
        )
    if args.keep:
        return error("send", "--keep is not available for a streamed send", EXIT_USAGE)
    errors = failure_errors()
    client = None
    try:
        if args.suppress:
            options = {**options, "suppress": read_phone_list(args.suppress)}
        client = make_client(args, required=not args.dry_run)
        summary = send_stream(
            args.input,
            out=args.out,
            chunk_rows=args.chunk_rows or 100_000,
            client=client,
            **options,
        )
    except errors as exc:
        return error("send", exc)
    finally:
        if client is not None:
            client.close()
    states = ", ".join(f"{s} {n}" for s, n in summary.states.items()) or "none"
    what = "dry run" if summary.dry_run else "this run"
    print(
        f"{what}: {summary.rows} rows in {summary.chunks} chunk(s) "
        f"({summary.resumed_chunks} done by an earlier run); states: {states}; "
        f"{summary.requests} request(s), {summary.messages} message(s), "
        f"credits needed {summary.credits_needed}, available "
        f"{'not checked' if summary.credits_available is None else summary.credits_available}"
        f"; {summary.seconds:.2f} s"
    )
    if summary.dry_run:
        return EXIT_OK
    print(f"results written to {summary.out}")
    look = {s: n for s, n in summary.states.items() if s != "accepted"}
    if look:
        print("needs a look (exit 3): " + ", ".join(f"{n} {s}" for s, n in look.items()))
        return EXIT_PARTIAL
    return EXIT_OK
