"""Benchmark: how long the command line takes to start, beside Python's and pandas' own.

Each case is a fresh subprocess, run ``--repeat`` times (default 7, median shown, with
the children's CPU time beside the wall clock). Cases:

- ``python -c pass`` and ``python -c "import pandas"``: the floors;
- ``massiva-frames --help`` (``python -m massiva_frames_cli --help``, the console script's
  entry point): no pandas, numpy, pyarrow or requests;
- ``python -m massiva_frames.faces.cli --help``: the same parser reached through
  ``import massiva_frames`` (pandas, for ``df.massiva``), as the console script started;
- ``massiva-frames validate`` of a 1,000-row CSV with a template: pandas is the floor.

One unmeasured run of each case comes first, so Python's bytecode caches are written
as an installed package has them (``PYTHONDONTWRITEBYTECODE`` is dropped for the
children). The ``modules`` column says which heavy libraries the case loaded.

    python benchmarks/bench_cold_start.py
    python benchmarks/bench_cold_start.py --repeat 15
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pandas", "numpy", "pyarrow", "requests", "lxml", "matplotlib", "phonenumbers")
TEMPLATE = "Hola {nombre}, su saldo es {saldo:,.2f}"
# printed by the child at exit: which heavy libraries it loaded
PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('loaded:' + ','.join("
    f"m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr))\n"
)


def write_csv(path: Path, rows: int) -> None:
    """``rows`` customers with phones in mixed formats, names and balances."""
    rng = random.Random(0)
    ops = ["412", "414", "416", "424", "426"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["cliente", "nombre", "telefono", "saldo"])
        for i in range(rows):
            number = f"{rng.choice(ops)}{rng.randrange(10_000_000):07d}"
            phone = rng.choice([f"0{number}", f"+58 {number}", f"58{number}", "0212 5551234"])
            saldo = "" if rng.random() < 0.05 else f"{rng.random() * 50_000:.2f}"
            out.writerow([f"C-{i:05d}", rng.choice(["Ana", "José", "María"]), phone, saldo])


def cases(csv_path: Path) -> dict[str, list[str]]:
    python = sys.executable
    cli = [
        python,
        "-c",
        PROBE + "import runpy; runpy.run_module('massiva_frames_cli', "
        "run_name='__main__', alter_sys=True)",
    ]
    return {
        "python -c pass": [python, "-c", PROBE],
        "python -c 'import pandas'": [python, "-c", PROBE + "import pandas"],
        "massiva-frames --help": [*cli, "--help"],
        # the package's own module: ``import massiva_frames`` first, pandas with it
        "python -m massiva_frames.faces.cli --help": [
            python,
            "-c",
            PROBE + "import runpy; runpy.run_module('massiva_frames.faces.cli', "
            "run_name='__main__', alter_sys=True)",
            "--help",
        ],
        "massiva-frames validate (1,000 rows)": [
            *cli,
            "validate",
            str(csv_path),
            "--phone",
            "telefono",
            "--template",
            TEMPLATE,
        ],
    }


def run_once(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system of the child) and the heavy modules loaded."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 3):  # validate exits 3 when some rows are invalid
        raise SystemExit(f"{cmd[-1]!r} failed ({done.returncode}):\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    loaded = [line for line in done.stderr.splitlines() if line.startswith("loaded:")]
    return wall, cpu, loaded[-1].removeprefix("loaded:") if loaded else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per case; median shown")
    parser.add_argument("--rows", type=int, default=1_000, help="rows of the CSV validated")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "campaign.csv"
        write_csv(csv_path, args.rows)
        todo = cases(csv_path)
        for cmd in todo.values():  # warm-up: bytecode caches, the disk cache
            run_once(cmd, env)
        timings: dict[str, list[tuple[float, float]]] = {name: [] for name in todo}
        loaded: dict[str, str] = {}
        for _ in range(args.repeat):  # alternate the cases so load drifts hit them all
            for name, cmd in todo.items():
                wall, cpu, loaded[name] = run_once(cmd, env)
                timings[name].append((wall, cpu))

    print(f"\nfresh subprocess per run, median of {args.repeat} runs")
    print(f"{'':44s} {'wall s':>7s} {'cpu s':>7s}  heavy modules loaded")
    for name, runs in timings.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{name:44s} {wall:>7.3f} {cpu:>7.3f}  {loaded[name] or '-'}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
