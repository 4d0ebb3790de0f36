"""``massiva-frames validate``: check a CSV/parquet file of phones and texts.

Prints the counts by reason, optionally writes the validated frame, and says through its
exit code whether every row is ready to send (0) or some are invalid or suppressed (3).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["HELP", "add_arguments", "run"]

HELP = (
    "Validate the phones and texts of a CSV or parquet file: normalise every phone to the "
    "API's 12 digits, fill the template, check lengths, separators and encodings, print "
    "the counts by reason and write the validated rows. Exit code 0 when every row is "
    "ready to send, 3 when some are invalid or suppressed."
)

_READERS = (".csv", ".parquet", ".pq")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``massiva-frames validate``."""
    parser.add_argument("input", metavar="INPUT", help="the rows to check (.csv or .parquet)")
    parser.add_argument("--phone", required=True, metavar="COL", help="the phone column")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", metavar="COL", help="the column with each row's text")
    source.add_argument(
        "--template",
        metavar="STR",
        help='a template filled from columns, e.g. "Hola {nombre}, su saldo es {saldo:,.2f}"',
    )
    parser.add_argument(
        "--out", metavar="FILE", help="write the validated rows here (.parquet or .csv)"
    )
    parser.add_argument(
        "--country", default="58", help="calling code of numbers without +/00 (default: 58)"
    )
    parser.add_argument(
        "--operators",
        metavar="CODES",
        help="comma-separated mobile operator codes (default: 412,414,416,424,426)",
    )
    parser.add_argument(
        "--long-text",
        choices=("error", "truncate", "split"),
        default="error",
        help="texts over 160 characters: invalid (default), truncated, or split",
    )
    parser.add_argument(
        "--transliterate",
        action="store_true",
        help="map characters GSM-7 lacks to their nearest letter (á->a)",
    )
    parser.add_argument(
        "--dedupe",
        choices=("phone+text", "phone", "none"),
        default="phone+text",
        help="which repeated rows are suppressed (default: phone+text)",
    )
    parser.add_argument(
        "--suppress",
        metavar="FILE",
        help="opt-out list: a parquet file with a 'phone' column, or a CSV of phones",
    )
    parser.add_argument(
        "--no-international",
        action="store_true",
        help="reject numbers of other countries",
    )
    parser.add_argument(
        "--failures",
        type=int,
        default=10,
        metavar="N",
        help="also print the first N failure cases (default: 10; 0 for none)",
    )


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def _read(path: Path, phone: str) -> pd.DataFrame:
    import pandas as pd

    if _suffix(path) == ".csv":
        # Phones stay text: a CSV reader must not turn 04141234567 into 4141234567.0.
        return pd.read_csv(path, dtype={phone: str}, keep_default_na=True)
    return pd.read_parquet(path)


def _read_suppress(path: Path) -> Any:
    import pandas as pd

    if _suffix(path) == ".csv":
        table = pd.read_csv(path, dtype=str)
        return table["phone"] if "phone" in table.columns else table.iloc[:, 0]
    return str(path)


def _write(frame: pd.DataFrame, path: Path) -> None:
    if _suffix(path) == ".csv":
        frame.to_csv(path)
    else:
        frame.to_parquet(path)


def run(args: argparse.Namespace) -> int:
    """Validate the file; print the summary; 0 all ready, 3 some not, 1 error, 2 usage."""
    from ..cli import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE

    source = Path(args.input)
    for path, what in ((source, "INPUT"), (Path(args.out) if args.out else None, "--out")):
        if path is not None and _suffix(path) not in _READERS:
            print(
                f"massiva-frames validate: {what} must end in .csv or .parquet: {path}",
                file=sys.stderr,
            )
            return EXIT_USAGE
    if args.failures < 0:
        print("massiva-frames validate: --failures must be 0 or more", file=sys.stderr)
        return EXIT_USAGE

    import pandas as pd

    from ...errors import MassivaError
    from ...prepare.validation import failure_cases, validate, validation_summary

    try:
        frame = _read(source, args.phone)
        options: dict[str, Any] = {
            "phone": args.phone,
            "country": args.country,
            "long_text": args.long_text,
            "transliterate": args.transliterate,
            "dedupe": None if args.dedupe == "none" else args.dedupe,
            "allow_international": not args.no_international,
        }
        if args.text is not None:
            options["text"] = args.text
        else:
            options["template"] = args.template
        if args.operators:
            options["operators"] = [op.strip() for op in args.operators.split(",") if op.strip()]
        if args.suppress:
            options["suppress"] = _read_suppress(Path(args.suppress))
        validated = validate(frame, **options)
        if args.out:
            _write(validated, Path(args.out))
    except (MassivaError, OSError, ValueError, KeyError, pd.errors.ParserError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"massiva-frames validate: {message}", file=sys.stderr)
        return EXIT_FAILURE

    summary = validation_summary(validated)
    summary["reason"] = summary["reason"].fillna("-")
    print(summary.to_string(index=False))
    ready = int(validated["valid"].sum())
    print(f"\n{ready} of {len(validated)} rows ready to send")
    if ready < len(validated) and args.failures:
        cases = failure_cases(validated).head(args.failures)
        print(f"\nfirst {len(cases)} failure cases:")
        print(cases.to_string(index=False))
    if args.out:
        print(f"wrote {len(validated)} rows to {args.out}")
    return EXIT_OK if ready == len(validated) else EXIT_PARTIAL
