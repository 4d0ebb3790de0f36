"""``massiva-frames send``: validate and send a CSV, Excel or parquet file; write the results.

Credentials come from ``MASSIVA_USUARIO`` and ``MASSIVA_CLAVE`` (never from the command
line, where other users could read them); the base URL from ``--base-url``, else
``MASSIVA_BASE_URL``, else the provider's.

The input is read by :mod:`massiva_frames.faces.inputs` (encoding, separator, sheet; every
row labelled with its file line). The results file has one row per input row: ``input_line``,
the ``--key`` and ``--keep`` columns, then the results columns, so it joins back to the
input. Output paths are checked before the first request and written atomically.

Every send is journalled: in ``--journal``, else in a temporary journal next to ``--out``
that is deleted once the results are written and kept (and named) when they cannot be.
Exit codes: the table of :data:`massiva_frames.faces.cli.EXIT_CODES`; 3 only for rows this
run judged invalid for the first time, or sent and saw rejected, in doubt or not sent.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..inputs import add_input_options

if TYPE_CHECKING:
    import pandas as pd

    from ...wire.client import MassivaClient

__all__ = ["HELP", "add_arguments", "run"]

HELP = (
    "Validate a CSV, Excel or parquet file of phones and send it through the Massiva API; "
    "write one result per input row (parquet or CSV) with its file line, the --key and "
    "--keep columns. With --journal, a re-run never sends a row twice, and scheduled rows "
    "wait for 'massiva-frames dispatch'. Credentials come from the MASSIVA_USUARIO and "
    "MASSIVA_CLAVE environment variables."
)

#: the columns attach_delivery adds to a results frame
_DELIVERY_COLUMNS = ("line", "status_at", "delivered_at", "latency")
#: results states of rows that were not sent and will not be by a re-run
_LOOK_STATES = ("invalid", "rejected", "unknown")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``send`` options to ``parser``."""
    from .validate import add_validation_flags

    parser.add_argument(
        "input",
        metavar="INPUT",
        help="rows to send (.csv, .xlsx or .parquet; a parquet directory or glob streams)",
    )
    add_input_options(parser)
    parser.add_argument("--phone", default="phone", metavar="COL", help="phone column (phone)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", metavar="COL", help="column with each row's text")
    what.add_argument("--template", metavar="STR", help="template, e.g. 'Hola {nombre}'")
    parser.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="results file (.parquet or .csv), or "
        "directory (ending with /) of a streamed send's parquet parts",
    )
    parser.add_argument(
        "--chunk-rows", type=int, default=None, metavar="N",
        help="stream the input N rows at a time (also when INPUT is a parquet directory or "
        "glob, or --out a directory); needs --journal",
    )  # fmt: skip
    parser.add_argument(
        "--journal",
        metavar="PATH|URL",
        default=os.environ.get("MASSIVA_JOURNAL") or None,
        help="journal, so that re-runs never send a row twice: a SQLite file or a "
        "postgresql:// URL (default: $MASSIVA_JOURNAL, else a temporary SQLite file next "
        "to --out, deleted once the results are written)",
    )
    parser.add_argument("--campaign", metavar="NAME", help="campaign name (part of row keys)")
    parser.add_argument(
        "--key", metavar="COL", help="column of stable row keys (also kept in the results)"
    )
    parser.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="COL",
        help="input column to copy into the results, repeatable",
    )
    parser.add_argument("--dry-run", action="store_true", help="validate and plan; send nothing")
    parser.add_argument("--method", choices=("GET", "POST"), default=None, help="HTTP method")
    parser.add_argument("--group", metavar="NAME", help="the provider's contact group (grupo)")
    parser.add_argument(
        "--send-at",
        metavar="TIME|COL",
        help="when to send: a time (America/Caracas unless it has an offset) or a column",
    )
    parser.add_argument(
        "--window", metavar="HH:MM-HH:MM", help="quiet hours, e.g. 08:00-20:00 (Caracas)"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (4)")
    parser.add_argument("--rate", type=float, help="most requests per second")
    parser.add_argument("--message-rate", type=float, help="most messages per second")
    parser.add_argument("--max-phones", type=int, default=500, help="phones per request (500)")
    parser.add_argument(
        "--allow-partial", action="store_true", help="credits short: send the rows that fit"
    )
    parser.add_argument(
        "--resend-unknown",
        action="store_true",
        help="send again rows left unknown by an earlier run (may duplicate)",
    )
    parser.add_argument(
        "--long-text", choices=("error", "truncate", "split"), default="error",
        help="texts over 160 characters (error)",
    )  # fmt: skip
    parser.add_argument(
        "--dedupe", choices=("phone+text", "phone", "none"), default="phone+text",
        help="which repeated rows to suppress (phone+text)",
    )  # fmt: skip
    parser.add_argument("--transliterate", action="store_true", help="map accents to GSM-7 letters")
    parser.add_argument("--suppress", metavar="FILE", help="opt-out phones (.csv or .parquet)")
    parser.add_argument("--base-url", help="API base URL (default: $MASSIVA_BASE_URL)")
    parser.add_argument("--timeout", type=float, default=30.0, help="read timeout, s (30)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--failures",
        type=int,
        default=10,
        metavar="N",
        help="print the first N rows invalid, rejected or unknown, by file line (10; 0: none)",
    )
    add_validation_flags(parser)


def make_client(args: argparse.Namespace, *, required: bool) -> MassivaClient | None:
    """The client from the environment, or None for a dry run without credentials."""
    from ...errors import InputError
    from ...wire.client import MassivaClient

    options: dict[str, Any] = {
        "base_url": args.base_url,
        "timeout": (min(3.05, args.timeout), args.timeout),
    }
    if getattr(args, "method", None):
        options["method"] = args.method
    try:
        return MassivaClient(**options)
    except InputError:
        if required:
            raise
        return None


def send_options(
    args: argparse.Namespace, *, journal: str | None, window: tuple[str, str] | None
) -> dict[str, Any]:
    """The keyword arguments of ``send`` (and ``send_stream``) the flags ask for, but the
    client, the opt-out list and the streamed source's own ones."""
    from .validate import validation_options

    return {
        "phone": args.phone,
        "text": args.text,
        "template": args.template,
        "journal": journal,
        "campaign": args.campaign,
        "key": args.key,
        "dry_run": args.dry_run,
        "concurrency": args.concurrency,
        "rate": args.rate,
        "message_rate": args.message_rate,
        "send_at": args.send_at,
        "window": window,
        "group": args.group,
        "progress": not args.no_progress,
        "allow_partial": args.allow_partial,
        "resend_unknown": args.resend_unknown,
        "method": args.method,
        "max_phones": args.max_phones,
        "long_text": args.long_text,
        "dedupe": None if args.dedupe == "none" else args.dedupe,
        "transliterate": args.transliterate,
        **validation_options(args),
    }


def print_summary(results: pd.DataFrame, *, out: Path | None) -> None:
    """Counts by state (and reason) and this run's figures, on stdout."""
    counts = (
        results.assign(reason=results["reason"].fillna("-"))
        .groupby(["state", "reason"], observed=True)
        .size()
        .reset_index(name="rows")
    )
    print(f"{'state':<11} {'reason':<32} {'rows':>8}")
    for state, reason, n in counts.itertuples(index=False):
        print(f"{state!s:<11} {reason!s:<32} {n:>8}")
    print(f"{'total':<11} {'':<32} {len(results):>8}")
    figures = results.attrs.get("send", {})
    if figures:
        print(run_line(figures))
    if out is not None:
        print(f"results written to {out}")


def run_line(figures: dict[str, Any]) -> str:
    """What this run did, in one line (``results.attrs["send"]``)."""
    dry = bool(figures.get("dry_run"))
    due = int(figures.get("messages_due") or 0)
    later = int(figures.get("messages_scheduled_later") or 0)
    if not due:
        what = "dry run: nothing would be sent" if dry else "this run: nothing to send"
        why = ["every sendable row was already sent by an earlier run"] if not later else []
        if later:
            why.append(f"{later} message(s) scheduled for later (massiva-frames dispatch)")
        return f"{what} ({'; '.join(why)}); no request, no credits needed"
    parts = [f"{figures.get('requests', 0)} request(s)", f"{figures.get('messages', 0)} message(s)"]
    if not dry:
        parts.append(
            f"{figures.get('accepted', 0)} accepted, {figures.get('rejected', 0)} rejected, "
            f"{figures.get('unknown', 0)} unknown, {figures.get('not_sent', 0)} not sent"
        )
    if figures.get("seconds") is not None:
        parts.append(f"{figures['seconds']:.2f} s")
    if figures.get("messages_per_second"):
        parts.append(f"{figures['messages_per_second']:,.0f} messages/s")
    available = figures.get("credits_available")
    parts.append(
        f"credits needed {figures.get('credits_needed', 0)}"
        f" (segments {figures.get('segments_needed', 0)}), "
        + ("available: not checked" if available is None else f"available {available}")
    )
    if later:
        parts.append(f"{later} scheduled for later")
    return ("dry run: " if dry else "this run: ") + " · ".join(parts)


def attention(figures: dict[str, Any], *, newly_invalid: int) -> dict[str, int]:
    """The rows of this run that need a look, by kind (empty: exit 0)."""
    counts = {"newly invalid": newly_invalid}
    for key, label in (
        ("rejected", "rejected"),
        ("unknown", "unknown (in doubt)"),
        ("not_sent", "not sent"),
        ("messages_not_affordable", "not sent: credits short"),
        ("recovered_unknown", "in doubt after an earlier run stopped"),
    ):
        counts[label] = int(figures.get(key) or 0)
    if figures.get("dry_run"):
        available = figures.get("credits_available")
        needed = int(figures.get("credits_needed") or 0)
        counts["beyond the credits"] = max(0, needed - available) if available is not None else 0
    return {label: n for label, n in counts.items() if n}


def exit_code(figures: dict[str, Any], *, newly_invalid: int = 0) -> int:
    """3 when this run left rows that need a look (:func:`attention`), else 0."""
    from ..cli import EXIT_OK, EXIT_PARTIAL

    look = attention(figures, newly_invalid=newly_invalid)
    if not look:
        return EXIT_OK
    print("needs a look (exit 3): " + ", ".join(f"{n} {label}" for label, n in look.items()))
    return EXIT_PARTIAL


def newly_invalid(results: pd.DataFrame, before: pd.DataFrame | None) -> int:
    """Rows invalid now that the journal's previous results did not hold invalid for the
    same reason at the same line (all of them without earlier results)."""
    invalid = (results["state"] == "invalid").to_numpy()
    if before is None or not before.index.is_unique:
        return int(invalid.sum())
    was = before["reason"].where(before["state"] == "invalid").reindex(results.index)
    same = was.astype("string").fillna("") == results["reason"].astype("string").fillna("")
    return int((invalid & ~same.to_numpy(dtype=bool)).sum())


def rows_to_look_at(results: pd.DataFrame, *, source: pd.DataFrame, phone: str, limit: int) -> None:
    """Print the first ``limit`` invalid, rejected or unknown rows, by file line."""
    if limit <= 0:
        return
    look = results[results["state"].isin(_LOOK_STATES)].head(limit)
    if not len(look):
        return
    import pandas as pd

    table = pd.DataFrame(
        {
            "state": look["state"].astype(str).to_numpy(),
            "reason": look["reason"].astype("string").fillna("-").to_numpy(),
        },
        index=look.index,
    )
    if phone in source.columns:
        table[phone] = source[phone].reindex(look.index).astype("string").fillna("").to_numpy()
    print(
        f"\nfirst {len(table)} row(s) not sent: invalid, rejected or unknown "
        "(line = line of the input file):"
    )
    print(table.rename_axis("line").reset_index().to_string(index=False))


def with_input_columns(
    results: pd.DataFrame, source: pd.DataFrame, columns: list[str]
) -> pd.DataFrame:
    """The results with ``columns`` of the input in front (``input_NAME`` on a clash).

    A clash is a name the results use, or one ``attach_delivery`` adds later (``line``,
    ``status_at``, ``delivered_at``, ``latency``), which would overwrite the input's.
    """
    joined = results.copy()
    taken = {*map(str, results.columns), *map(str, results.index.names), *_DELIVERY_COLUMNS}
    for position, column in enumerate(dict.fromkeys(columns)):
        name = column
        while name in taken or name in joined.columns:
            name = f"input_{name}"
        joined.insert(position, name, source[column].reindex(results.index).to_numpy())
    return joined


def _window(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    opening, sep, closing = text.partition("-")
    if not sep:
        raise ValueError(f"--window: expected HH:MM-HH:MM, got {text!r}")
    return opening.strip(), closing.strip()


def _earlier_results(journal: str | None) -> pd.DataFrame | None:
    """The journal's results before this run (None: no journal yet, or unreadable)."""
    import os
    import sqlite3

    from ...errors import MassivaError
    from ...sending.campaign import results_from_journal
    from ...sending.journal.postgres_url import is_postgres_url

    if journal is None or not (is_postgres_url(journal) or os.path.exists(journal)):
        return None
    try:
        return results_from_journal(journal)
    except (MassivaError, sqlite3.Error, OSError, ValueError, KeyError):
        return None


def _sent_anything(journal: Path) -> bool:
    """Whether a journal holds a message that went out (or may have): keep it then."""
    import sqlite3

    from ...errors import MassivaError
    from ...sending.campaign import results_from_journal

    if not journal.exists():
        return False
    try:
        states = results_from_journal(journal)["state"].astype(str)
    except (MassivaError, sqlite3.Error, OSError, ValueError, KeyError):
        return True  # cannot tell: keep it
    return bool(states.isin(("accepted", "rejected", "unknown")).any())


def _recovery(journal: Path, command_hint: str) -> str:
    return (
        f"the results are kept in the journal {journal}: {command_hint}, or load them "
        f"with mf.results_from_journal({str(journal)!r})"
    )


def run(args: argparse.Namespace) -> int:
    """Send the file; write and summarise the results.

    Examples
    --------
    >>> main(["send", "clientes.csv", "--phone", "telefono", "--template", "Hola {nombre}",
    ...       "--out", "results.parquet", "--journal", "sends.db"])  # doctest: +SKIP
    0
    """
    from ..cli import EXIT_USAGE, error
    from ..inputs import input_problem
    from ..outputs import suffix_problem
    from .streamed import run_streamed, streams

    if streams(args):
        try:
            options = send_options(args, journal=args.journal, window=_window(args.window))
            return run_streamed(args, options, make_client)
        except ValueError as exc:
            return error("send", exc, EXIT_USAGE)
    problem = suffix_problem(args.out, "--out")
    if problem is not None:
        return error("send", problem, EXIT_USAGE)
    problem = input_problem(args.input)
    if problem is not None:
        return error("send", problem, EXIT_USAGE)
    if args.failures < 0:
        return error("send", "--failures must be 0 or more", EXIT_USAGE)
    try:
        window = _window(args.window)
    except ValueError as exc:
        return error("send", exc, EXIT_USAGE)

    from ...sending.campaign import send
    from ...sending.journal.postgres_url import is_postgres_url
    from ..cli import failure_errors
    from ..inputs import note_input, read_input, read_phone_list, require_columns
    from ..outputs import check_output, remove_journal, temporary_journal, write_table

    out = Path(args.out)
    errors = failure_errors()
    try:
        check_output(out, "--out")
        if args.journal and not is_postgres_url(args.journal):  # a URL is no file path
            check_output(args.journal, "--journal")
        loaded = read_input(args.input, encoding=args.encoding, sep=args.sep, sheet=args.sheet)
        note_input("send", loaded)
        named = {"--phone": args.phone, "--text": args.text, "--key": args.key}
        named.update({f"--keep {c}": c for c in args.keep})
        require_columns(loaded, named)
        suppress = read_phone_list(args.suppress) if args.suppress else None
    except errors as exc:
        return error("send", exc)
    df = loaded.frame

    temporary = args.journal is None and not args.dry_run
    journal = str(temporary_journal(out)) if temporary else args.journal
    if temporary:
        print(
            f"journal: {journal} (temporary: deleted once the results are written; "
            "--journal PATH keeps one so that re-runs never send twice)",
            flush=True,
        )
    before = None if temporary else _earlier_results(journal)
    keep = [c for c in (args.key, *args.keep) if c is not None]
    client = None
    try:
        client = make_client(args, required=not args.dry_run)
        options = send_options(args, journal=journal, window=window)
        if suppress is not None:
            options["suppress"] = suppress
        results = send(df, client=client, **options)
    except errors as exc:
        partial = getattr(exc, "results", None)
        unwritten = False
        if partial is not None:  # stopped mid-run: what was sent is still worth keeping
            try:
                write_table(with_input_columns(partial, df, keep), out)
                print_summary(partial, out=out)
            except errors as write_exc:
                error("send", f"cannot write --out {out}: {_reason(write_exc)}")
                unwritten = True
        # a temporary journal stays when it holds what went out, or results not written
        kept = temporary and (unwritten or _sent_anything(Path(journal)))
        if temporary and not kept:
            remove_journal(journal)
        code = error("send", exc)
        if kept or (unwritten and journal is not None):
            hint = f"re-run this command with --journal {journal} to send the rest"
            print(f"massiva-frames send: {_recovery(Path(journal), hint)}", file=sys.stderr)
        return code
    finally:
        if client is not None:
            client.close()
    try:
        write_table(with_input_columns(results, df, keep), out)
    except errors as exc:
        print_summary(results, out=None)
        hint = f"re-run this command with --journal {journal} and a --out that can be written"
        return error(
            "send",
            f"cannot write --out {out}: {_reason(exc)}; nothing is lost: "
            + _recovery(Path(journal), hint + " (nothing is sent twice)"),
        )
    if temporary:
        remove_journal(journal)
    print_summary(results, out=out)
    rows_to_look_at(results, source=df, phone=args.phone, limit=args.failures)
    return exit_code(results.attrs.get("send", {}), newly_invalid=newly_invalid(results, before))


def _reason(exc: BaseException) -> str:
    from ..cli import one_line

    return one_line(exc)
