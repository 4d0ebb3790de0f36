"""``massiva-frames validate``: check a CSV, Excel or parquet file of phones and texts.

Prints the counts by reason and the first failure cases by file line, optionally writes
the validated rows (with their ``input_line``), and says through its exit code whether every
row can be sent (0) or some are invalid (3). Suppressed rows (duplicates, opt-outs) are
by design and do not make it 3.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..inputs import add_input_options

__all__ = ["HELP", "add_arguments", "add_validation_flags", "run", "validation_options"]

HELP = (
    "Validate the phones and texts of a CSV, Excel or parquet file: normalise every phone "
    "to the API's 12 digits, fill the template, check lengths, separators and encodings, "
    "print the counts by reason and the failure cases by file line, and write the "
    "validated rows. Exit code 0 when no row is invalid, 3 when some are."
)


def add_validation_flags(parser: argparse.ArgumentParser) -> None:
    """``--blank`` and ``--allow-international``/``--no-international`` (validate, send).

    Each is passed on only when given, so the validation's own default applies otherwise.
    """
    parser.add_argument(
        "--blank",
        choices=("keep", "missing"),
        default=None,
        help="empty text cells used by the template: a missing value (the row is invalid) "
        "or kept as an empty string (default: the validation's)",
    )
    international = parser.add_mutually_exclusive_group()
    international.add_argument(
        "--allow-international",
        dest="international",
        action="store_const",
        const=True,
        default=None,
        help="accept numbers of other countries (the provider documents Venezuelan mobiles)",
    )
    international.add_argument(
        "--no-international",
        dest="international",
        action="store_const",
        const=False,
        help="reject numbers of other countries",
    )


def validation_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments the validation flags ask for (only those given)."""
    options: dict[str, Any] = {}
    if getattr(args, "blank", None):
        options["blank"] = args.blank
    if getattr(args, "international", None) is not None:
        options["allow_international"] = args.international
    return options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``massiva-frames validate``."""
    parser.add_argument(
        "input", metavar="INPUT", help="the rows to check (.csv, .xlsx or .parquet)"
    )
    add_input_options(parser)
    parser.add_argument("--phone", required=True, metavar="COL", help="the phone column")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", metavar="COL", help="the column with each row's text")
    source.add_argument(
        "--template",
        metavar="STR",
        help='a template filled from columns, e.g. "Hola {nombre}, su saldo es {saldo:,.2f}"',
    )
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="write the validated rows here, with their file line (.parquet or .csv)",
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
        help="opt-out list: a CSV, Excel or parquet file (its 'phone' column, else its first)",
    )
    add_validation_flags(parser)
    parser.add_argument(
        "--failures",
        type=int,
        default=10,
        metavar="N",
        help="also print the first N failure cases, by file line (default: 10; 0 for none)",
    )


def run(args: argparse.Namespace) -> int:
    """Validate the file; print the summary; 0 none invalid, 3 some, 1 error, 2 usage."""
    from ..cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, error
    from ..inputs import input_problem
    from ..outputs import suffix_problem

    problem = suffix_problem(args.out, "--out")
    if problem is not None:
        return error("validate", problem, EXIT_USAGE)
    problem = input_problem(args.input)
    if problem is not None:
        return error("validate", problem, EXIT_USAGE)
    if args.failures < 0:
        return error("validate", "--failures must be 0 or more", EXIT_USAGE)

    from ...prepare.validation import failure_cases, validate, validation_summary
    from ..cli import failure_errors
    from ..inputs import note_input, read_input, read_phone_list, require_columns
    from ..outputs import check_output, write_table

    try:
        if args.out:
            check_output(args.out, "--out")
        loaded = read_input(args.input, encoding=args.encoding, sep=args.sep, sheet=args.sheet)
        note_input("validate", loaded)
        require_columns(loaded, {"--phone": args.phone, "--text": args.text})
        options: dict[str, Any] = {
            "phone": args.phone,
            "country": args.country,
            "long_text": args.long_text,
            "transliterate": args.transliterate,
            "dedupe": None if args.dedupe == "none" else args.dedupe,
            **validation_options(args),
        }
        if args.text is not None:
            options["text"] = args.text
        else:
            options["template"] = args.template
        if args.operators:
            options["operators"] = [op.strip() for op in args.operators.split(",") if op.strip()]
        if args.suppress:
            options["suppress"] = read_phone_list(args.suppress)
        validated = validate(loaded.frame, **options)
        if args.out:
            write_table(validated, args.out)
    except failure_errors() as exc:
        return error("validate", exc)

    summary = validation_summary(validated)
    summary["reason"] = summary["reason"].fillna("-")
    print(summary.to_string(index=False))
    ready = int(validated["valid"].sum())
    invalid = int((validated["state"] == "invalid").sum())
    print(f"\n{ready} of {len(validated)} rows ready to send")
    if ready < len(validated) and args.failures:
        cases = failure_cases(validated).head(args.failures).rename(columns={"index": "line"})
        print(f"\nfirst {len(cases)} failure cases (line = line of {loaded.path.name}):")
        print(cases.to_string(index=False))
    if args.out:
        print(f"wrote {len(validated)} rows to {args.out}")
    if invalid:
        print(f"needs a look (exit 3): {invalid} invalid")
        return EXIT_PARTIAL
    return EXIT_OK
