"""Mutation testing of the code that carries the guarantees: the score and the surviving mutants.

    pip install -e ".[mutation]"                        # mutmut 3, apart from the test extra
    python benchmarks/mutation.py --list                # the targets, their files and tests
    python benchmarks/mutation.py --module masking      # one target
    python benchmarks/mutation.py --module loop --budget 1800 --jobs 2

mutmut changes the code one small edit at a time (``<`` to ``<=``, ``True`` to ``False``,
a string to another, a call argument dropped ...) and runs the tests that reach the
changed function; a mutant that no test notices *survives*. A survivor is a place where
the code could be wrong without any test failing. Each target below is a guarantee
module with the test files that exercise it; the whole run happens in a copy of the
working tree in a temporary folder, so the tree itself is never modified.

The script prints, per target: mutants killed (a test failed), timed out (counted as
killed: the mutant hung the tests), survived, without tests (no selected test reaches the
function), not checked (the ``--budget`` ran out first); the score is killed and timed
out over all the mutants checked; then the diff of every survivor. Slow by nature (each
mutant reruns the tests that reach its function): not part of CI; ``--budget`` bounds a
run in seconds, and what it did not reach is reported as not checked.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

__all__ = ["TARGETS", "Target", "main", "read_results"]

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Target:
    """A guarantee module: the files to mutate, which of their functions, and its tests."""

    what: str
    files: tuple[str, ...]
    functions: tuple[str, ...]
    tests: tuple[str, ...]


TARGETS: dict[str, Target] = {
    "masking": Target(
        "the password never appears in a message, log or echoed page",
        ("massiva_frames/errors.py",),
        ("massiva_frames.errors.x__secret_forms*", "massiva_frames.errors.x_mask*"),
        (
            "tests/test_protocol.py",
            "tests/test_client.py",
            "tests/test_secret_locals.py",
            "tests/test_masking.py",
            "tests/test_mask_forms.py",
        ),
    ),
    "outcomes": Target(
        "an answer or error -> pending only if never sent, unknown if maybe sent",
        ("massiva_frames/sending/loop.py",),
        (
            "massiva_frames.sending.loop.x_outcomes*",
            "massiva_frames.sending.loop.x__same_phone*",
            "massiva_frames.sending.loop.x_short_error*",
        ),
        ("tests/test_send_outcomes.py", "tests/test_sending.py"),
    ),
    "loop": Target(
        "never sent twice: requests under way, interrupts, what is committed",
        ("massiva_frames/sending/loop.py",),
        ("massiva_frames.sending.loop.*",),
        ("tests/test_send_outcomes.py", "tests/test_sending.py"),
    ),
    "rows": Target(
        "the outbox: stable row keys, pending messages, results read back",
        ("massiva_frames/sending/rows.py",),
        ("massiva_frames.sending.rows.*",),
        ("tests/test_sending.py", "tests/test_journal.py"),
    ),
    "journal": Target(
        "the send journal: what was sent, what is pending, re-runs",
        ("massiva_frames/sending/journal/*.py",),
        ("massiva_frames.sending.journal.*",),
        ("tests/test_journal.py", "tests/test_sending.py"),
    ),
    "event_journal": Target(
        "the receiver's journal: 200 only once a callback is on disk",
        ("massiva_frames/receiving/event_journal.py",),
        ("massiva_frames.receiving.event_journal.*",),
        ("tests/test_receiver.py", "tests/test_store.py"),
    ),
    "store": Target(
        "the parquet store of callbacks: nothing acknowledged is lost",
        ("massiva_frames/receiving/store.py",),
        ("massiva_frames.receiving.store.*",),
        ("tests/test_store.py", "tests/test_receiver.py"),
    ),
}

# mutmut's exit codes per mutant (mutmut/stats.py)
STATUS = {
    1: "killed",
    3: "killed",
    0: "survived",
    5: "no tests",
    33: "no tests",
    2: "interrupted",
    34: "skipped",
    35: "suspicious",
    36: "timeout",
    -24: "timeout",
    24: "timeout",
    152: "timeout",
    255: "timeout",
    37: "caught by type check",
    -11: "segfault",
    -9: "segfault",
}
IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "mutants",
    "__pycache__",
    "*.egg-info",
    "build",
    "dist",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    ".pytest_cache",
    "test-artifacts",
    "massiva-demo",
    "htmlcov",
    ".coverage*",
)


def _config(target: Target, tests: list[str]) -> str:
    def toml_list(items: list[str] | tuple[str, ...]) -> str:
        return "[" + ", ".join(json.dumps(item) for item in items) + "]"

    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["massiva_frames"]\n'
        f"only_mutate = {toml_list(target.files)}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q"]\n'
        'also_copy = ["data", "benchmarks", "notebooks", "LICENSE", "README.md"]\n'
        "use_git_change_detection = false\n"
    )


def read_results(copy: Path, target: Target) -> dict[str, str]:
    """Mutant name -> status, for the target's functions, from mutmut's ``.meta`` files."""
    found: dict[str, str] = {}
    for meta in sorted((copy / "mutants").rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        for name, code in codes.items():
            if any(fnmatch(name, pattern) for pattern in target.functions):
                found[name] = "not checked" if code is None else STATUS.get(code, "suspicious")
    return found


def _show(copy: Path, env: dict[str, str], name: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", name],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return (done.stdout or done.stderr).strip()


def run_target(name: str, target: Target, *, budget: float, jobs: int, workdir: Path) -> int:
    """Mutate one target in a fresh copy of the tree; print the figures and the survivors.

    Returns
    -------
    int
        The number of survivors (mutants no test noticed, or that no test reaches).
    """
    copy = workdir / name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(ROOT, copy, ignore=IGNORE)
    tests = [test for test in target.tests if (ROOT / test).exists()]
    with (copy / "pyproject.toml").open("a", encoding="utf-8") as out:
        out.write(_config(target, tests))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("COVERAGE_", "MUTANT_")) and key != "PYTHONPATH"
    }
    # the tests' subprocesses (a CLI run, a killed worker) import the mutated copy too; the
    # folder must exist before Python starts, or its import machinery skips it for good
    (copy / "mutants").mkdir()
    env["PYTHONPATH"] = str(copy / "mutants")
    env["MPLBACKEND"] = "Agg"
    print(f"== {name}: {target.what}")
    print(f"   files: {', '.join(target.files)}; tests: {', '.join(tests)}")
    log_path = copy / "mutmut.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mutmut", "run", f"--max-children={jobs}", *target.functions],
            cwd=copy,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            print(f"   budget of {budget:.0f} s reached: stopping")
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
    seconds = time.monotonic() - started
    results = read_results(copy, target)
    if not results:
        tail = log_path.read_text(errors="replace").splitlines()[-30:]
        print("   mutmut produced no results; the end of its log:\n" + "\n".join(tail))
        return -1
    counts = Counter(results.values())
    detected = counts["killed"] + counts["timeout"] + counts["caught by type check"]
    checked = sum(n for status, n in counts.items() if status not in {"not checked", "skipped"})
    score = 100.0 * detected / checked if checked else 0.0
    print(
        f"   {len(results)} mutants in {seconds:.0f} s: "
        + ", ".join(f"{n} {status}" for status, n in counts.most_common())
    )
    print(f"   score: {score:.1f}% ({detected} of {checked} checked mutants detected)")
    survivors = sorted(m for m, status in results.items() if status in {"survived", "no tests"})
    for mutant in survivors:
        print(f"\n-- {results[mutant]}: {mutant}")
        print(_show(copy, env, mutant))
    print()
    return len(survivors)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen targets; exit 0 when no mutant survived."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--module", action="append", choices=sorted(TARGETS), help="a target (repeatable)"
    )
    parser.add_argument("--all", action="store_true", help="every target, one after the other")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument(
        "--budget", type=float, default=1800.0, help="seconds per target (default 1800)"
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="mutants at once")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "massiva-mutation",
        help="where the copies of the tree go (kept, to look at with `mutmut browse`)",
    )
    args = parser.parse_args(argv)
    if args.list:
        for name, target in TARGETS.items():
            print(
                f"{name:<14} {target.what}\n{'':<14} {', '.join(target.files)}"
                f"  <-  {', '.join(target.tests)}"
            )
        return 0
    names = sorted(TARGETS) if args.all else (args.module or [])
    if not names:
        parser.error("say which: --module NAME (repeatable), --all, or --list")
    if importlib.util.find_spec("mutmut") is None:
        print("mutmut is not installed here: pip install -e '.[mutation]'", file=sys.stderr)
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    survivors = 0
    for name in names:
        found = run_target(
            name, TARGETS[name], budget=args.budget, jobs=args.jobs, workdir=args.workdir
        )
        survivors += abs(found)
    return 0 if survivors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
