"""Scenario ``sender``: the send run as a subprocess (``chaos.py --worker send``), SIGKILLed at
random moments and restarted on the same journal until it finishes.
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
from .harness import (
    USUARIO,
)
from .scanning import PASSWORD

__all__ = ["ENTRY", "scenario_killed_sender", "worker_send"]

#: the command whose ``--worker send`` is the subprocess killed
ENTRY = Path(__file__).resolve().parents[1] / "chaos.py"


def worker_send(args: argparse.Namespace) -> int:
    """The killed-sender subprocess: one ``send`` on a journal; exit 0 or 3 when done."""
    import pandas as pd

    from massiva_frames.sending.campaign import send
    from massiva_frames.wire.client import MassivaClient

    df = pd.read_parquet(args.input)
    with MassivaClient(base_url=args.base_url, timeout=(1.0, 10.0)) as client:
        print("ready", flush=True)
        results = send(
            df, client=client, text="mensaje", phone="telefono", journal=args.journal,
            progress=False, concurrency=2, max_phones=args.max_phones,
        )  # fmt: skip
    states = results["state"].astype("string").value_counts().to_dict()
    print(json.dumps(states), flush=True)
    return 0 if set(states) == {"accepted"} else 3


def scenario_killed_sender(sizes: Sizes, workdir: Path, *, seed: int = 0) -> Figures:
    """The send run as a subprocess on a journal, SIGKILLed ``sizes.sender_kills`` times
    at random moments (seeded) and restarted until it exits 0 or 3.

    The sandbox (in this process) adds latency to every request so kills land while
    requests are in flight, as well as between them.
    """
    from massiva_frames.sandbox import sandbox
    from massiva_frames.sending.campaign import results_from_journal

    fig = Figures("killed sender", crashes=0)
    start = time.perf_counter()
    rng = random.Random(seed)
    df = campaign(sizes.sender_rows, seed=seed)
    data = workdir / "sender-input.parquet"
    df.to_parquet(data)
    journal = workdir / "sender.db"
    max_phones = 25
    log = open(workdir / "sender.log", "ab")  # noqa: SIM115
    kills = starts = 0
    exit_codes: list[int] = []
    with sandbox(usuario=USUARIO, clave=PASSWORD, credits=10**7, seed=seed) as sb:
        sb.inject("latency", ratio=1.0, seconds=0.1)
        cmd = [
            sys.executable, str(ENTRY), "--worker", "send",
            "--input", str(data), "--journal", str(journal), "--base-url", sb.base_url,
            "--max-phones", str(max_phones),
        ]  # fmt: skip
        env = {**os.environ, "MASSIVA_USUARIO": USUARIO, "MASSIVA_CLAVE": PASSWORD}
        try:
            while starts < sizes.sender_kills + 10:
                proc = subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=log, env=env, cwd=workdir
                )
                starts += 1
                assert proc.stdout is not None
                ready = proc.stdout.readline().strip() == b"ready"
                if ready and kills < sizes.sender_kills:
                    try:
                        proc.wait(rng.uniform(0.05, 0.95))
                    except subprocess.TimeoutExpired:
                        proc.send_signal(signal.SIGKILL)
                        kills += 1
                code = proc.wait(300)
                proc.stdout.close()
                exit_codes.append(code)
                if code in (0, 3):  # the send is over (3: some rows unknown)
                    break
        finally:
            log.close()
        results = results_from_journal(journal)
        send_figures(fig, df, results, sb.messages())
    fig.evidence.update(kills=kills, starts=starts)
    fig.notes.insert(
        0, f"{kills} SIGKILLs over {starts} starts; exit codes {exit_codes[-3:]} at the end"
    )
    if exit_codes[-1] not in (0, 3):
        fig.crashes = 1
        fig.problem(f"the last run exited {exit_codes[-1]} (see sender.log)")
    fig.seconds = time.perf_counter() - start
    return fig
