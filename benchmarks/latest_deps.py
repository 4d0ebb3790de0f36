"""Do the newest releases of the dependencies still install and pass? Measured against the pins.

    python benchmarks/latest_deps.py                      # lint, types and a quick test subset
    python benchmarks/latest_deps.py --full               # the whole suite instead of the subset
    python benchmarks/latest_deps.py --write-constraints  # pin what this environment has

CI installs exactly the versions in ``.ci/constraints.txt`` (``pip install -c
.ci/constraints.txt -e ".[test,docs,postgres,spark,dask]"``: the extras are read from
``.ci/run``), so a new upstream release, whose deprecation warnings
``filterwarnings = error`` would turn into failures, cannot turn CI red by itself. This
script is how the pins are moved on purpose. It creates a temporary virtual environment,
installs the package with those extras and no constraints (the newest releases the ranges in
``pyproject.toml`` allow), lists every package whose version differs from its pin, and
runs what CI runs there: ``ruff check``, ``ruff format --check``, ``mypy`` and the tests
(a subset with one file per dependency, or ``--full``). It exits 0 only when everything
installed and passed; the temporary environment is removed at the end.

``--write-constraints`` rewrites ``.ci/constraints.txt`` from the environment running the
script: every distribution that the project's dependencies and CI's extras pull in
(markers evaluated for this interpreter), at its installed version, plus pip itself; the
project is not pinned. Run it where the suite passes, e.g. in the environment this script
just built (``--keep`` leaves it in place and prints its path).
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

__all__ = ["closure", "main", "read_pins", "write_constraints"]

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / ".ci" / "constraints.txt"
#: the Python of a bare Debian 12, which CI uses: every pin must install on it
CI_PYTHON = "3.11.2"

# One test file per dependency, chosen to run in a few minutes on 2 cores: lxml
# (protocol), phonenumbers (phones), pandas (validate, texts, batching), requests and
# urllib3 (client), pyarrow (store), waitress (receiver), duckdb and matplotlib
# (analytics), ipywidgets (widgets), the package's exports.
QUICK_TESTS = [
    "tests/test_exports.py",
    "tests/test_protocol.py",
    "tests/test_phones.py",
    "tests/test_validate.py",
    "tests/test_texts.py",
    "tests/test_batching.py",
    "tests/test_client.py",
    "tests/test_store.py",
    "tests/test_receiver.py",
    "tests/test_analytics.py",
    "tests/test_widgets.py",
]

HEADER = """\
# What CI installs: .ci/run runs `pip install -c .ci/constraints.txt -e ".[EXTRAS]"`, so
# every package below is installed at exactly this version, whatever was released since.
# The project's dependencies and those extras, with everything they pull in, and pip.
# Moved on purpose only: `python benchmarks/latest_deps.py` says whether the newest
# releases still install and pass; `python benchmarks/latest_deps.py --write-constraints`,
# run in an environment where the suite passes, rewrites this file from that environment,
# keeping the lines marked "# held:" (an older release on purpose: every pin must install
# on the Python of a bare Debian 12, 3.11.2, which CI uses).
"""


def ci_extras() -> list[str]:
    """The extras ``.ci/run`` installs (``-e ".[a,b]"``): what the pins must cover."""
    found = re.search(r'-e "\.\[([A-Za-z0-9_,-]+)\]"', (ROOT / ".ci" / "run").read_text())
    if found is None:
        raise SystemExit('.ci/run installs no extras this script can read (-e ".[...]")')
    return found.group(1).split(",")


def _project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    lines = [*project["dependencies"], *(line for name in ci_extras() for line in extras[name])]
    return [Requirement(line) for line in lines]


def _applies(req: Requirement, extras: frozenset[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": extra}) for extra in (extras or {""}))


def closure(requirements: list[Requirement]) -> dict[str, str]:
    """The installed distributions that ``requirements`` pull in, with their versions.

    Parameters
    ----------
    requirements : list of packaging.requirements.Requirement
        Where to start; markers are evaluated for the running interpreter.

    Returns
    -------
    dict
        Canonical name -> installed version, sorted by name.

    Raises
    ------
    SystemExit
        When a required distribution is not installed here.
    """
    seen: dict[str, frozenset[str]] = {}
    todo = [(req, frozenset(req.extras)) for req in requirements if _applies(req, frozenset())]
    missing: list[str] = []
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen and extras <= seen[name]:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            missing.append(req.name)
            continue
        seen[name] = seen.get(name, frozenset()) | extras
        for line in dist.requires or []:
            sub = Requirement(line)
            if _applies(sub, extras):
                todo.append((sub, frozenset(sub.extras)))
    if missing:
        raise SystemExit(f"not installed here: {', '.join(sorted(set(missing)))}")
    return {name: metadata.version(name) for name in sorted(seen)}


def _held(path: Path) -> dict[str, str]:
    """The lines of ``path`` marked ``# held:`` (an older release kept on purpose), by name."""
    held: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            match = re.fullmatch(r"\s*([A-Za-z0-9._-]+)\s*==.*#\s*held:.*", line)
            if match:
                held[canonicalize_name(match[1])] = line.strip()
    return held


