"""``massiva-frames credits``: print the SMS credits left to the account (docs/protocol.md §4).

Credentials come from ``MASSIVA_USUARIO`` and ``MASSIVA_CLAVE`` (never from the command
line, where other users could read them in the process list); the base URL from
``--base-url``, else ``MASSIVA_BASE_URL``, else the provider's.
"""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "run"]

HELP = (
    "Print the SMS credits left to the account. Credentials come from the "
    "MASSIVA_USUARIO and MASSIVA_CLAVE environment variables."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``credits`` options to ``parser``."""
    parser.add_argument(
        "--base-url",
        default=None,
        help="API base URL (default: $MASSIVA_BASE_URL, else the provider's)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the answer (30)"
    )


def run(args: argparse.Namespace) -> int:
    """Print the credits; on failure a one-line error on stderr and exit code 1.

    Examples
    --------
    >>> run(argparse.Namespace(base_url=sb.base_url, timeout=5))  # doctest: +SKIP
    1000
    0
    """
    from ...errors import MassivaError
    from ...wire.client import MassivaClient
    from ..cli import EXIT_OK, error

    try:
        with MassivaClient(
            base_url=args.base_url, timeout=(min(3.05, args.timeout), args.timeout)
        ) as client:
            print(client.credits())
    except MassivaError as exc:
        # Messages are built from masked values: safe to show, one line, no traceback.
        return error("credits", exc)
    return EXIT_OK
