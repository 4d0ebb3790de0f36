"""Messages/s of ``send`` against the provider's documented pattern done naively.

The sandbox runs in its own process (waitress, 16 threads) so client and server do not
share a GIL. In the same run:

- **send**: ``send()`` of N personalised rows (every text distinct, so requests carry
  paired texts), 4 threads over one pooled session; wall time includes validation,
  planning, journalling and the results frame. Twice per round: with a journal file
  (``journal=PATH``: every request committed to disk before and after, fsync on) and
  without one (the default: the same journal, kept in memory). Median of the rounds.
- **send on PostgreSQL**: the same ``send()`` with ``journal="postgresql://..."``, a
  journal several workers could share, on a throwaway cluster started for the run
  (``tests/pg_server.py``: Debian's server binaries, fsync on), a fresh schema each
  round; reported beside the SQLite journal file (target >= half its messages/s).
  Skipped, with the reason, where PostgreSQL is not installed.
- **requests alone**: the same batches, planned beforehand, sent on 4 threads over one
  client with nothing around them (no validation, journal or results): the ceiling of
  send() with this client and server, measured on other phones each round.
- **naive**: the provider's PHP sample done per phone: one POST per phone, a new
  connection each (``requests.post`` without a session), one after the other. Measured
  on S phones per round (alternating with the send) and extrapolated to N.

Printed: messages/s of both, their ratios to the naive pattern (target >= 100x) and to
the requests alone (target >= 60%), the requests used against the minimum any plan
could use (``batching.minimum_requests``), and this process's CPU seconds beside the wall
clock (a send whose CPU time matches its wall time is bound by the client's CPU).

    python benchmarks/bench_send.py [--rows 50000] [--naive-sample 2000] [--rounds 5]
                                    [--no-postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import requests

__all__ = ["main"]

SERVER = """
import logging, signal, sys, threading
from massiva_frames.sandbox import Sandbox
logging.getLogger("waitress.queue").setLevel(logging.ERROR)
sb = Sandbox(credits=int(sys.argv[1]), callback_delay=3600)
sb.start()
print(sb.base_url, flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
stop.wait()
sb.stop()
"""

USER, PASSWORD = "demo@massiva.test", "demo"
OPERATORS = ("412", "414", "416", "424", "426")


def campaign(n: int, offset: int = 0) -> pd.DataFrame:
    """N customers with distinct phones, written the way spreadsheets hold them."""
    i = pd.RangeIndex(offset, offset + n)
    return pd.DataFrame(
        {
            "telefono": [f"0{OPERATORS[k % 5]}-{1000000 + k:07d}" for k in i],
            "nombre": [f"Cliente {k}" for k in i],
            "codigo": [f"{(k * 7919) % 1000000:06d}" for k in i],
        }
    )


TEMPLATE = "Hola {nombre}, tu codigo es {codigo}"


@contextlib.contextmanager
def postgres_cluster(wanted: bool) -> Iterator[Any]:
    """A throwaway PostgreSQL cluster (``tests/pg_server.py``), or None with the reason
    printed when it cannot run here."""
    if not wanted:
        yield None
        return
    tests = Path(__file__).resolve().parents[1] / "tests"
    sys.path.insert(0, str(tests))
    import pg_server

    if not pg_server.available():
        print(f"PostgreSQL journal: skipped ({pg_server.INSTALL})")
        yield None
        return
    cluster = pg_server.Cluster()
    try:
        yield cluster
    finally:
        cluster.close()


def run_send(
    base_url: str, df: pd.DataFrame, journal: Path | str | None, campaign_name: str
) -> dict[str, float]:
    from massiva_frames.sending.campaign import send
    from massiva_frames.wire.client import MassivaClient

    with MassivaClient(USER, PASSWORD, base_url) as client:
        started, cpu = time.perf_counter(), time.process_time()
        results = send(
            df,
            client=client,
            phone="telefono",
            template=TEMPLATE,
            journal=journal,
            campaign=campaign_name,
            progress=False,
        )
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    accepted = int((results["state"] == "accepted").sum())
    if accepted != len(df):
        raise RuntimeError(f"only {accepted} of {len(df)} rows accepted")
    figures = results.attrs["send"]
    return {
        "seconds": elapsed,
        "cpu": cpu,
        "rate": accepted / elapsed,
        "requests": figures["requests"],
        "http_seconds": figures["seconds"],
    }


def run_naive(base_url: str, df: pd.DataFrame) -> dict[str, float]:
    """One request per phone, a new connection each: the PHP sample, one curl per phone."""
    from massiva_frames.prepare.validation import validate

    checked = validate(df, phone="telefono", template=TEMPLATE)
    pairs = list(zip(checked["phone"], checked["text"], strict=True))
    url = f"{base_url}/SendSms"
    started = time.perf_counter()
    for phone, text in pairs:
        answer = requests.post(
            url,
            data={"usuario": USER, "clave": PASSWORD, "telefonos": phone, "texto": text},
            timeout=30,
        )
        if b"<status>1</status>" not in answer.content:
            raise RuntimeError(f"naive send refused: {answer.text[:200]}")
    elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "rate": len(pairs) / elapsed}


def run_requests_only(base_url: str, df: pd.DataFrame) -> dict[str, float]:
    """The same requests with nothing around them: send()'s ceiling with this client.

    Validated and planned beforehand (not timed); then the batches go out on 4 threads
    over one client, as send() sends them, with no journal and no results frame.
    """
    from concurrent.futures import ThreadPoolExecutor

    from massiva_frames.prepare.batching import iter_batches, plan_batches
    from massiva_frames.prepare.validation import validate
    from massiva_frames.wire.client import MassivaClient

    planned = plan_batches(validate(df, phone="telefono", template=TEMPLATE), method="POST")
    batches = [(list(b.phones), list(b.texts)) for b in iter_batches(planned)]
    with MassivaClient(USER, PASSWORD, base_url) as client, ThreadPoolExecutor(4) as pool:
        started, cpu = time.perf_counter(), time.process_time()
        answers = list(pool.map(lambda b: client.send_batch(*b), batches))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    sent = sum(a.accepted_count for a in answers)
    if sent != len(df):
        raise RuntimeError(f"only {sent} of {len(df)} messages accepted")
    return {"seconds": elapsed, "cpu": cpu, "rate": sent / elapsed}


def minimum(df: pd.DataFrame) -> int:
    from massiva_frames.prepare.lower_bound import minimum_requests
    from massiva_frames.prepare.validation import validate

    return minimum_requests(validate(df, phone="telefono", template=TEMPLATE), method="POST")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--naive-sample", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL journal")
    args = parser.parse_args(argv)

    credits = (4 * args.rows + args.naive_sample) * args.rounds + 10
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(credits)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        if not base_url.startswith("http"):
            raise RuntimeError("the sandbox did not start")
        df = campaign(args.rows)
        ours, naive, memory, bare, shared = [], [], [], [], []
        with tempfile.TemporaryDirectory() as tmp, postgres_cluster(not args.no_postgres) as pg:
            # Alternate them in each round so a noisy neighbour hits all alike.
            for r in range(args.rounds):
                ours.append(run_send(base_url, df, Path(tmp) / f"j{r}.db", f"bench-{r}"))
                if pg is not None:
                    shared.append(run_send(base_url, df, pg.url(f"bench{r}"), f"pg-{r}"))
                memory.append(run_send(base_url, df, None, f"memory-{r}"))
                others = campaign(args.rows, offset=1_000_000 * (r + 1))  # other phones
                bare.append(run_requests_only(base_url, others))
                offset = args.rows + r * args.naive_sample
                naive.append(run_naive(base_url, campaign(args.naive_sample, offset=offset)))
        floor = minimum(df)
    finally:
        server.terminate()
        server.wait(30)

    def median(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    naive_rate = median(naive, "rate")
    floor_line = f"{int(median(ours, 'requests')):,} requests (minimum possible: {floor:,})"
    print(f"send(): {args.rows:,} personalised rows, 4 threads, POST, median of {args.rounds}")
    for label, runs in (("with a journal file", ours), ("without (the default)", memory)):
        rate, seconds = median(runs, "rate"), median(runs, "seconds")
        loop = median(runs, "http_seconds")
        ratios = ", ".join(
            f"{r['rate'] / n['rate']:.1f}x" for r, n in zip(runs, naive, strict=True)
        )
        print(
            f"  {label}: {seconds:.2f} s end to end ({loop:.2f} s in the request loop), "
            f"{rate:,.0f} messages/s = {rate / naive_rate:,.1f}x naive (per round: {ratios})"
        )
    if shared:
        rate, seconds = median(shared, "rate"), median(shared, "seconds")
        loop = median(shared, "http_seconds")
        ratios = ", ".join(
            f"{p['rate'] / s['rate']:.2f}" for p, s in zip(shared, ours, strict=True)
        )
        print(
            f"  with a PostgreSQL journal (shared by workers; fsync on): {seconds:.2f} s end "
            f"to end ({loop:.2f} s in the request loop), {rate:,.0f} messages/s = "
            f"{rate / median(ours, 'rate'):.2f}x the SQLite journal file's (target >= 0.5; "
            f"per round: {ratios})"
        )
    print(f"  {floor_line}")
    bare_rate = median(bare, "rate")
    print(
        f"  the same requests alone (planned beforehand; no validation, journal or results "
        f"frame): {bare_rate:,.0f} messages/s = {bare_rate / naive_rate:,.1f}x naive"
    )
    print(
        f"naive: one POST per phone, new connection each, sequential; "
        f"{args.naive_sample:,} phones per round, extrapolated to {args.rows:,}: "
        f"{naive_rate:,.0f} messages/s -> {args.rows / naive_rate:,.0f} s and "
        f"{args.rows:,} requests"
    )
    for label, runs in (("with a journal file", ours), ("without", memory)):
        rate = median(runs, "rate")
        print(
            f"ratios {label} (targets >= 100x naive, >= 60% of the requests alone): "
            f"{rate / naive_rate:,.1f}x naive, {rate / bare_rate:.0%} of the requests alone"
        )
    # Where the time goes: this process's CPU seconds (all threads) beside the wall clock.
    # A send whose CPU matches its wall time is bound by this process, not by the sandbox.
    print(
        f"CPU of this process: send with a journal file {median(ours, 'cpu'):.2f} s "
        f"({median(ours, 'seconds'):.2f} s wall), without {median(memory, 'cpu'):.2f} s "
        f"({median(memory, 'seconds'):.2f} s wall), the requests alone {median(bare, 'cpu'):.2f} s "
        f"({median(bare, 'seconds'):.2f} s wall); {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
