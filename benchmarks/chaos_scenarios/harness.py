"""The tools the scenarios share: free ports, raw HTTP exchanges, the package's CLI as a
subprocess, a watchdog that tells a hang from an answer, hypothesis settings, quiet loggers
and one-line descriptions of exceptions.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "USUARIO",
    "Watchdog",
    "describe",
    "free_port",
    "hypothesis_settings",
    "quiet",
    "raw_exchange",
    "run_cli",
]


#: the account every scenario's sandbox and client use
USUARIO = "chaos@massiva.test"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (nothing listens on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Watchdog:
    """Runs calls in a worker thread under a deadline; a call past it is a hang.

    A hung worker cannot be killed: it is abandoned (daemon) and a new one takes over.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chaos-watch")

    def call(self, fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
        """``("ok", value)``, ``("error", exception)`` or ``("hang", None)``."""
        future = self._pool.submit(fn, *args)
        try:
            return "ok", future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chaos-watch")
            return "hang", None
        except Exception as exc:
            return "error", exc

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def hypothesis_settings(examples: int, seed: int) -> Callable[[Any], Any]:
    """max_examples, no deadline (hangs have their own watchdog), no database, no shrink:
    the functions record failures instead of raising, so every example runs."""
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis import seed as hseed

    def apply(fn: Any) -> Any:
        fn = settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=(Phase.explicit, Phase.generate),
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )(fn)
        return hseed(seed)(fn)

    return apply


@contextlib.contextmanager
def quiet(*names: str) -> Iterator[None]:
    """Silence loggers that report every refused request (thousands, by design)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def describe(exc: BaseException) -> str:
    """The exception, where it was raised, and the package's last frame on the way."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    ours = [f for f in frames if "massiva_frames" in f.filename]
    if ours and ours[-1] is not frames[-1]:
        f = ours[-1]
        where += f" from massiva_frames/{f.filename.split('massiva_frames/')[-1]}:{f.lineno}"
    return f"{type(exc).__name__}: {str(exc)[:200]}{where}"


def raw_exchange(port: int, request: bytes, timeout: float) -> tuple[int | None, bytes]:
    """Send raw bytes, half-close, read to EOF; returns (status or None, response)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(request)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        else:
            raise TimeoutError("no end of the response")
    data = b"".join(chunks)
    first = data.split(b"\r\n", 1)[0].split(b" ")
    if len(first) >= 2 and first[0].startswith(b"HTTP/") and first[1].isdigit():
        return int(first[1]), data
    return None, data


def run_cli(args: Sequence[str], env: dict[str, str], timeout: float = 120) -> str:
    """``massiva-frames ARGS`` as a subprocess in ``env`` (``CHAOS_CWD``: its folder);
    returns its exit code and everything it printed."""
    proc = subprocess.run(
        [sys.executable, "-m", "massiva_frames.faces.cli", *args],
        capture_output=True,
        env=env,
        timeout=timeout,
        cwd=env.get("CHAOS_CWD"),
    )
    # Only what the program printed: the arguments are the caller's (some hold the
    # password on purpose, to see that the program does not repeat it).
    return (
        f"exit {proc.returncode}\n"
        + proc.stdout.decode("utf-8", "replace")
        + proc.stderr.decode("utf-8", "replace")
    )
