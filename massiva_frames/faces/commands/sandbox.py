"""``massiva-frames sandbox``: serve a local Massiva API sandbox until interrupted.

It prints the base URL and the test account's login and password (a local test
account: showing them is the point), then serves until Ctrl+C or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

__all__ = ["HELP", "add_arguments", "run"]

HELP = (
    "Serve a local server that behaves like the Massiva API (accounts, credits, "
    "status codes, delayed status callbacks, inbound messages) until interrupted."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``sandbox`` options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port, 0 = any free (8765)")
    parser.add_argument("--user", default="demo@massiva.test", help="account login")
    parser.add_argument("--password", default="demo", help="account password (demo)")
    parser.add_argument("--credits", type=int, default=1000, help="the user's credits (1000)")
    parser.add_argument(
        "--company-credits", type=int, default=None, help="the company's credits (no limit)"
    )
    parser.add_argument("--status-url", default=None, help="URL for final-status callbacks")
    parser.add_argument("--inbound-url", default=None, help="URL for inbound-SMS callbacks")
    parser.add_argument(
        "--callback-delay", type=float, default=0.5, help="seconds before dispatch (0.5)"
    )
    parser.add_argument("--fail-ratio", type=float, default=0.1, help="share that fails (0.1)")
    parser.add_argument(
        "--reply-ratio", type=float, default=0.0, help="share of delivered that reply (0)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; returns an exit code."""
    from ...errors import InputError
    from ...sandbox import Sandbox
    from ..cli import EXIT_OK, EXIT_USAGE, error

    try:
        sb = Sandbox(
            host=args.host,
            port=args.port,
            usuario=args.user,
            clave=args.password,
            credits=args.credits,
            company_credits=args.company_credits,
            status_url=args.status_url,
            inbound_url=args.inbound_url,
            callback_delay=args.callback_delay,
            fail_ratio=args.fail_ratio,
            reply_ratio=args.reply_ratio,
            seed=args.seed,
        )
    except InputError as exc:
        return error("sandbox", exc, EXIT_USAGE)
    try:
        sb.start()
    except OSError as exc:
        return error("sandbox", f"cannot listen on {args.host}:{args.port}: {exc}")

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"Massiva sandbox serving on {sb.base_url}", flush=True)
        print(f"  usuario:  {sb.usuario}")
        print(f"  clave:    {sb.clave}")
        print(f"  credits:  {sb.credits()}")
        print(f"  SendSms:      {sb.send_url}")
        print(f"  credit query: {sb.credit_url}")
        if sb.status_url:
            print(f"  status callbacks to:  {sb.status_url}")
        if sb.inbound_url:
            print(f"  inbound callbacks to: {sb.inbound_url}")
        print("Press Ctrl+C to stop.", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sb.stop()
    n_requests = len(sb.requests())
    print(f"Sandbox stopped: {n_requests} request(s), {len(sb.messages())} message(s).")
    return EXIT_OK
