"""The README's sandbox example runs as written, and does what its comments say."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import massiva_frames as mf

README = Path(__file__).resolve().parents[1] / "README.md"


def section_code(heading: str) -> str:
    """The first ``python`` block of the README section opened by ``heading``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end > 0 else None]
    block = re.search(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert block is not None, f"no python block under {heading!r}"
    return block[1]


def test_sandbox_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(section_code("The sandbox: a local Massiva API"), "README.md", "exec"), namespace)
    sb = namespace["sb"]
    assert namespace["resp"].status == 1  # 786786786 is rejected
    assert sb.contacts()[["group", "phone"]].values.tolist() == [["clientes", "584141234567"]]
    status = mf.read_callbacks("callback-logs", kind="status")
    inbound = mf.read_callbacks("callback-logs", kind="inbound")
    assert status["message_id"].tolist() == [123451]
    assert inbound[["phone", "text"]].values.tolist() == [["584141234567", "BAJA"]]
