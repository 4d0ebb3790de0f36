"""The documentation site: it builds, it is complete, its examples run, its recipes are valid.

- ``mkdocs build --strict`` (warnings are errors; MkDocs checks the links and anchors of
  the Markdown pages), with the notebooks executed against the sandbox; then every
  internal link and anchor of the built HTML is followed (notebooks and generated
  reference pages included).
- Every name of ``massiva_frames.__all__`` has an entry in the API reference, and the
  entry is in the built pages.
- Every fenced code block of the pages under ``docs/`` (``protocol.md`` and
  ``architecture.md`` are reference texts, not guides) either runs here, or is marked
  ``<!-- not-run: REASON -->`` on the line before it. ``python`` blocks run in order, one
  namespace per page, in a temporary folder, against a sandbox that the environment
  (``MASSIVA_USUARIO``, ``MASSIVA_CLAVE``, ``MASSIVA_BASE_URL``) points to, with a
  receiver taking its callbacks; ``bash`` blocks run there too, with ``set -eu``.
  Each page starts with ``sb`` (the sandbox), ``client``, ``df`` (200 rows of the
  sample campaign, also as ``clientes.csv``), ``rc`` (the receiver) and ``logdir``;
  ``data/`` and ``deploy/`` are there as in a clone.
- ``deploy/``: the systemd units pass ``systemd-analyze verify`` (and the receiver's
  unit ``systemd-analyze security``); the retention script removes old day partitions
  of a real callback log directory and keeps the rest.

The build needs the ``docs`` extra; without it these tests skip, unless
``MASSIVA_REQUIRE_DOCS=1`` (then they fail). Likewise ``MASSIVA_REQUIRE_SYSTEMD=1`` for
the unit checks.
"""

from __future__ import annotations

import html.parser
import importlib.util
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

import massiva_frames as mf
from massiva_frames import _EXPORTS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DEPLOY = ROOT / "deploy"
#: reference texts of their own (cited by the code), not guides with examples
NOT_GUIDES = {"protocol.md", "architecture.md"}
RUNNABLE = {"python", "bash"}
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(?P<reason>.*?)\s*-->$")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
BUILD_TIMEOUT = 900


def _required(name: str) -> bool:
    return os.environ.get(f"MASSIVA_REQUIRE_{name}") == "1"


def _skip_or_fail(name: str, reason: str) -> None:
    if _required(name):
        pytest.fail(f"{reason} (MASSIVA_REQUIRE_{name}=1)")
    pytest.skip(reason)


# --- code blocks ---------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced code block of a page."""

    page: str
    line: int
    lang: str
    code: str
    not_run: str | None


def guide_pages() -> list[Path]:
    """Every Markdown page of the site written as a guide (build helpers excluded)."""
    return sorted(
        path
        for path in DOCS.rglob("*.md")
        if path.name not in NOT_GUIDES and "_build" not in path.relative_to(DOCS).parts
    )


def code_blocks(path: Path, root: Path = DOCS) -> list[Block]:
    """The fenced code blocks of a Markdown page, with the not-run marker before each."""
    page = str(path.relative_to(root))
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = len(match["indent"]), match["fence"]
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][indent:])
            i += 1
        previous = lines[start - 1].strip() if start > 0 else ""
        marker = NOT_RUN.match(previous)
        blocks.append(
            Block(
                page=page,
                line=start + 1,
                lang=match["lang"].lower(),
                code="\n".join(body) + "\n",
                not_run=marker["reason"] if marker else None,
            )
        )
        i += 1
    return blocks


PAGES = guide_pages()


def test_the_guides_are_found() -> None:
    names = {str(p.relative_to(DOCS)) for p in PAGES}
    for page in ("index.md", "getting-started.md", "guide/sending.md", "guide/errors.md"):
        assert page in names
    assert sum(len(code_blocks(p)) for p in PAGES) >= 30


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_every_block_runs_or_says_why_not(path: Path) -> None:
    for block in code_blocks(path):
        where = f"{block.page}:{block.line}"
        if block.not_run is not None:
            assert block.not_run, f"{where}: a not-run marker needs a reason"
        else:
            assert block.lang in RUNNABLE, (
                f"{where}: a ```{block.lang or '(no language)'} block neither runs "
                "(python, bash) nor is marked <!-- not-run: REASON --> on the line before"
            )


