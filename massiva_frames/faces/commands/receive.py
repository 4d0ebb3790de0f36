"""``massiva-frames receive``: serve the callback receiver until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import os

__all__ = ["HELP", "add_arguments", "run"]

HELP = (
    "Serve the callback receiver: status and inbound callbacks (GET or form POST on one "
    "path) are stored durably before the 200, then compacted into parquet under --dir."
)
# receiving.server's defaults, repeated: importing it would load waitress for every command.
DEFAULT_CONNECTION_LIMIT = 500
DEFAULT_REQUEST_TIMEOUT = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``massiva-frames receive``."""
    parser.add_argument("--dir", required=True, metavar="LOGDIR", help="log directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (0 = any free port)")
    parser.add_argument(
        "--token",
        default=os.environ.get("MASSIVA_RECEIVER_TOKEN"),
        metavar="SECRET",
        help="shared secret callbacks must carry as ?token= or X-Massiva-Token "
        "(default: $MASSIVA_RECEIVER_TOKEN)",
    )
    parser.add_argument("--path", default="/recepcionsms", help="callback path")
    parser.add_argument(
        "--threads",
        type=int,
        default=8,
        help="worker threads; they serve complete requests only (default: 8)",
    )
    parser.add_argument(
        "--connection-limit",
        type=int,
        default=DEFAULT_CONNECTION_LIMIT,
        metavar="N",
        help="open connections at most; at the limit the one that has waited longest for "
        "its request is closed to make room, so this bounds memory (~100 KiB each at "
        "worst) and file descriptors, not who is served (default: %(default)s)",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT,
        metavar="SECONDS",
        help="seconds a connection has to deliver each complete request, from its "
        "accept or its previous answer; idle and trickling connections are closed then "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--instance",
        metavar="NAME",
        help="this receiver's name when several serve one --dir behind a load balancer: "
        "its own journal (--dir/_journal/NAME.db), continued after a restart; a dead "
        "instance's journal is compacted by the others (default: a journal no running "
        "receiver holds, or a new one)",
    )
    parser.add_argument(
        "--compact-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds between compactions of the journal into parquet",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; a clean stop commits and compacts everything."""
    import logging
    import signal

    from ...errors import InputError
    from ...receiving.receiver import Receiver
    from ..cli import EXIT_OK, EXIT_USAGE, error

    if args.compact_interval <= 0 or args.threads < 1:
        return error("receive", "--compact-interval must be > 0 and --threads >= 1", EXIT_USAGE)
    if args.connection_limit < 1 or not args.request_timeout > 0:
        return error(
            "receive", "--connection-limit must be >= 1 and --request-timeout > 0", EXIT_USAGE
        )
    if not logging.getLogger().handlers:  # a program, not a library: show our warnings
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        # waitress warns "Task queue depth is N" for every request that waits for a thread:
        # normal under bursts of callbacks, noise in the service log.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    try:
        rc = Receiver(
            args.dir,
            host=args.host,
            port=args.port,
            token=args.token,
            path=args.path,
            threads=args.threads,
            compact_interval=args.compact_interval,
            connection_limit=args.connection_limit,
            request_timeout=args.request_timeout,
            instance=args.instance,
        )
    except (InputError, OSError) as exc:
        return error("receive", f"cannot start the receiver: {' '.join(str(exc).split())}")

    def _stop(signum: int, frame: object) -> None:
        rc.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    token_note = " (token required)" if args.token else ""
    print(f"receiving callbacks at {rc.base_url}{rc.app.path}{token_note}", flush=True)
    print(f"health: {rc.base_url}/health  logs: {rc.logdir}  instance: {rc.instance}", flush=True)
    rc.serve_forever()
    print("receiver stopped; every acknowledged callback is stored", flush=True)
    return EXIT_OK