def too_new_for_ci(requires_python: dict[str, str | None]) -> dict[str, str]:
    """Of name -> Requires-Python, those that exclude CI's Python (:data:`CI_PYTHON`)."""
    return {
        name: spec
        for name, spec in requires_python.items()
        if spec and Version(CI_PYTHON) not in SpecifierSet(spec)
    }


def write_constraints(path: Path = CONSTRAINTS) -> tuple[dict[str, str], dict[str, str]]:
    """Write the pins of this environment (see :func:`closure`) and pip's version to ``path``.

    Lines marked ``# held:`` are kept as they are.

    Returns
    -------
    tuple of dict
        What was written (canonical name -> version), and the pins that do not install
        on CI's Python (name -> Requires-Python): hold an older release of those by hand.
    """
    pins = closure(_project_requirements())
    pins.pop("massiva-frames", None)
    pins["pip"] = metadata.version("pip")
    held = _held(path)
    lines = [held.get(name, f"{name}=={pins[name]}") for name in sorted(pins)]
    header = HEADER.replace("EXTRAS", ",".join(ci_extras()))
    path.write_text(header + "".join(line + "\n" for line in lines), encoding="utf-8")
    requires = {
        name: metadata.distribution(name).metadata.get("Requires-Python")
        for name in pins
        if name not in held
    }
    return pins, too_new_for_ci(requires)