def test_the_marker_parser(tmp_path: Path) -> None:
    page = tmp_path / "sample.md"
    page.write_text(
        "text\n\n<!-- not-run: needs a public URL -->\n```bash\ncurl x\n```\n\n"
        "```python\nx = 1\n```\n    ```text\n    indented\n    ```\n",
        encoding="utf-8",
    )
    blocks = code_blocks(page, tmp_path)
    assert [(b.lang, b.not_run, b.code) for b in blocks] == [
        ("bash", "needs a public URL", "curl x\n"),
        ("python", None, "x = 1\n"),
        ("text", None, "indented\n"),
    ]


@pytest.fixture
def page_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A sandbox that calls a receiver, the environment pointing at it, a work folder."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    # the CLI of this checkout, as `massiva-frames` on PATH
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "massiva-frames"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m massiva_frames.faces.cli "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.setenv("MPLBACKEND", "Agg")
    df = mf.load_sample_campaign(200)
    df.to_csv(work / "clientes.csv", index=False)
    for folder in ("data", "deploy"):  # the sample data and the recipes, as in a clone
        (work / folder).symlink_to(ROOT / folder)
    logdir = "callback-logs"
    with mf.receiver(logdir) as rc:
        with mf.sandbox(
            credits=100_000,
            status_url=rc.url,
            inbound_url=rc.url,
            callback_delay=0.2,
            fail_ratio=0.1,
            reply_ratio=0.2,
            seed=11,
        ) as sb:
            monkeypatch.setenv("MASSIVA_USUARIO", sb.usuario)
            monkeypatch.setenv("MASSIVA_CLAVE", sb.clave)
            monkeypatch.setenv("MASSIVA_BASE_URL", sb.base_url)
            with mf.MassivaClient(sb.usuario, sb.clave, base_url=sb.base_url) as client:
                yield {
                    "sb": sb,
                    "client": client,
                    "df": df.copy(),
                    "rc": rc,
                    "logdir": logdir,
                    "__name__": "__docs__",
                }


RUN_PAGES = [p for p in PAGES if any(b.not_run is None for b in code_blocks(p))]


