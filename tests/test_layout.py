"""The package's layout: imports point one way between stages, no circles, small modules.

The stages and who may import whom are drawn in ``docs/architecture.md``; this test is the
rule's enforcement. It reads the sources with :mod:`ast`, so imports inside functions
(the lazy ones) count too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "massiva_frames"
MAX_LINES = 600

#: stage -> the stages it may import (besides itself). The root package (lazy public
#: names) and ``_version``/``errors``/``_waitress`` sit outside the stages.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "_version": set(),
    "_waitress": set(),
    "wire": {"errors", "_version"},
    "prepare": {"wire", "errors"},
    "sending": {"prepare", "wire", "errors"},
    "receiving": {"errors", "_waitress"},
    "analytics": {"receiving", "prepare", "errors"},
    "engines": {"prepare", "errors"},
    "faces": {
        "analytics",
        "sending",
        "receiving",
        "prepare",
        "wire",
        "sandbox",
        "errors",
        "_version",
    },
    # written apart from the client: a shared encoder or parser would let a shared bug pass
    "sandbox": {"errors", "_waitress"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules that ``name`` imports (``from . import x`` resolved to ``x``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("massiva_frames")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("massiva_frames"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    # importlib.import_module("massiva_frames.x") strings count as imports too
    for match in re.finditer(
        r"import_module\(\s*[\"'](massiva_frames[\w.]*)[\"']", path.read_text()
    ):
        found.add(match.group(1))
    return {f for f in found if f in known and f != name}


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


GRAPH = {name: _imports(name, path, _modules()) for name, path in _modules().items()}


def test_every_module_belongs_to_a_known_stage() -> None:
    strays = [m for m in GRAPH if _stage(m) not in ALLOWED and m != "massiva_frames"]
    assert not strays, f"modules outside the stages of docs/architecture.md: {strays}"


def test_imports_point_down_the_stages() -> None:
    wrong = []
    for module, deps in GRAPH.items():
        stage = _stage(module)
        if stage is None:  # the root package: lazy public names, above everything
            continue
        for dep in deps:
            target = _stage(dep)
            if target is None:
                wrong.append(f"{module} -> {dep} (the root package)")
            elif target != stage and target not in ALLOWED[stage]:
                wrong.append(f"{module} -> {dep}")
    assert not wrong, "imports against the stage order:\n" + "\n".join(sorted(wrong))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles() -> None:
    # The root package's lazy table points at everything: leave it out, like a caller.
    graph = {m: d - {"massiva_frames"} for m, d in GRAPH.items() if m != "massiva_frames"}
    assert _cycles(graph) == []


def test_cycle_finder_sees_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("folder", ["massiva_frames", "benchmarks"])
def test_no_module_over_the_limit(folder: str) -> None:
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
        for p in sorted((ROOT / folder).rglob("*.py"))
    }
    long = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_module_says_what_it_owns() -> None:
    silent = [m for m, p in _modules().items() if not ast.get_docstring(ast.parse(p.read_text()))]
    assert not silent, f"modules without an opening docstring: {silent}"


def test_no_reference_to_a_file_users_do_not_have() -> None:
    cited = []
    for path in PACKAGE.rglob("*.py"):
        if "API.md" in path.read_text(encoding="utf-8"):
            cited.append(str(path.relative_to(ROOT)))
    assert not cited


def test_protocol_sections_cited_exist() -> None:
    protocol = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", protocol, flags=re.M))
    cited: dict[str, set[str]] = {}
    for folder in ("massiva_frames", "benchmarks", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for match in re.finditer(r"docs/protocol\.md ((?:§\d+(?:\.\d+)*(?:,\s*)?)+)", text):
                for section in re.findall(r"§(\d+(?:\.\d+)*)", match.group(1)):
                    cited.setdefault(section, set()).add(str(path.relative_to(ROOT)))
    assert cited, "no citation found: the pattern is wrong"
    missing = {s: sorted(f) for s, f in cited.items() if s not in headings}
    assert not missing, f"sections cited but not in docs/protocol.md: {missing}"