def read_pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    """The ``name==version`` lines of a constraints file, canonical name -> version."""
    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"\s*([A-Za-z0-9._-]+)\s*==\s*([^\s;#]+).*", line)
        if match:
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def _freeze(python: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[str, str] = {}
    for line in out.splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            found[canonicalize_name(name)] = version.strip()
    return found


def _requires_python(python: Path) -> dict[str, str | None]:
    """Requires-Python of every distribution installed for ``python``."""
    code = (
        "import importlib.metadata as m, json\n"
        "print(json.dumps({d.metadata['Name']: d.metadata.get('Requires-Python')"
        " for d in m.distributions()}))"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    found: dict[str, str | None] = json.loads(out.stdout)
    return {canonicalize_name(name): spec for name, spec in found.items()}


def _step(name: str, argv: list[str], env: dict[str, str], log: Path) -> tuple[bool, float]:
    print(f"-- {name}: {' '.join(argv)}", flush=True)
    start = time.monotonic()
    with log.open("ab") as out:
        out.write(f"\n===== {name}: {' '.join(argv)}\n".encode())
        out.flush()
        done = subprocess.run(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - start
    print(
        f"   {'ok' if done.returncode == 0 else f'FAILED (exit {done.returncode})'}"
        f" in {seconds:.0f} s",
        flush=True,
    )
    return done.returncode == 0, seconds


def _tail(log: Path, lines: int = 25) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    """Run the check (or write the constraints); 0 when everything installed and passed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="run the whole suite")
    parser.add_argument("--keep", action="store_true", help="keep the temporary environment")
    parser.add_argument(
        "--write-constraints",
        action="store_true",
        help="rewrite .ci/constraints.txt from this environment and exit",
    )
    args = parser.parse_args(argv)

    if args.write_constraints:
        pins, too_new = write_constraints()
        print(f"{CONSTRAINTS.relative_to(ROOT)}: {len(pins)} pins from {sys.prefix}")
        for name, spec in sorted(too_new.items()):
            print(
                f"  {name}=={pins[name]} needs Python {spec}; CI's is {CI_PYTHON}: "
                "pin an older release and mark the line '# held: why'"
            )
        return 1 if too_new else 0

    pins = read_pins()
    workdir = Path(tempfile.mkdtemp(prefix="massiva-latest-"))
    venv = workdir / "venv"
    python = venv / "bin" / "python"
    log = workdir / "log.txt"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "VIRTUAL_ENV", "PIP_CONSTRAINT"}
        and not key.startswith("COVERAGE_")
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    results: list[tuple[str, bool, float]] = []
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        seeded = set(_freeze(python))  # what venv itself puts there (pip, setuptools)
        steps: list[tuple[str, list[str]]] = [
            ("newest pip", [str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"]),
            (
                f"install .[{','.join(ci_extras())}], newest releases",
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--upgrade",
                    f".[{','.join(ci_extras())}]",
                ],
            ),
        ]
        for name, command in steps:
            ok, seconds = _step(name, command, env, log)
            results.append((name, ok, seconds))
            if not ok:
                print(_tail(log))
                return 1

        installed = _freeze(python)
        installed.pop("massiva-frames", None)
        changed = sorted(
            name for name in pins if name in installed and installed[name] != pins[name]
        )
        gone = sorted(name for name in pins if name not in installed)
        new = sorted(name for name in installed if name not in pins and name not in seeded)
        print(f"\n{len(pins)} pins; {len(changed)} differ from the newest releases installed:")
        width = max((len(name) for name in changed), default=10)
        for name in changed:
            print(f"  {name:<{width}}  {pins[name]:>12} -> {installed[name]}")
        if new:
            print("pulled in now, not pinned: " + ", ".join(f"{n} {installed[n]}" for n in new))
        if gone:
            print("pinned, no longer pulled in: " + ", ".join(gone))
        too_new = too_new_for_ci(_requires_python(python))
        for name in sorted(too_new):
            print(f"needs Python {too_new[name]}, not CI's {CI_PYTHON}: {name} {installed[name]}")
        print()

        tests = ["tests"] if args.full else QUICK_TESTS
        checks: list[tuple[str, list[str]]] = [
            (
                "ruff check",
                [str(venv / "bin" / "ruff"), "check", "massiva_frames", "tests", "benchmarks"],
            ),
            (
                "ruff format --check",
                [
                    str(venv / "bin" / "ruff"),
                    "format",
                    "--check",
                    "massiva_frames",
                    "tests",
                    "benchmarks",
                ],
            ),
            ("mypy", [str(venv / "bin" / "mypy")]),
            (
                "pytest (whole suite)" if args.full else f"pytest ({len(tests)} files)",
                [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
            ),
        ]
        for name, command in checks:
            ok, seconds = _step(name, command, env, log)
            results.append((name, ok, seconds))
            if not ok:
                print(_tail(log))
    finally:
        if args.keep:
            print(f"environment kept: {venv} (log: {log})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print("\nstep                               result   seconds")
    for name, ok, seconds in results:
        print(f"{name:<34} {'ok' if ok else 'FAILED':<8} {seconds:>7.0f}")
    passed = all(ok for _, ok, _ in results)
    print("the newest releases install and pass" if passed else "the newest releases do NOT pass")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
