"""The README: its two quick-start commands as CI runs them, an example that runs, links that
resolve, and the two tables the documentation site includes from it.

The rest of what the README used to hold lives in the site's pages, whose examples
``tests/test_docs.py`` runs (the sandbox example: ``docs/guide/sandbox.md``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import massiva_frames as mf

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: the quick start's two commands, byte for byte (people copy them; CI runs the second)
DEMO_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/massiva-frames demo"
)
TEST_COMMAND = (
    'python3 -m venv .venv && .venv/bin/pip install -q -e ".[test]" && .venv/bin/python -m pytest'
)


def section(heading: str) -> str:
    """The README section opened by ``## heading``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def fenced(text: str, lang: str) -> list[str]:
    """The bodies of the ``lang`` code blocks of ``text``."""
    return re.findall(rf"^```{lang}\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


def test_the_quick_start_has_exactly_its_two_commands() -> None:
    assert fenced(section("Quick start"), "bash") == [DEMO_COMMAND + "\n", TEST_COMMAND + "\n"]


def test_it_stays_a_readme() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 220, f"{len(lines)} lines: move the details to docs/"
    assert [h for h in lines if h.startswith("## ")][:2] == ["## Quick start", "## A first send"]


def test_first_send_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (code,) = fenced(section("A first send"), "python")
    assert len(code.splitlines()) <= 12
    with mf.sandbox(credits=10) as sb:
        monkeypatch.setenv("MASSIVA_USUARIO", sb.usuario)
        monkeypatch.setenv("MASSIVA_CLAVE", sb.clave)
        monkeypatch.setenv("MASSIVA_BASE_URL", sb.base_url)
        for run in (1, 2):  # "Run it again: the journal sends nothing twice"
            namespace: dict[str, Any] = {}
            exec(compile(code, "README.md", "exec"), namespace)
            results = namespace["results"]
            assert results["state"].astype(str).tolist() == ["accepted", "accepted", "invalid"]
            assert results["reason"].tolist()[2] == "phone_landline"
            assert results["message_id"].notna().tolist() == [True, True, False]
            assert len(sb.messages()) == 2, run


def test_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert len(local) >= 15
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing


def test_every_guide_page_is_listed() -> None:
    text = section("Documentation")
    pages = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs" / "guide").glob("*.md"))
    assert [p for p in pages if f"]({p})" not in text] == []


@pytest.mark.parametrize(
    ("name", "header", "page"),
    [
        ("performance", "| what | command | figure |", "docs/guide/scale.md"),
        ("chaos", "| guarantee | how it is tested | figure |", "docs/guide/reliability.md"),
    ],
)
def test_the_site_includes_the_readme_tables(name: str, header: str, page: str) -> None:
    text = README.read_text(encoding="utf-8")
    start, end = f"<!-- --8<-- [start:{name}] -->", f"<!-- --8<-- [end:{name}] -->"
    body = text[text.index(start) + len(start) : text.index(end)].strip().splitlines()
    assert body[0] == header and len(body) >= 5
    assert all(line.startswith("|") and line.endswith("|") for line in body)
    assert f'--8<-- "README.md:{name}"' in (ROOT / page).read_text(encoding="utf-8")