@pytest.mark.parametrize("path", RUN_PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_examples_run(path: Path, page_env: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    namespace = dict(page_env)
    try:
        for block in code_blocks(path):
            if block.not_run is not None or block.lang not in RUNNABLE:
                continue
            where = f"{block.page}:{block.line}"
            if block.lang == "python":
                code = compile(block.code, where, "exec")
                try:
                    exec(code, namespace)
                except Exception as exc:  # the failing block and its line, then the cause
                    raise AssertionError(f"{where}: {type(exc).__name__}: {exc}") from exc
            else:
                proc = subprocess.run(
                    ["bash", "-c", "set -eu\n" + block.code],
                    capture_output=True,
                    text=True,
                    timeout=180,
                )
                assert proc.returncode == 0, (
                    f"{where}: exit code {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
                )
    finally:
        plt.close("all")


# --- the API reference ---------------------------------------------------------------


def reference_targets() -> dict[str, str]:
    """Every ``::: dotted.path`` directive of the reference pages -> its page."""
    targets: dict[str, str] = {}
    for page in sorted((DOCS / "reference").glob("*.md")):
        for line in page.read_text(encoding="utf-8").splitlines():
            if line.startswith("::: "):
                targets[line[4:].strip()] = page.stem
    return targets


def expected_path(name: str) -> str:
    """The dotted path of a public name's reference entry: where it is defined."""
    if name == "__version__":
        return "massiva_frames._version.__version__"
    return f"{_EXPORTS[name]}.{name}"


def test_every_public_name_has_a_reference_entry() -> None:
    targets = reference_targets()
    missing = [name for name in mf.__all__ if expected_path(name) not in targets]
    assert not missing, f"no `::: ...` entry in docs/reference/ for {missing}"
    # and nothing in the reference that is not public
    public = {expected_path(name) for name in mf.__all__}
    assert set(targets) <= public, sorted(set(targets) - public)


# --- the build -----------------------------------------------------------------------

_BUILD: dict[str, Any] = {}
_BUILD_LOCK = threading.Lock()


def build_site(base: Path) -> Path:
    """Build the site once per test session (``mkdocs build --strict``); its folder."""
    with _BUILD_LOCK:
        if "error" in _BUILD:
            pytest.fail(_BUILD["error"])
        if "site" in _BUILD:
            site: Path = _BUILD["site"]
            return site
        if importlib.util.find_spec("mkdocs") is None:
            _skip_or_fail("DOCS", "mkdocs is not installed: pip install -e '.[docs]'")
        site = base / "site"
        env = {
            **os.environ,
            "NO_MKDOCS_2_WARNING": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "MASSIVA_DOCS_EXECUTE": "1",
        }
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", "mkdocs.yml"]
            + ["-d", str(site)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
        )
        _BUILD["seconds"] = time.monotonic() - started
        _BUILD["log"] = proc.stdout + proc.stderr
        if proc.returncode != 0:
            _BUILD["error"] = f"mkdocs build --strict failed:\n{_BUILD['log'][-6000:]}"
            pytest.fail(_BUILD["error"])
        _BUILD["site"] = site
        return site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_site(tmp_path_factory.mktemp("docs"))


class _Page(html.parser.HTMLParser):
    """The ids and the links of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for key in ("id", "name"):
            if values.get(key) and (key == "id" or tag == "a"):
                self.ids.add(str(values[key]))
        if tag == "a" and values.get("href"):
            self.links.append(str(values["href"]))


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.mark.slow
def test_the_site_builds_strict(site: Path) -> None:
    for page in (
        "index.html",
        "getting-started/index.html",
        "guide/sending/index.html",
        "reference/sending/index.html",
        "notebooks/01-quickstart/index.html",
        "protocol/index.html",
        "architecture/index.html",
        "changelog/index.html",
    ):
        assert (site / page).is_file(), page
    assert "Aborted" not in _BUILD["log"]
    changelog = (site / "changelog/index.html").read_text(encoding="utf-8")
    assert "0.1.0" in changelog and "--8&lt;--" not in changelog


@pytest.mark.slow
def test_every_public_name_is_in_the_built_reference(site: Path) -> None:
    ids: set[str] = set()
    for page in (site / "reference").rglob("index.html"):
        ids |= _parse(page).ids
    missing = [name for name in mf.__all__ if expected_path(name) not in ids]
    assert not missing, f"built reference pages lack {missing}"
    send = (site / "reference/sending/index.html").read_text(encoding="utf-8")
    # the signature and the examples come from the docstring
    assert "resend_unknown" in send and "Examples" in send


@pytest.mark.slow
def test_the_notebooks_are_rendered_with_their_outputs(site: Path) -> None:
    for name, expected in (
        ("01-quickstart", "phone_landline"),
        ("02-delivery-analytics", "delivery_rate"),
        ("03-etl-pipeline", "exit code"),
    ):
        text = (site / "notebooks" / name / "index.html").read_text(encoding="utf-8")
        assert "jp-OutputArea" in text, name
        assert expected in text, f"{name}: its outputs are missing ({expected!r})"
        assert "Traceback" not in text, name
    plots = (site / "notebooks/02-delivery-analytics/index.html").read_text(encoding="utf-8")
    assert "data:image/png;base64" in plots
    # the widgets need a live kernel: a note stands in for them, no CDN script is asked
    quick = (site / "notebooks/01-quickstart/index.html").read_text(encoding="utf-8")
    assert "massiva-widget-note" in quick and "unpkg" not in quick


@pytest.mark.slow
def test_internal_links_and_anchors_resolve(site: Path) -> None:
    site = site.resolve()
    pages = {path: _parse(path) for path in site.rglob("*.html")}
    broken: list[str] = []
    for path, page in pages.items():
        for href in page.links:
            parts = urlsplit(href)
            if parts.scheme or href.startswith("//") or href.startswith("mailto:"):
                continue
            if parts.path.startswith("/"):  # 404.html links from the site's root
                target = (site / unquote(parts.path).lstrip("/")).resolve()
            elif parts.path:
                target = (path.parent / unquote(parts.path)).resolve()
                if target.is_dir():
                    target = target / "index.html"
            else:
                target = path
            where = f"{path.relative_to(site)} -> {href}"
            if not target.exists():
                broken.append(f"{where}: no such file")
                continue
            if parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{where}: no anchor")
    assert not broken, "\n".join(broken[:40])


# --- deploy/ -------------------------------------------------------------------------

UNITS = sorted((DEPLOY / "systemd").glob("*.service")) + sorted(
    (DEPLOY / "systemd").glob("*.timer")
)


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        _skip_or_fail(
            "SYSTEMD", "systemd-analyze is missing: apt-get install systemd to check the units"
        )
    assert tool is not None
    return tool


def _units_in(tmp_path: Path) -> list[Path]:
    """The units, with their /opt/massiva-frames paths moved under tmp_path.

    ``systemd-analyze verify`` requires ExecStart's program to exist; stand-ins take
    the place of the installed ones. Nothing else in the units is changed.
    """
    opt = tmp_path / "opt"
    (opt / "bin").mkdir(parents=True)
    program = opt / "bin" / "massiva-frames"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    shutil.copy(DEPLOY / "retention" / "prune-callback-logs.sh", opt)
    copies = []
    for unit in UNITS:
        text = unit.read_text(encoding="utf-8")
        copy = tmp_path / unit.name
        copy.write_text(text.replace("/opt/massiva-frames/", f"{opt}/"), encoding="utf-8")
        copies.append(copy)
    return copies


def test_the_recipes_are_there() -> None:
    names = {p.name for p in UNITS}
    assert {
        "massiva-receiver.service",
        "massiva-receiver-retention.service",
        "massiva-receiver-retention.timer",
    } <= names
    unit = (DEPLOY / "systemd" / "massiva-receiver.service").read_text(encoding="utf-8")
    assert "EnvironmentFile=" in unit and "--token" not in unit
    assert (DEPLOY / "container" / "Containerfile").is_file()


def test_systemd_units_verify(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    copies = _units_in(tmp_path)
    proc = subprocess.run(
        [tool, "verify", "--man=no", *[f"./{c.name}" for c in copies]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 on unknown keys too, and says so on stderr: any output is a finding
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), (
        proc.stdout + proc.stderr
    )


def test_systemd_verify_sees_a_broken_unit(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    bad = tmp_path / "bad.service"
    bad.write_text("[Service]\nExecStart=/bin/true\nProtectSystem=stricter\nBogus=1\n")
    proc = subprocess.run(
        [tool, "verify", "--man=no", "./bad.service"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Bogus" in proc.stderr


def test_the_receiver_unit_is_hardened(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    unit = next(c for c in _units_in(tmp_path) if c.name == "massiva-receiver.service")
    proc = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", f"./{unit.name}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout + proc.stderr)
    if found is None:
        _skip_or_fail("SYSTEMD", f"systemd-analyze security --offline is unavailable: {proc}")
    assert found is not None
    assert float(found[1]) <= 2.0, proc.stdout


def test_retention_removes_old_day_partitions(tmp_path: Path) -> None:
    if shutil.which("flock") is None:
        pytest.skip("flock is missing: apt-get install util-linux")
    import datetime as dt

    import pandas as pd

    logdir = tmp_path / "callback-logs"
    with mf.receiver(logdir):  # a real log directory, with its _journal
        pass
    today = dt.datetime.now(dt.UTC).date()
    days = {age: (today - dt.timedelta(days=age)).isoformat() for age in (0, 5, 30, 31, 400)}
    frame = pd.DataFrame({"message_id": [1], "status": ["delivered"]})
    for kind in ("status", "inbound"):
        for day in days.values():
            part = logdir / kind / f"day={day}"
            part.mkdir(parents=True)
            frame.to_parquet(part / "part-x.parquet")
    (logdir / "status" / "day=not-a-date").mkdir()
    script = DEPLOY / "retention" / "prune-callback-logs.sh"
    proc = subprocess.run(
        ["sh", str(script), "30", str(logdir)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    for kind in ("status", "inbound"):
        left = sorted(p.name for p in (logdir / kind).iterdir())
        expected = sorted(f"day={days[a]}" for a in (0, 5, 30))
        if kind == "status":
            expected = sorted([*expected, "day=not-a-date"])
        assert left == expected, (kind, left)
    assert (logdir / "_journal").is_dir()
    # the wrong arguments are refused, nothing removed
    for args in (["x", str(logdir)], ["30", str(tmp_path)], ["30"]):
        bad = subprocess.run(["sh", str(script), *args], capture_output=True, timeout=60)
        assert bad.returncode == 2
    assert len(list((logdir / "status").iterdir())) == 4


# --- the errors guide ----------------------------------------------------------------


def test_the_errors_guide_names_every_exception() -> None:
    import inspect

    from massiva_frames import errors

    classes = {
        name: cls
        for name, cls in vars(errors).items()
        if inspect.isclass(cls)
        and issubclass(cls, BaseException)
        and cls.__module__ == errors.__name__
    }
    text = (DOCS / "guide" / "errors.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `(\w+)` \|", text, re.MULTILINE))
    assert rows == set(classes), (
        f"table rows: missing {set(classes) - rows}, extra {rows - set(classes)}"
    )
    # the tree: every class once, under one of its bases
    start = text.index("```text\nMassivaError") + len("```text\n")
    tree = text[start : text.index("\n```", start)]
    parents: list[str] = []
    seen = set()
    for line in tree.splitlines():
        found = re.match(r"^((?:│   |    )*)(?:[├└]── )?(\w+)", line)
        assert found is not None, line
        depth = len(found[1]) // 4 + (1 if "── " in line else 0)
        name = found[2]
        parents[depth:] = [name]
        seen.add(name)
        if depth:
            assert classes[parents[depth - 1]] in classes[name].__bases__, (name, parents)
    assert seen == set(classes), set(classes) ^ seen
