"""Scenario ``streaming``: a streamed send (``send_stream`` of a parquet dataset) run as a
subprocess (``chaos.py --worker stream``), SIGKILLed while it sends and restarted on the
same journal and results directory until it finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from .campaigns import campaign, send_figures
from .figures import Figures, Sizes
from .harness import USUARIO
from .scanning import PASSWORD

__all__ = ["ENTRY", "scenario_killed_stream", "worker_stream"]

#: the command whose ``--worker stream`` is the subprocess killed
ENTRY = Path(__file__).resolve().parents[1] / "chaos.py"
#: files the campaign is written as (a parquet directory)
FILES = 4


def worker_stream(args: argparse.Namespace) -> int:
    """The killed subprocess: one ``send_stream``; exit 0 (all accepted) or 3 when done."""
    from massiva_frames.sending.streaming import send_stream
    from massiva_frames.wire.client import MassivaClient

    with MassivaClient(base_url=args.base_url, timeout=(1.0, 10.0)) as client:
        print("ready", flush=True)
        summary = send_stream(
            args.input, out=args.out, chunk_rows=args.chunk_rows, client=client,
            text="mensaje", phone="telefono", journal=args.journal, progress=False,
            concurrency=2, max_phones=args.max_phones,
        )  # fmt: skip
    print(json.dumps(summary.states), flush=True)
    return 0 if set(summary.states) == {"accepted"} else 3


def scenario_killed_stream(sizes: Sizes, workdir: Path, *, seed: int = 0) -> Figures:
    """A streamed send of ``sizes.streaming_rows`` rows (``sizes.streaming_chunk_rows`` a
    chunk) SIGKILLed ``sizes.streaming_kills`` times and restarted until it exits 0 or 3.

    Each kill lands while messages go out: the sandbox's credits must have moved since
    the start, then a random (seeded) moment up to ``sizes.streaming_kill_window``
    seconds later (half a second; a tenth at the quick sizes). The sandbox adds
    latency to every request so kills also land while requests are in flight. The check
    is the sender's: the results dataset against the sandbox's record (0 lost, 0 sent
    twice).
    """
    import pandas as pd

    from massiva_frames.sandbox import sandbox

    fig = Figures("killed stream", crashes=0)
    start = time.perf_counter()
    rng = random.Random(seed)
    df = campaign(sizes.streaming_rows, seed=seed).reset_index(drop=True)
    data = workdir / "audience"
    data.mkdir()
    step = -(-len(df) // FILES)
    for i in range(FILES):
        df.iloc[i * step : (i + 1) * step].to_parquet(data / f"part-{i}.parquet")
    journal, out = workdir / "stream.db", workdir / "results"
    credits = 10**8
    log = open(workdir / "stream.log", "ab")  # noqa: SIM115
    kills = starts = 0
    exit_codes: list[int] = []
    with sandbox(usuario=USUARIO, clave=PASSWORD, credits=credits, seed=seed) as sb:
        sb.inject("latency", ratio=1.0, seconds=0.02)
        cmd = [
            sys.executable, str(ENTRY), "--worker", "stream", "--input", str(data),
            "--journal", str(journal), "--out", str(out), "--base-url", sb.base_url,
            "--max-phones", "100", "--chunk-rows", str(sizes.streaming_chunk_rows),
        ]  # fmt: skip
        env = {**os.environ, "MASSIVA_USUARIO": USUARIO, "MASSIVA_CLAVE": PASSWORD}
        try:
            while starts < sizes.streaming_kills + 10:
                proc = subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=log, env=env, cwd=workdir
                )
                starts += 1
                assert proc.stdout is not None
                ready = proc.stdout.readline().strip() == b"ready"
                if ready and kills < sizes.streaming_kills:
                    if _sending(proc, sb, timeout=600):
                        time.sleep(rng.uniform(0.0, sizes.streaming_kill_window))
                        if proc.poll() is None:
                            proc.send_signal(signal.SIGKILL)
                            kills += 1
                code = proc.wait(1800)
                proc.stdout.close()
                exit_codes.append(code)
                if code in (0, 3):  # the send is over (3: some rows not accepted)
                    break
        finally:
            log.close()
        results = pd.read_parquet(out)
        send_figures(fig, df, results, sb.messages())
    parts = len(list(out.glob("part-*.parquet")))
    chunks = -(-len(df) // sizes.streaming_chunk_rows)
    fig.evidence.update(kills=kills, starts=starts, parts=parts)
    if parts != chunks:
        fig.crashes = (fig.crashes or 0) + 1
        fig.problem(f"{parts} results parts for {chunks} chunks")
    fig.notes.insert(
        0,
        f"{kills} SIGKILLs over {starts} starts, each while sending; {parts} results parts; "
        f"exit codes {exit_codes[-3:]} at the end",
    )
    if exit_codes[-1] not in (0, 3):
        fig.crashes = (fig.crashes or 0) + 1
        fig.problem(f"the last run exited {exit_codes[-1]} (see stream.log)")
    fig.seconds = time.perf_counter() - start
    return fig


def _sending(proc: subprocess.Popen[bytes], sb: object, *, timeout: float) -> bool:
    """Wait (bounded) until the sandbox's credits move, i.e. messages are going out; False
    when the process ended first."""
    credits = sb.credits  # type: ignore[attr-defined]
    before = credits()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if credits() != before:
            return True
        time.sleep(0.01)
    return False
