"""``massiva-frames send``: validate and send a CSV or parquet file; write the results.

Credentials come from ``MASSIVA_USUARIO`` and ``MASSIVA_CLAVE`` (never from the command
line, where other users could read them); the base URL from ``--base-url``, else
``MASSIVA_BASE_URL``, else the provider's. Exit codes: 0 every row accepted, 3 partial
(some rows invalid, suppressed, rejected, unknown or still scheduled), 1 failure (one
line on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from ...wire.client import MassivaClient

__all__ = ["HELP", "add_arguments", "run"]

HELP = (
    "Validate a CSV or parquet file of phones and send it through the Massiva API; write "
    "one result per input row (parquet or CSV). With --journal, a re-run never sends a "
    "row twice, and scheduled rows wait for 'massiva-frames dispatch'. Credentials come "
    "from the MASSIVA_USUARIO and MASSIVA_CLAVE environment variables."
)

_FAILURE_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``send`` options to ``parser``."""
    parser.add_argument("input", metavar="INPUT", help="rows to send (.csv or .parquet)")
    parser.add_argument("--phone", default="phone", metavar="COL", help="phone column (phone)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", metavar="COL", help="column with each row's text")
    what.add_argument("--template", metavar="STR", help="template, e.g. 'Hola {nombre}'")
    parser.add_argument(
        "--out", required=True, metavar="FILE", help="results file (.parquet or .csv)"
    )
    parser.add_argument(
        "--journal",
        metavar="PATH|URL",
        help="journal for idempotent re-runs: a SQLite file or a postgresql:// URL "
        "(default: $MASSIVA_JOURNAL)",
    )
    parser.add_argument("--campaign", metavar="NAME", help="campaign name (part of row keys)")
    parser.add_argument("--key", metavar="COL", help="column of stable row keys")
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


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV (every column as text, so phones keep their zeros) or parquet file."""
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix in (".csv", ".txt"):
        return pd.read_csv(path, dtype=str)
    raise ValueError(f"{path}: expected a .csv or .parquet file")


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write the results as parquet or CSV (the index first), by the file's suffix."""
    if path.suffix.lower() == ".csv":
        frame.to_csv(path)
    else:
        frame.to_parquet(path)


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


def fail(command: str, exc: BaseException) -> int:
    """One line on stderr (messages are built from masked values), exit code 1."""
    from ..cli import EXIT_FAILURE

    message = " ".join(str(exc).split())
    print(f"massiva-frames {command}: {type(exc).__name__}: {message}", file=sys.stderr)
    return EXIT_FAILURE


def print_summary(results: pd.DataFrame, *, out: Path | None) -> None:
    """Counts by state (and reason) and the run's figures, on stdout."""
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
        parts = [
            f"{figures.get('requests', 0)} request(s)",
            f"{figures.get('messages', 0)} message(s)",
        ]
        if figures.get("seconds") is not None:
            parts.append(f"{figures['seconds']:.2f} s")
        if figures.get("messages_per_second"):
            parts.append(f"{figures['messages_per_second']:,.0f} messages/s")
        parts.append(
            f"credits needed {figures.get('credits_needed', 0)}"
            f" (segments {figures.get('segments_needed', 0)})"
            f", available {figures.get('credits_available', '?')}"
        )
        prefix = "dry run: " if figures.get("dry_run") else ""
        print(prefix + " · ".join(parts))
    if out is not None:
        print(f"results written to {out}")


def exit_code(results: pd.DataFrame, *, dry_run: bool) -> int:
    """0 when every row was accepted (dry run: would be sent), else 3 (partial)."""
    from ..cli import EXIT_OK, EXIT_PARTIAL

    if dry_run:
        would_send = (results["state"] == "scheduled") & (results["reason"] == "dry_run")
        ok = bool((would_send | (results["state"] == "accepted")).all())
    else:
        ok = bool((results["state"] == "accepted").all())
    return EXIT_OK if ok else EXIT_PARTIAL


def _window(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    opening, sep, closing = text.partition("-")
    if not sep:
        raise ValueError(f"--window: expected HH:MM-HH:MM, got {text!r}")
    return opening.strip(), closing.strip()


def run(args: argparse.Namespace) -> int:
    """Send the file; write and summarise the results.

    Examples
    --------
    >>> main(["send", "clientes.csv", "--phone", "telefono", "--template", "Hola {nombre}",
    ...       "--out", "results.parquet", "--journal", "sends.db"])  # doctest: +SKIP
    0
    """
    from ...errors import MassivaError
    from ...sending.campaign import send

    out = Path(args.out)
    if out.suffix.lower() not in (".parquet", ".pq", ".csv"):
        return fail("send", ValueError(f"--out: expected a .parquet or .csv file, got {out}"))
    client = None
    try:
        df = read_table(Path(args.input))
        client = make_client(args, required=not args.dry_run)
        options: dict[str, Any] = {
            "phone": args.phone,
            "text": args.text,
            "template": args.template,
            "journal": args.journal,
            "campaign": args.campaign,
            "key": args.key,
            "dry_run": args.dry_run,
            "concurrency": args.concurrency,
            "rate": args.rate,
            "message_rate": args.message_rate,
            "send_at": args.send_at,
            "window": _window(args.window),
            "group": args.group,
            "progress": not args.no_progress,
            "allow_partial": args.allow_partial,
            "resend_unknown": args.resend_unknown,
            "method": args.method,
            "max_phones": args.max_phones,
            "long_text": args.long_text,
            "dedupe": None if args.dedupe == "none" else args.dedupe,
            "transliterate": args.transliterate,
        }
        if args.suppress:
            options["suppress"] = read_table(Path(args.suppress))
        results = send(df, client=client, **options)
    except MassivaError as exc:
        partial = getattr(exc, "results", None)
        if partial is not None:  # stopped mid-run: what was sent is still worth keeping
            write_table(partial, out)
            print_summary(partial, out=out)
        return fail("send", exc)
    except _FAILURE_ERRORS as exc:
        return fail("send", exc)
    finally:
        if client is not None:
            client.close()
    try:
        write_table(results, out)
    except _FAILURE_ERRORS as exc:
        return fail("send", exc)
    print_summary(results, out=out)
    return exit_code(results, dry_run=args.dry_run)
