"""The passwords the scenarios use, and the scan for them in everything a run shows or
writes: every encoded form (raw, URL, HTML, JSON; UTF-8, Latin-1, UTF-16), in text and in
bytes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from urllib.parse import quote, quote_plus

__all__ = [
    "PASSWORD",
    "SECRET_CORE",
    "WRONG_PASSWORD",
    "around",
    "scan_for_secrets",
    "secret_forms",
]


#: distinctive passwords: separators, '&', '=', '$' and a non-ASCII letter, so every
#: encoding (form, URL, HTML, JSON, Latin-1) takes a different shape; all share a core
PASSWORD = "Pw-$ecr3t;|&=é"
WRONG_PASSWORD = "Wr0ng-$ecr3t;|&=ü"
SECRET_CORE = "ecr3t"


def secret_forms(secret: str) -> set[str]:
    """Every shape ``secret`` can take in text: raw, URL-encoded (UTF-8, Latin-1, either
    case), HTML-escaped, JSON-escaped; plus its distinctive core."""
    import html

    forms = {secret, html.escape(secret), html.escape(secret, quote=False)}
    forms.add(json.dumps(secret)[1:-1])
    forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    for encoding in ("utf-8", "iso-8859-1"):
        for q in (quote(secret, safe="", encoding=encoding), quote_plus(secret, encoding=encoding)):
            forms |= {q, q.lower()}
    forms.add(SECRET_CORE)
    return forms


def scan_for_secrets(
    artifacts: dict[str, str | bytes], secrets: Sequence[str]
) -> tuple[int, list[str]]:
    """Count occurrences of the secrets' forms in text and bytes artifacts.

    Bytes are searched as bytes in UTF-8, Latin-1 and UTF-16 so a compressed-free binary
    file (SQLite, parquet without compression) is scanned too. Every secret used here
    contains :data:`SECRET_CORE`, so a cut or partial form is caught as well.

    Returns the number of occurrences and where they were.
    """
    needles_text: set[str] = set()
    for secret in secrets:
        needles_text |= secret_forms(secret)
    # The core catches every form that keeps it; count it once per place, not per form.
    needles_text = {n for n in needles_text if SECRET_CORE not in n.lower()} | {SECRET_CORE}
    needles_bytes: set[bytes] = set()
    for needle in needles_text:
        for encoding in ("utf-8", "iso-8859-1", "utf-16-le", "utf-16-be"):
            with contextlib.suppress(UnicodeEncodeError):
                needles_bytes.add(needle.encode(encoding))
    count = 0
    where: list[str] = []
    for name, content in artifacts.items():
        if isinstance(content, str):
            hay = content.lower()
            hits = sum(hay.count(n.lower()) for n in needles_text)
        else:
            hay_b = content.lower()
            hits = sum(hay_b.count(n.lower()) for n in needles_bytes)
        if hits:
            count += hits
            where.append(f"{name} ({hits})")
    return count, where


def around(text: str, width: int = 60) -> str:
    """The part of ``text`` around the first secret core (for a problem report)."""
    at = text.lower().find(SECRET_CORE)
    return text[max(0, at - width) : at + width] if at >= 0 else text[: 2 * width]
