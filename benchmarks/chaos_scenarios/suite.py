"""The suite's command: the scenarios by name, each run in a temporary directory, and the
command line of ``benchmarks/chaos.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from .bad_frames import fuzz_frames
from .bad_queries import fuzz_queries
from .bad_xml import fuzz_xml
from .figures import FULL, QUICK, Figures, Sizes, format_table
from .hardening import (
    scenario_full_disk,
    scenario_journal_fuzz,
    scenario_receiver_flood,
    scenario_trickling_provider,
)
from .harness import describe
from .leaks import scenario_secrets
from .postgres import scenario_postgres, worker_dispatch
from .provider import scenario_faulty_provider
from .receiver import scenario_killed_receiver
from .receivers import scenario_shared_receivers
from .sender import scenario_killed_sender, worker_send
from .streaming import scenario_killed_stream, worker_stream

__all__ = ["DESCRIPTION", "SCENARIOS", "main", "run_scenarios"]

#: the first line of ``python benchmarks/chaos.py --help``
DESCRIPTION = (
    "Chaos suite: the reliability and security guarantees (docs/architecture.md) as figures."
)


def _input_figures(sizes: Sizes, workdir: Path, *, seed: int = 0) -> list[Figures]:
    """Scenario ``input``: hostile DataFrames, XML bodies and query strings."""
    t = sizes.example_timeout
    return [
        fuzz_frames(sizes.frame_examples, seed=seed, timeout=t),
        fuzz_xml(sizes.xml_examples, seed=seed, timeout=t),
        fuzz_queries(sizes.query_examples, workdir, seed=seed, timeout=t),
    ]


SCENARIOS: dict[str, Callable[..., Figures | list[Figures]]] = {
    "provider": scenario_faulty_provider,
    "sender": scenario_killed_sender,
    "streaming": scenario_killed_stream,
    "receiver": scenario_killed_receiver,
    "receivers": scenario_shared_receivers,
    "input": _input_figures,
    "secrets": scenario_secrets,
    "flood": scenario_receiver_flood,
    "trickle": scenario_trickling_provider,
    "journal": scenario_journal_fuzz,
    "disk": scenario_full_disk,
    "postgres": scenario_postgres,
}


def run_scenarios(
    names: Sequence[str], sizes: Sizes, *, seed: int = 0, echo: bool = False
) -> list[Figures]:
    """Run the named scenarios, each in its own temporary directory."""
    figures: list[Figures] = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"chaos-{name}-") as tmp:
            try:
                out = SCENARIOS[name](sizes, Path(tmp), seed=seed)
            except Exception as exc:  # a scenario that cannot finish is a crash
                out = Figures(name, crashes=1)
                out.problem(f"the scenario stopped: {describe(exc)}")
                if echo:
                    traceback.print_exc()
        new = out if isinstance(out, list) else [out]
        figures += new
        if echo:
            for f in new:
                print(f"... {f.scenario}: {f.seconds:.1f} s", file=sys.stderr, flush=True)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chaos suite and print its table; 1 if a must-be-zero figure is not 0."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument(
        "--scenario", action="append", choices=sorted(SCENARIOS), help="repeatable (all)"
    )
    parser.add_argument("--quick", action="store_true", help="the bounded sizes of the tests")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (0)")
    parser.add_argument("--worker", choices=["send", "dispatch", "stream"], help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--journal", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--max-phones", type=int, default=25, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--chunk-rows", type=int, default=100_000, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "send":
        return worker_send(args)
    if args.worker == "dispatch":
        return worker_dispatch(args)
    if args.worker == "stream":
        return worker_stream(args)
    names = args.scenario or list(SCENARIOS)
    sizes = QUICK if args.quick else FULL
    start = time.perf_counter()
    figures = run_scenarios(names, sizes, seed=args.seed, echo=True)
    print(format_table(figures))
    failing = [f"{f.scenario}: {', '.join(f.failing())}" for f in figures if f.failing()]
    print(f"total {time.perf_counter() - start:.1f} s; must-be-zero figures not 0: "
          f"{'; '.join(failing) or 'none'}")  # fmt: skip
    return 1 if failing else 0
