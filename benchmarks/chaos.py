"""Chaos suite: the reliability and security guarantees (DESIGN.md, "Guarantees") as figures.

Each scenario tries something hostile and counts what was lost, duplicated, crashed, hung
or leaked; those figures must all be 0. One table is printed:

    scenario | tried | sent once | unknown | lost | duplicated | crashes | hangs | leaks | s

1. ``provider``: rows sent through a sandbox that injects, by ratio, 500s, 503s, resets,
   accept-then-hang, truncated XML and HTML pages; then re-run on the same journal.
2. ``sender``: the send run as a subprocess, SIGKILLed at random moments and restarted
   on the same journal until it finishes.
3. ``receiver``: the callback receiver (``massiva-frames receive``) SIGKILLed and
   restarted while the sandbox and a load generator post callbacks at it.
4. ``input``: hypothesis-generated DataFrames into ``validate``/``send(dry_run=True)``,
   XML variants into the response parser, raw query strings into a live receiver.
5. ``secrets``: a run with failures of every kind, scanned for the password.

    python benchmarks/chaos.py [--scenario NAME ...] [--quick] [--seed N]

``--quick`` runs the bounded sizes the test suite uses (tests/test_chaos.py). The exit
code is 1 when a must-be-zero figure is not 0. ``--worker send`` is the subprocess of the
killed-sender scenario.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import http.client
import io
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

__all__ = [
    "FULL",
    "MUST_BE_ZERO",
    "QUICK",
    "Figures",
    "Sizes",
    "format_table",
    "fuzz_frames",
    "fuzz_queries",
    "fuzz_xml",
    "main",
    "run_scenarios",
    "scan_for_secrets",
    "scenario_faulty_provider",
    "scenario_killed_receiver",
    "scenario_killed_sender",
    "scenario_secrets",
]

ROOT = Path(__file__).resolve().parent.parent
MUST_BE_ZERO = ("lost", "duplicated", "crashes", "hangs", "leaks")
#: distinctive passwords: separators, '&', '=', '$' and a non-ASCII letter, so every
#: encoding (form, URL, HTML, JSON, Latin-1) takes a different shape; all share a core
PASSWORD = "Pw-$ecr3t;|&=é"
WRONG_PASSWORD = "Wr0ng-$ecr3t;|&=ü"
SECRET_CORE = "ecr3t"
USUARIO = "chaos@massiva.test"


# --- figures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is."""

    provider_rows: int = 20_000
    provider_max_phones: int = 50
    sender_rows: int = 8_000
    sender_kills: int = 20
    receiver_kills: int = 10
    frame_examples: int = 3_000
    xml_examples: int = 6_000
    query_examples: int = 4_000
    example_timeout: float = 10.0


FULL = Sizes()
QUICK = Sizes(
    provider_rows=2_000,
    provider_max_phones=25,
    sender_rows=1_500,
    sender_kills=4,
    receiver_kills=3,
    frame_examples=300,
    xml_examples=800,
    query_examples=500,
)


@dataclass
class Figures:
    """What a scenario tried and what it lost, duplicated, crashed, hung or leaked.

    ``None`` means the figure does not apply to the scenario. ``notes`` are extra
    evidence lines; ``problems`` say what each non-zero must-be-zero figure counted.
    """

    scenario: str
    tried: int = 0
    sent_once: int | None = None
    unknown: int | None = None
    lost: int | None = None
    duplicated: int | None = None
    crashes: int | None = None
    hangs: int | None = None
    leaks: int | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: machine-readable evidence that the scenario did what it says (kills, faults...)
    evidence: dict[str, int] = field(default_factory=dict)

    def failing(self) -> list[str]:
        """The must-be-zero figures that are not 0."""
        return [name for name in MUST_BE_ZERO if (getattr(self, name) or 0) != 0]

    def problem(self, text: str, limit: int = 20) -> None:
        """Record one example of what went wrong (bounded)."""
        if len(self.problems) < limit:
            self.problems.append(text[:500])


def format_table(figures: Sequence[Figures]) -> str:
    """The figures as a fixed-width table, notes and problems below it."""
    head = [
        "scenario",
        "tried",
        "sent once",
        "unknown",
        "lost",
        "duplicated",
        "crashes",
        "hangs",
        "leaks",
        "seconds",
    ]

    def cell(value: int | None) -> str:
        return "-" if value is None else f"{value:,}"

    rows = [
        [
            f.scenario,
            f"{f.tried:,}",
            cell(f.sent_once),
            cell(f.unknown),
            cell(f.lost),
            cell(f.duplicated),
            cell(f.crashes),
            cell(f.hangs),
            cell(f.leaks),
            f"{f.seconds:.1f}",
        ]
        for f in figures
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return " | ".join([first, *rest])

    out = [line(head), "-+-".join("-" * w for w in widths), *(line(r) for r in rows)]
    for f in figures:
        for note in f.notes:
            out.append(f"  {f.scenario}: {note}")
        for problem in f.problems:
            out.append(f"  {f.scenario}: PROBLEM {problem}")
    return "\n".join(out)


# --- small tools --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Watchdog:
    """Runs calls in a worker thread under a deadline; a call past it is a hang.

    A hung worker cannot be killed: it is abandoned (daemon) and a new one takes over.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chaos-watch")

    def call(self, fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
        """``("ok", value)``, ``("error", exception)`` or ``("hang", None)``."""
        future = self._pool.submit(fn, *args)
        try:
            return "ok", future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chaos-watch")
            return "hang", None
        except Exception as exc:
            return "error", exc

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _hypothesis_settings(examples: int, seed: int) -> Callable[[Any], Any]:
    """max_examples, no deadline (hangs have their own watchdog), no database, no shrink:
    the functions record failures instead of raising, so every example runs."""
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis import seed as hseed

    def apply(fn: Any) -> Any:
        fn = settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=(Phase.explicit, Phase.generate),
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )(fn)
        return hseed(seed)(fn)

    return apply


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Silence loggers that report every refused request (thousands, by design)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _describe(exc: BaseException) -> str:
    """The exception, where it was raised, and the package's last frame on the way."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    ours = [f for f in frames if "massiva_frames" in f.filename]
    if ours and ours[-1] is not frames[-1]:
        f = ours[-1]
        where += f" from massiva_frames/{f.filename.split('massiva_frames/')[-1]}:{f.lineno}"
    return f"{type(exc).__name__}: {str(exc)[:200]}{where}"


# --- secrets ------------------------------------------------------------------------------


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


def _around(text: str, width: int = 60) -> str:
    """The part of ``text`` around the first secret core (for a problem report)."""
    at = text.lower().find(SECRET_CORE)
    return text[max(0, at - width) : at + width] if at >= 0 else text[: 2 * width]


# --- scenario 4: bad input ------------------------------------------------------------------

_SEND_OK = (
    "<respuesta><mensaje>Envio Exitoso</mensaje><status>{n}</status><telefonos>{cels}"
    "</telefonos></respuesta>"
)


def _xml_escape(value: str) -> str:
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\t", "&#9;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
    )


def _xml_legal(ch: str) -> bool:
    o = ord(ch)
    return (
        o in (0x9, 0xA, 0xD)
        or 0x20 <= o <= 0xD7FF
        or 0xE000 <= o <= 0xFFFD
        or 0x10000 <= o <= 0x10FFFF
    )


def _xml_strategy(external_url: str, external_file: str) -> Any:
    """Hostile and valid XML bodies: ``(kind, body, expected)``; ``expected`` is the
    parsed (status, [(id, num_celular, texto, status)]) for a valid document, else None."""
    from hypothesis import strategies as st

    legal_text = st.text(st.characters(codec="utf-8").filter(_xml_legal), max_size=40)
    celular = st.tuples(
        st.integers(0, 10**17), st.text("0123456789", min_size=1, max_size=14), legal_text,
        st.sampled_from([0, 2]),
    )  # fmt: skip

    @st.composite
    def valid(draw: Any) -> tuple[str, bytes | str, Any]:
        cels = draw(st.lists(celular, max_size=12))
        parts = [
            f'<celular id="{i}" sid="{num}0001" status="{s}" num_celular="{num}" '
            f'texto="{_xml_escape(t)}"/>'
            for i, num, t, s in cels
        ]
        status = draw(st.integers(-6, 10**6))
        doc = _SEND_OK.format(n=status, cels="".join(parts))
        style = draw(st.sampled_from(["bytes", "str", "decl-utf8", "bom", "latin1-decl"]))
        expected = (status, [(i, num, t, s) for i, num, t, s in cels])
        if style == "str":
            return "valid", doc, expected
        if style == "decl-utf8":
            return "valid", ('<?xml version="1.0" encoding="UTF-8"?>\n' + doc).encode(), expected
        if style == "bom":
            return "valid", b"\xef\xbb\xbf\n" + doc.encode(), expected
        if style == "latin1-decl":
            try:
                data = doc.encode("iso-8859-1")
            except UnicodeEncodeError:
                return "valid", doc.encode(), expected
            return "valid", b'<?xml version="1.0" encoding="ISO-8859-1"?>' + data, expected
        return "valid", doc.encode(), expected

    def mutate(kind: str, fn: Callable[[bytes, Any], bytes]) -> Any:
        @st.composite
        def build(draw: Any) -> tuple[str, bytes | str, Any]:
            _, body, _ = draw(valid())
            data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
            return kind, fn(data, draw), None

        return build()

    def _echo_secret(data: bytes, draw: Any) -> bytes:
        # The password echoed where the provider's message goes (a proxy or a PHP page
        # echoing the request), then the body cut anywhere but inside the password: a
        # cut password is no longer the password, and no masking can know it.
        form = draw(st.sampled_from(sorted(secret_forms(PASSWORD) - {SECRET_CORE}))).encode()
        head, _, tail = data.partition(b"Envio Exitoso")
        data = head + form + tail
        start, end = len(head), len(head) + len(form)
        cut = draw(st.one_of(st.integers(0, start), st.integers(end, len(data))))
        return data[:cut]

    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + b"".join(
            b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
            for i in range(1, 10)
        )
        + b"]><respuesta><mensaje>&lol9;</mensaje><status>1</status></respuesta>"
    )
    external = [
        f'<!DOCTYPE r [<!ENTITY x SYSTEM "{external_file}">]>'
        "<respuesta><mensaje>&x;</mensaje><status>1</status></respuesta>",
        f'<!DOCTYPE r [<!ENTITY x SYSTEM "{external_url}">]>'
        "<respuesta><mensaje>&x;</mensaje><status>1</status></respuesta>",
        f'<!DOCTYPE r [<!ENTITY % p SYSTEM "{external_url}"> %p;]>'
        "<respuesta><status>1</status></respuesta>",
        f'<!DOCTYPE respuesta SYSTEM "{external_url}"><respuesta><status>1</status></respuesta>',
        '<respuesta xmlns:xi="http://www.w3.org/2001/XInclude"><mensaje>'
        f'<xi:include href="{external_file}" parse="text"/></mensaje><status>1</status>'
        "</respuesta>",
        f'<?xml-stylesheet href="{external_url}"?><respuesta><status>1</status></respuesta>',
        "<!doctype respuesta><respuesta><status>1</status></respuesta>",
        "<!DOCTYPE\nrespuesta [<!ENTITY a 'b'>]><respuesta><status>&a;</status></respuesta>",
    ]
    wrong_root = st.sampled_from(
        [
            b"<respuestas><status>1</status></respuestas>",
            b'<respuesta xmlns="urn:x"><status>1</status></respuesta>',
            b"<soap:Envelope xmlns:soap='urn:s'><respuesta/></soap:Envelope>",
            b"<html><body>Fatal error</body></html>",
            b"<!DOCTYPE html><html><p>502 Bad Gateway</p></html>",
            b"<respuesta/>",
            b"<respuesta><status></status></respuesta>",
            b"<respuesta><status>1_000</status></respuesta>",
            "<respuesta><status>١٢</status></respuesta>".encode(),
            b"<respuesta><status>99999999999999999999999</status></respuesta>",
            b"<respuesta><status>1</status><telefonos><celular/></telefonos></respuesta>",
            b"<respuesta><status>1</status><telefonos><celular id='x' status='0'/>"
            b"</telefonos></respuesta>",
            b"<respuesta><status>1</status></respuesta><respuesta/>",
            b"",
            b"   \n\t ",
            b"\xef\xbb\xbf",
            b"\x00\x00\x00",
            b"<?xml version='1.0'?>",
        ]
    )
    charsets = ["utf-16", "utf-16-le", "utf-32", "cp500", "utf-7", "x-nonsense", "ebcdic",
                "shift_jis", "iso-2022-jp", "ascii", "latin-1", "UTF8", "cp1252", "koi8-r",
                "", "utf-8\x00"]  # fmt: skip

    @st.composite
    def wrong_charset(draw: Any) -> tuple[str, bytes | str, Any]:
        _, body, _ = draw(valid())
        text = body if isinstance(body, str) else body.decode("utf-8", "replace")
        text = text.replace('<?xml version="1.0" encoding="UTF-8"?>', "").lstrip("\ufeff\n")
        real = draw(st.sampled_from(["utf-8", "utf-16", "latin-1", "cp500", "utf-32-le"]))
        declared = draw(st.sampled_from(charsets))
        data = text.encode(real, "replace")
        decl = f'<?xml version="1.0" encoding="{declared}"?>'.encode(
            real if real != "utf-16" else "utf-16-le", "replace"
        )
        return "charset", (decl + data if draw(st.booleans()) else data), None

    huge_entities = st.integers(1, 3).map(
        lambda k: (
            "huge",
            b"<respuesta><mensaje>" + b"&amp;" * (200_000 * k) + b"</mensaje>"
            b"<status>1</status></respuesta>",
            None,
        )
    )
    deep = st.integers(100, 20_000).map(
        lambda d: ("huge", b"<respuesta>" + b"<a>" * d + b"</a>" * d + b"</respuesta>", None)
    )
    wide = st.integers(1_000, 20_000).map(
        lambda n: (
            "huge",
            b"<respuesta><status>1</status><telefonos>"
            + b'<celular id="1" sid="x" status="0" num_celular="5" texto="t"/>' * n
            + b"</telefonos></respuesta>",
            None,
        )
    )
    oversize = b"<respuesta><status>1</status>" + b" " * (9 * 1024 * 1024) + b"</respuesta>"
    return st.one_of(
        valid(),
        mutate("truncated", lambda d, draw: d[: draw(st.integers(0, max(0, len(d) - 1)))]),
        mutate(
            "garbled",
            lambda d, draw: bytes(
                draw(st.integers(0, 255)) if draw(st.integers(0, 30)) == 0 else b for b in d
            ),
        ),
        mutate("secret-echo", _echo_secret),
        wrong_root.map(lambda b: ("wrong-root", b, None)),
        st.sampled_from(external).map(lambda s: ("entities", s.encode(), None)),
        st.just(("entities", laughs, None)),
        wrong_charset(),
        # one branch for every huge body, so they stay a small share of the examples
        st.one_of(huge_entities, deep, wide, st.just(("huge", oversize, None))),
        st.binary(max_size=300).map(lambda b: ("random", b, None)),
        st.text(max_size=300).map(lambda t: ("random", t, None)),
    )


class _FetchCounter:
    """A TCP listener that counts connections: the XML parser must never fetch anything."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def fuzz_xml(examples: int, *, seed: int = 0, timeout: float = 10.0) -> Figures:
    """XML variants into ``parse_send_response`` and ``parse_credit_response``.

    A crash is any exception other than :class:`~massiva_frames.errors.ProtocolError`,
    or a valid document parsed wrong; a hang is a parse past ``timeout``; a leak is the
    password (echoed in a body) surviving in an error's message; the parser must never
    open a file or a connection (counted as crashes).
    """
    from hypothesis import given

    from massiva_frames.errors import ProtocolError
    from massiva_frames.wire.protocol import parse_credit_response, parse_send_response

    fig = Figures("bad input: XML", crashes=0, hangs=0, leaks=0)
    start = time.perf_counter()
    marker = "chaos-external-file-content"
    fetches = _FetchCounter()
    watchdog = Watchdog(timeout)
    kinds: dict[str, int] = {}
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write(marker)
        external_file = Path(fh.name).as_uri()
    strategy = _xml_strategy(f"http://127.0.0.1:{fetches.port}/x.dtd", external_file)

    def parse_both(body: bytes | str) -> list[object]:
        out: list[object] = []
        for parse in (parse_send_response, parse_credit_response):
            try:
                out.append(parse(body, http_status=200, secrets=[PASSWORD]))
            except ProtocolError as exc:
                out.append(exc)
        return out

    @_hypothesis_settings(examples, seed)
    @given(strategy)
    def run(case: tuple[str, bytes | str, Any]) -> None:
        kind, body, expected = case
        fig.tried += 1
        kinds[kind] = kinds.get(kind, 0) + 1
        outcome, value = watchdog.call(parse_both, body)
        if outcome == "hang":
            fig.hangs = (fig.hangs or 0) + 1
            fig.problem(f"hang on {kind} body of {len(body)} chars: {body[:80]!r}")
            return
        if outcome == "error":
            fig.crashes = (fig.crashes or 0) + 1
            fig.problem(f"{kind}: {_describe(value)} on {body[:120]!r}")
            return
        send_result, _credit_result = value
        text = " ".join(repr(v) + str(v) for v in value)
        if marker in text:
            fig.crashes = (fig.crashes or 0) + 1
            fig.problem(f"{kind}: an external file was read")
        leaks, _ = scan_for_secrets({"parse": text}, [PASSWORD])
        if leaks:
            fig.leaks = (fig.leaks or 0) + leaks
            fig.problem(f"{kind}: password in {_around(text)!r}")
        if expected is not None:
            status, cels = expected
            got = (
                None
                if isinstance(send_result, Exception)
                else (
                    send_result.status,  # type: ignore[attr-defined]
                    [
                        (c.id, c.num_celular, c.texto, c.status)
                        for c in send_result.celulares  # type: ignore[attr-defined]
                    ],
                )
            )
            if got != (status, cels):
                fig.crashes = (fig.crashes or 0) + 1
                fig.problem(f"valid document parsed wrong: {got!r} != {expected!r}")

    try:
        run()
    finally:
        watchdog.close()
        fetches.close()
        os.unlink(external_file.removeprefix("file://"))
    if fetches.connections:
        fig.crashes = (fig.crashes or 0) + fetches.connections
        fig.problem(f"the parser opened {fetches.connections} network connection(s)")
    fig.evidence.update(kinds)
    fig.notes.append("kinds: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    fig.seconds = time.perf_counter() - start
    return fig


#: what a receiver may answer to anything a client sends (never 500 nor 503: a hostile
#: request is the client's problem, and the service must stay up)
RECEIVER_ANSWERS = frozenset({200, 400, 403, 404, 405, 413, 414, 415, 431})


def _raw_exchange(port: int, request: bytes, timeout: float) -> tuple[int | None, bytes]:
    """Send raw bytes, half-close, read to EOF; returns (status or None, response)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(request)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        else:
            raise TimeoutError("no end of the response")
    data = b"".join(chunks)
    first = data.split(b"\r\n", 1)[0].split(b" ")
    if len(first) >= 2 and first[0].startswith(b"HTTP/") and first[1].isdigit():
        return int(first[1]), data
    return None, data


def _query_strategy(token: str) -> Any:
    """Requests for the receiver: ``(kind, request bytes, token sent right)``."""
    from hypothesis import strategies as st

    values = st.one_of(
        st.text(max_size=30),
        st.integers(-(10**20), 10**20).map(str),
        st.sampled_from(["1", "2", "0", "", " 1 ", "١", "1.0", "2014-01-01 12:10:30",
                         "2014-01--01 12:10:30", "2014-02-30 25:61:61", "+584142122268",
                         "ERROR EN ENVIO", "%", "%zz", "%C3", "%00", "a" * 2_001, "é" * 700]),
        st.text(max_size=3_000),
    )  # fmt: skip
    names = st.one_of(
        st.sampled_from(["id", "estatus", "fecha_actualizacion", "usuario", "detalle", "msg",
                         "phone", "linea", "email", "token", "ID", "Estatus", ""]),
        st.text(max_size=10),
    )  # fmt: skip

    def encode(pairs: list[tuple[str, str]], style: str) -> bytes:
        out = []
        for k, v in pairs:
            if style == "quote":
                out.append(f"{quote(k, safe='')}={quote(v, safe='')}".encode())
            elif style == "plus":
                out.append(f"{quote_plus(k)}={quote_plus(v)}".encode())
            else:
                codec = "utf-8" if style == "raw-utf8" else "latin-1"
                # Raw bytes, except what would end the parameter or the query ('#'
                # starts a fragment: what follows is not sent to the application).
                kk = k.encode(codec, "replace").replace(b"&", b"%26").replace(b"=", b"%3D")
                vv = v.encode(codec, "replace").replace(b"&", b"%26")
                out.append((kk + b"=" + vv).replace(b"#", b"%23"))
        return b"&".join(out)

    @st.composite
    def request(draw: Any) -> tuple[str, bytes, bool]:
        kind = draw(st.sampled_from(["status", "inbound", "mixed", "random", "bytes"]))
        if kind == "status":
            pairs = [("id", draw(values)), ("estatus", draw(st.sampled_from(["1", "2", "3"])))]
            pairs += draw(
                st.lists(
                    st.tuples(
                        st.sampled_from(["fecha_actualizacion", "usuario", "detalle", "id"]), values
                    ),
                    max_size=4,
                )
            )
        elif kind == "inbound":
            pairs = [("msg", draw(values)), ("phone", draw(values))]
            pairs += draw(
                st.lists(st.tuples(st.sampled_from(["linea", "email"]), values), max_size=3)
            )
        else:
            pairs = draw(st.lists(st.tuples(names, values), max_size=6))
        # Where the right token goes: the last `token` parameter wins, the header first.
        token_at = draw(st.sampled_from(["param", "header", "header", "none"]))
        if token_at == "param":
            pairs.append(("token", token))
        style = draw(st.sampled_from(["quote", "raw-utf8", "raw-latin1", "plus"]))
        query = encode(pairs, style)
        if kind == "bytes":
            query = draw(st.binary(max_size=200)).replace(b" ", b"%20").replace(b"\r", b"")
            query = query.replace(b"\n", b"")
            token_at = "none" if token_at == "param" else token_at
        if draw(st.integers(0, 19)) == 0:
            query += b"&pad=" + b"x" * draw(st.integers(8_000, 20_000))
        headers = [b"Host: 127.0.0.1"]
        if token_at == "header":
            headers.append(b"X-Massiva-Token: " + token.encode())
        method = draw(st.sampled_from([b"GET"] * 6 + [b"POST"] * 3 + [b"HEAD", b"PUT", b"X"]))
        odd_paths = [b"/recepcionsms/", b"/other", b"/health", b"//recepcionsms", b"/x%00"]
        path = draw(st.sampled_from([b"/recepcionsms"] * 8 + odd_paths))
        body = b""
        target = path + b"?" + query
        if method == b"POST" and draw(st.booleans()):
            target, body = path, query
            ctype = draw(st.sampled_from([
                b"application/x-www-form-urlencoded",
                b"application/x-www-form-urlencoded; charset=iso-8859-1",
                b"application/x-www-form-urlencoded; charset=nonsense",
                b"text/plain", b"application/json", b"multipart/form-data; boundary=x", b"",
            ]))  # fmt: skip
            if ctype:
                headers.append(b"Content-Type: " + ctype)
            if b"iso-8859-1" in ctype and style != "raw-latin1" and token_at == "param":
                token_at = "none"  # its UTF-8 bytes declared Latin-1: another token
        if body or method == b"POST":
            # Never more than is sent: a server rightly waits for the rest of a body.
            declared = len(body) + draw(st.sampled_from([0, 0, 0, -1]))
            if body and declared < len(body) and token_at == "param":
                token_at = "none"  # the body is cut: its last parameter (the token) too
            if draw(st.integers(0, 14)) == 0:
                headers.append(b"Content-Length: " + draw(st.sampled_from([b"abc", b"-1", b"1e3"])))
            else:
                headers.append(b"Content-Length: " + str(max(declared, 0)).encode())
        headers.append(b"Connection: close")
        raw = method + b" " + target + b" HTTP/1.1\r\n" + b"\r\n".join(headers) + b"\r\n\r\n"
        return kind, raw + body, token_at != "none"

    return request()


def fuzz_queries(examples: int, workdir: Path, *, seed: int = 0, timeout: float = 10.0) -> Figures:
    """Raw HTTP requests with hostile query strings and bodies into a live receiver.

    Every answer must be one of :data:`RECEIVER_ANSWERS`: a 500/503, a connection closed
    without an answer, or an answer past ``timeout`` count as crashes and hangs. The
    receiver must then still be healthy, and what it stored must compact and read back.
    """
    from hypothesis import given

    from massiva_frames.receiving import compact, read_callbacks, receiver

    fig = Figures("bad input: query strings", crashes=0, hangs=0)
    start = time.perf_counter()
    token = "tok-ñ-" + "x" * 8
    codes: dict[str, int] = {}
    logdir = workdir / "fuzz-receiver"
    with _quiet("massiva_frames.receiving"), receiver(logdir, token=token) as rc:

        @_hypothesis_settings(examples, seed)
        @given(_query_strategy(token))
        def run(case: tuple[str, bytes, bool]) -> None:
            kind, raw, authorised = case
            fig.tried += 1
            try:
                status, data = _raw_exchange(rc.port, raw, timeout)
            except TimeoutError:
                fig.hangs = (fig.hangs or 0) + 1
                fig.problem(f"no answer within {timeout} s to {raw[:150]!r}")
                return
            except OSError as exc:
                status, data = None, repr(exc).encode()
            codes[str(status)] = codes.get(str(status), 0) + 1
            callback = raw.split(b" ", 2)[1].split(b"?")[0] != b"/health"
            if status not in RECEIVER_ANSWERS:
                fig.crashes = (fig.crashes or 0) + 1
                fig.problem(f"{kind}: answered {status} {data[:120]!r} to {raw[:200]!r}")
            elif status == 403 and authorised:
                fig.crashes = (fig.crashes or 0) + 1
                fig.problem(f"{kind}: the right token was refused: {raw[:300]!r}")
            elif status == 200 and callback and not authorised:
                fig.crashes = (fig.crashes or 0) + 1
                fig.problem(f"{kind}: stored without the token: {raw[:300]!r}")

        run()
        health, body = _raw_exchange(rc.port, b"GET /health HTTP/1.0\r\n\r\n", timeout)
        if health != 200:
            fig.crashes = (fig.crashes or 0) + 1
            fig.problem(f"the receiver stopped serving: /health -> {health} {body[:200]!r}")
    try:
        compact(logdir, timeout=60)
        stored = sum(len(read_callbacks(logdir, kind)) for kind in ("status", "inbound"))
        fig.notes.append(f"stored and read back: {stored} callbacks")
    except Exception as exc:
        fig.crashes = (fig.crashes or 0) + 1
        fig.problem(f"what the receiver stored does not read back: {_describe(exc)}")
    fig.evidence.update({f"http_{k}": v for k, v in codes.items()})
    fig.notes.append("answers: " + ", ".join(f"{k} x{v}" for k, v in sorted(codes.items())))
    fig.seconds = time.perf_counter() - start
    return fig


# --- scenario 3: killed receiver -------------------------------------------------------------


class _ReceiverProcess:
    """``massiva-frames receive`` as a subprocess that can be SIGKILLed and restarted."""

    def __init__(self, logdir: Path, port: int, log: Path) -> None:
        self.cmd = [
            sys.executable, "-m", "massiva_frames.faces.cli", "receive", "--dir", str(logdir),
            "--port", str(port), "--compact-interval", "0.3",
        ]  # fmt: skip
        self.port = port
        self.log = open(log, "ab")  # noqa: SIM115 - closed in close()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the receiver exited with {self.proc.returncode}")
            with contextlib.suppress(OSError, TimeoutError):
                status, _ = _raw_exchange(self.port, b"GET /health HTTP/1.0\r\n\r\n", 1.0)
                if status == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError("the receiver did not become healthy")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def close(self) -> int | None:
        code = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
        return code


def _inbound_identity(*values: object) -> str:
    """An inbound callback's identity from (text, phone, line, email); missing is None."""
    import pandas as pd

    return "inbound:" + json.dumps([None if pd.isna(v) else str(v) for v in values])  # type: ignore[arg-type]


class _CallbackLoad:
    """Threads posting distinct callbacks (status and inbound), each resent until a 200,
    as the provider would; one in ``repeat_every`` is sent again after its 200."""

    def __init__(self, port: int, total: int, *, threads: int = 4, repeat_every: int = 10) -> None:
        self.port = port
        self.total = total
        self.repeat_every = repeat_every
        self.acked: set[str] = set()
        self.attempts = 0
        self.repeats = 0
        self.gave_up = 0
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._finish = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"chaos-load-{i}", daemon=True)
            for i in range(threads)
        ]

    @staticmethod
    def identity(n: int) -> tuple[str, dict[str, str]]:
        """The n-th callback: its identity and its parameters (GET or POST)."""
        if n % 3 == 2:
            params = {"msg": f"chaos inbound {n} ñ", "phone": "584141234567",
                      "linea": "584141000001", "email": "load@massiva.test"}  # fmt: skip
            return _inbound_identity(*params.values()), params
        mid = 900_000_000 + n
        return f"status:{mid}", {
            "id": str(mid),
            "estatus": "1" if n % 2 else "2",
            "fecha_actualizacion": "2024-06-10 08:00:00",
            "usuario": "load@massiva.test",
            "detalle": "+584142122268" if n % 2 else "ERROR EN ENVIO",
        }

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _claim(self) -> int | None:
        with self._lock:
            if self._next >= self.total or self._stop.is_set() or self._finish.is_set():
                return None
            self._next += 1
            return self._next - 1

    def _post(self, conn: http.client.HTTPConnection, n: int, params: dict[str, str]) -> bool:
        if n % 2:
            conn.request("GET", "/recepcionsms?" + urlencode(params))
        else:
            body = urlencode(params)
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            conn.request("POST", "/recepcionsms", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200

    def _deliver(self, n: int, params: dict[str, str], deadline: float) -> bool:
        conn: http.client.HTTPConnection | None = None
        try:
            while time.monotonic() < deadline and not self._stop.is_set():
                with self._lock:
                    self.attempts += 1
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    if self._post(conn, n, params):
                        return True
                    time.sleep(0.05)  # 503 (shutting down): retry later
                except (OSError, http.client.HTTPException):
                    if conn is not None:
                        conn.close()
                    conn = None
                    time.sleep(0.02)
            return False
        finally:
            if conn is not None:
                conn.close()

    def _run(self) -> None:
        while (n := self._claim()) is not None:
            ident, params = self.identity(n)
            if not self._deliver(n, params, time.monotonic() + 120):
                with self._lock:
                    self.gave_up += 1
                continue
            with self._lock:
                self.acked.add(ident)
            if n % self.repeat_every == 0 and self._deliver(n, params, time.monotonic() + 120):
                with self._lock:
                    self.repeats += 1

    @property
    def claimed(self) -> int:
        """How many distinct callbacks were started."""
        return self._next

    def finish(self) -> None:
        """Start no new callback; those under way go on until acknowledged."""
        self._finish.set()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()


def scenario_killed_receiver(sizes: Sizes, workdir: Path, *, seed: int = 0) -> Figures:
    """The receiver SIGKILLed and restarted ``sizes.receiver_kills`` times under load.

    Load: a generator posting distinct callbacks (resent until acknowledged, some sent
    again after their 200), and the sandbox delivering the status callbacks of real
    sends plus inbound messages. Figures: callbacks tried, acknowledged and stored once
    (sent once), acknowledged but not read back (lost), read back more than once
    (duplicated).
    """
    import pandas as pd

    from massiva_frames.receiving import read_callbacks
    from massiva_frames.sandbox import sandbox
    from massiva_frames.wire.client import MassivaClient

    fig = Figures("killed receiver", lost=0, duplicated=0)
    start = time.perf_counter()
    rng = random.Random(seed)
    logdir = workdir / "receiver-logs"
    port = _free_port()
    url = f"http://127.0.0.1:{port}/recepcionsms"
    rp = _ReceiverProcess(logdir, port, workdir / "receiver.log")
    load = _CallbackLoad(port, 10**7)  # posts until the kills are over
    sb_ctx = sandbox(
        usuario=USUARIO, clave="chaos", credits=10**6, status_url=url, inbound_url=url,
        callback_delay=0.05, fail_ratio=0.3, reply_ratio=0.2, seed=seed,
        callback_attempts=60, callback_workers=4,
    )  # fmt: skip
    kills = 0
    with sb_ctx as sb, MassivaClient(USUARIO, "chaos", sb.base_url, timeout=10) as client:
        try:
            rp.start()
            load.start()
            phones = [f"58414{n:07d}" for n in range(50)]
            batches = 0
            while kills < sizes.receiver_kills:
                # Real sends (their status callbacks) and inbound messages between kills.
                client.send_batch(phones, f"chaos receiver batch {batches}")
                sb.send_inbound("584161234567", f"chaos sandbox inbound {batches}")
                batches += 1
                time.sleep(rng.uniform(0.2, 1.0))
                rp.kill()
                kills += 1
                time.sleep(rng.uniform(0.0, 0.3))  # down for a moment: senders retry
                rp.start()
            load.finish()
            load.join(timeout=300)
            sb.wait_callbacks(timeout=120)
        finally:
            load.join(timeout=0)
            code = rp.close()
        callbacks = sb.callbacks()
    if code != 0:
        fig.problem(f"the receiver's clean stop exited with {code}")
    status = read_callbacks(logdir, "status")
    inbound = read_callbacks(logdir, "inbound")
    # Identities: a status callback by its message id; an inbound one by all its fields
    # (two replies may share a text; the receiver itself drops exact repeats only).
    read_ids = [f"status:{m}" for m in status["message_id"].astype("Int64").astype(str)]
    read_ids += [
        _inbound_identity(*values)
        for values in inbound[["text", "phone", "line", "email"]]
        .astype(object)
        .itertuples(index=False)
    ]
    counts = pd.Series(read_ids, dtype="string").value_counts()
    # Acknowledged by the sandbox: a 200 on some attempt.
    sb_acked = callbacks[callbacks["delivered"]]
    sb_ids = {
        f"status:{p['id']}"
        if kind == "status"
        else _inbound_identity(p["msg"], p["phone"], p.get("linea"), p.get("email"))
        for kind, p in zip(sb_acked["kind"], sb_acked["params"], strict=True)
    }
    acked = load.acked | sb_ids
    fig.tried = load.claimed + len(callbacks)
    missing = [a for a in acked if a not in counts.index]
    fig.lost = len(missing)
    fig.duplicated = int((counts > 1).sum())
    fig.sent_once = int(sum(1 for a in acked if counts.get(a, 0) == 1))
    for m in missing[:5]:
        fig.problem(f"acknowledged, not stored: {m}")
    given_up = int(callbacks["gave_up"].sum()) + load.gave_up
    fig.evidence.update(
        kills=kills, acknowledged=len(acked), sandbox_acknowledged=len(sb_ids),
        sent_again=load.repeats,
    )  # fmt: skip
    fig.notes.append(
        f"{kills} SIGKILLs, {rp.starts} starts; {len(acked)} acknowledged "
        f"({len(load.acked)} load, {len(sb_ids)} sandbox), {load.repeats} sent again after "
        f"their 200, {load.attempts + int(callbacks['attempts'].sum())} HTTP attempts; "
        f"never acknowledged (so free to be missing): {fig.tried - len(acked)}, of which "
        f"{given_up} given up by their sender"
    )
    fig.seconds = time.perf_counter() - start
    return fig


# --- scenario 5: secrets -------------------------------------------------------------------


class _EchoServer:
    """A hostile server in front of the API: echoes the request (URL and body, password
    included) back in an HTML error page, a text page, a redirect or the XML message."""

    def __init__(self) -> None:
        import html
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("latin-1") if length else ""
                echo = f"{self.command} {self.path} {body}"
                mode = self.path.split("/")[1]
                status, ctype, extra = 200, "text/html", []
                if mode == "html500":
                    status, page = 500, f"<html><body><pre>{html.escape(echo)}</pre></body></html>"
                elif mode == "text":
                    ctype, page = "text/plain", f"Warning: bad request {echo}"
                elif mode == "redirect":
                    status, page = 302, f"moved: {echo}"
                    extra = [("Location", f"http://127.0.0.1/elsewhere?{body}{self.path}")]
                elif mode == "xml":
                    ctype = "text/xml"
                    page = (
                        f"<respuesta><mensaje>{html.escape(echo)}</mensaje><status>-1</status>"
                        f"<creditos>-1</creditos></respuesta>"
                    )
                else:  # xml-cut: the same, cut (not well-formed)
                    ctype = "text/xml"
                    page = f"<respuesta><mensaje>{html.escape(echo)}</mensaje><status>"
                data = page.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))
        self._thread.daemon = True
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@contextlib.contextmanager
def _captured_logs(path: Path) -> Iterator[io.StringIO]:
    """Every logger at DEBUG into a string and a file, as a user debugging would."""
    root = logging.getLogger()
    stream = io.StringIO()
    handlers: list[logging.Handler] = [
        logging.StreamHandler(stream),
        logging.FileHandler(path, encoding="utf-8"),
    ]
    fmt = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    old_level = root.level
    for h in handlers:
        h.setFormatter(fmt)
        h.setLevel(logging.DEBUG)
        root.addHandler(h)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()
        root.setLevel(old_level)


def _exception_texts(label: str, exc: BaseException) -> dict[str, str]:
    """Everything a program or a notebook may show of an exception."""
    import pickle

    texts = {
        f"{label}: str": str(exc),
        f"{label}: repr": repr(exc),
        f"{label}: args": repr(exc.args),
        f"{label}: vars": repr(vars(exc)),
        f"{label}: traceback": "".join(traceback.format_exception(exc)),
    }
    with contextlib.suppress(Exception):
        texts[f"{label}: pickle"] = pickle.dumps(exc).decode("latin-1")
    return texts


def _run_cli(args: Sequence[str], env: dict[str, str], timeout: float = 120) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "massiva_frames.faces.cli", *args],
        capture_output=True,
        env=env,
        timeout=timeout,
        cwd=env.get("CHAOS_CWD"),
    )
    # Only what the program printed: the arguments are the caller's (some hold the
    # password on purpose, to see that the program does not repeat it).
    return (
        f"exit {proc.returncode}\n"
        + proc.stdout.decode("utf-8", "replace")
        + proc.stderr.decode("utf-8", "replace")
    )


def _client_calls(
    sb: Any, echo_port: int, artifacts: dict[str, str | bytes], caught: list[BaseException]
) -> int:
    """Client calls that succeed and fail in every way; returns how many were made."""
    from massiva_frames.wire.client import MassivaClient

    calls = 0

    def attempt(label: str, fn: Callable[[], object]) -> None:
        nonlocal calls
        calls += 1
        try:
            artifacts[f"{label}: result"] = repr(fn())
        except Exception as exc:
            artifacts.update(_exception_texts(label, exc))
            caught.append(exc)

    phones = ["584141234567", "584241234568"]
    faults: list[tuple[str, dict[str, Any]]] = [
        ("http500", {}), ("http502", {"before": True}), ("http503", {}),
        ("http503", {"retry_after": 0}), ("http429", {"retry_after": 0}), ("reset", {}),
        ("reset", {"before": True}), ("hang", {}), ("truncated", {}), ("html", {}),
        ("latency", {"seconds": 2.0}),
    ]  # fmt: skip
    for method in ("POST", "GET"):
        client = MassivaClient(
            USUARIO, PASSWORD, sb.base_url, method=method, timeout=(1.0, 1.0), max_refusals=1,
            backoff_factor=0.01,
        )  # fmt: skip
        artifacts[f"client {method}: repr"] = repr(client) + str(client) + repr(vars(client))
        attempt(f"{method} credits", client.credits)
        attempt(f"{method} send", lambda c=client: c.send_batch(phones, "Hola"))
        for fault, opts in faults:
            sb.inject(fault, count=2, **opts)
            attempt(f"{method} send {fault} {opts}", lambda c=client: c.send_batch(phones, "x"))
            sb.clear_faults()
            sb.inject(fault, count=2, **opts)
            attempt(f"{method} credits {fault} {opts}", client.credits)
            sb.clear_faults()
        many = [f"58414{n:07d}" for n in range(300)]
        attempt(f"{method} URL too long", lambda c=client, m=many: c.send_batch(m, "x"))
        attempt(f"{method} url length", lambda c=client: c.get_url_length(phones, "x"))
        for mode in ("html500", "text", "redirect", "xml", "xml-cut"):
            with MassivaClient(
                USUARIO, PASSWORD, f"http://127.0.0.1:{echo_port}/{mode}", method=method
            ) as echo:
                attempt(f"{method} echo {mode} send", lambda c=echo: c.send_batch(phones, "x"))
                attempt(f"{method} echo {mode} credits", echo.credits)
        client.close()
    with MassivaClient(USUARIO, WRONG_PASSWORD, sb.base_url) as wrong:
        attempt("wrong password credits", wrong.credits)
        attempt("wrong password send", lambda: wrong.send_batch(phones, "x"))
    closed = f"http://127.0.0.1:{_free_port()}/webservices"
    with MassivaClient(USUARIO, PASSWORD, closed, connect_retries=1, backoff_factor=0.01) as gone:
        attempt("connect error", gone.credits)
    with MassivaClient(USUARIO, PASSWORD, sb.base_url, encoding="ascii") as ascii_client:
        attempt("unencodable password", ascii_client.credits)
    for bad in (f"http://{USUARIO}:{quote(PASSWORD)}@127.0.0.1/ws", f"ftp://x/{PASSWORD}"):
        attempt("bad base_url", lambda b=bad: MassivaClient(USUARIO, PASSWORD, b))
    attempt("bad timeout", lambda: MassivaClient(USUARIO, PASSWORD, sb.base_url, timeout=-1))
    return calls


def scenario_secrets(
    sizes: Sizes, workdir: Path, *, seed: int = 0, send_parts: bool = True
) -> Figures:
    """A run with failures of every kind, everything it shows or writes scanned for the
    password (and a wrong one): results, exceptions, logs, CLI output, files, widgets.

    ``tried`` counts the calls made and the artifacts scanned are listed in the notes.
    """
    from massiva_frames.sandbox import sandbox

    fig = Figures("secrets", leaks=0, crashes=0)
    start = time.perf_counter()
    artifacts: dict[str, str | bytes] = {}
    caught: list[BaseException] = []
    echo = _EchoServer()
    log_path = workdir / "debug.log"
    env = {
        **os.environ,
        "MASSIVA_USUARIO": USUARIO,
        "MASSIVA_CLAVE": PASSWORD,
        "PYTHONIOENCODING": "utf-8",
        "CHAOS_CWD": str(workdir),
    }
    try:
        with (
            _captured_logs(log_path) as logs,
            sandbox(usuario=USUARIO, clave=PASSWORD, credits=10**6, hang_seconds=3) as sb,
        ):
            fig.tried += _client_calls(sb, echo.port, artifacts, caught)
            env["MASSIVA_BASE_URL"] = sb.base_url
            cli_runs: list[tuple[list[str], dict[str, str]]] = [
                (["credits"], env),
                (["credits", "--timeout", "1"], env),
                (["credits"], {**env, "MASSIVA_CLAVE": WRONG_PASSWORD}),
                (["credits", "--base-url", f"http://127.0.0.1:{echo.port}/text"], env),
                (["credits", "--base-url", f"http://127.0.0.1:{echo.port}/xml-cut"], env),
                (["credits", "--base-url", f"http://{USUARIO}:{PASSWORD}@127.0.0.1:1/"], env),
            ]
            for i, (args, run_env) in enumerate(cli_runs):
                if i == 1:
                    sb.inject("hang", count=1)
                artifacts[f"cli {i} {args[0]}"] = _run_cli(args, run_env)
                sb.clear_faults()
                fig.tried += 1
            if send_parts:
                fig.tried += _send_calls(sb, workdir, env, artifacts)
            artifacts["sandbox records"] = sb.requests().to_csv() + sb.messages().to_csv()
        artifacts["logs"] = logs.getvalue()
    finally:
        echo.close()
    for path in sorted(workdir.rglob("*")):
        if path.is_file():
            artifacts[f"file {path.relative_to(workdir)}"] = path.read_bytes()
    fig.leaks, where = scan_for_secrets(artifacts, [PASSWORD, WRONG_PASSWORD])
    for w in where:
        name = w.rsplit(" (", 1)[0]
        content = artifacts.get(name, "")
        text = content if isinstance(content, str) else content.decode("latin-1")
        fig.problem(f"password in {w}: ...{_around(text)!r}...")
    fig.evidence.update(artifacts=len(artifacts), log_chars=len(artifacts["logs"]))
    # Outside the guarantee, measured for the record: a debugger or error tracker that
    # prints every frame's local variables. The request the client builds is masked there
    # (tests/test_secret_locals.py); what it did not build may still show the password.
    with_locals: dict[str, str | bytes] = {}
    for i, exc in enumerate(caught):
        try:
            tb = traceback.TracebackException.from_exception(exc, capture_locals=True)
            with_locals[f"locals {i}"] = "".join(tb.format())
        except Exception as err:  # a repr that raises breaks every such tool
            fig.crashes = (fig.crashes or 0) + 1
            fig.problem(f"formatting a traceback with locals failed: {_describe(err)}")
    in_locals, where_locals = scan_for_secrets(with_locals, [PASSWORD, WRONG_PASSWORD])
    fig.evidence.update(in_frame_locals=in_locals)
    fig.notes.append(
        f"not counted: tracebacks printed with every frame's locals (capture_locals, "
        f"%xmode Verbose): {in_locals} occurrences in {len(where_locals)} of {len(caught)} "
        "client exceptions (response bodies that echo the request, base_url arguments that "
        "carry the password)"
    )
    fig.notes.append(f"{len(artifacts)} artifacts scanned, {len(artifacts['logs'])} log chars")
    fig.seconds = time.perf_counter() - start
    return fig


def _widget_text(widget: Any) -> str:
    """Every trait value of a widget tree (HTML, labels, values), as a notebook shows it."""
    parts = []
    todo = [widget]
    seen: set[int] = set()
    while todo and len(seen) < 10_000:
        w = todo.pop()
        if id(w) in seen:
            continue
        seen.add(id(w))
        with contextlib.suppress(Exception):
            parts.append(json.dumps(w.get_state(), default=repr, ensure_ascii=False))
        todo += list(getattr(w, "children", ()) or ())
    return "\n".join(parts)


def _frame_texts(label: str, frame: Any) -> dict[str, str]:
    """A results frame as a notebook or a report shows it."""
    return {
        f"{label}: repr": repr(frame),
        f"{label}: string": frame.to_string(),
        f"{label}: html": frame.to_html(),
        f"{label}: csv": frame.to_csv(),
        f"{label}: json": frame.to_json(default_handler=str, date_format="iso"),
        f"{label}: attrs": json.dumps(frame.attrs, default=repr, ensure_ascii=False),
    }


def _send_calls(
    sb: Any, workdir: Path, env: dict[str, str], artifacts: dict[str, str | bytes]
) -> int:
    """The send path's share of the secrets scenario: send with faults (POST and GET,
    whose URLs carry the password), a refused account, results, journal, the CLI's send,
    dispatch and validate, the accessor, and the send widget with a good and a wrong
    password."""
    import sqlite3

    from massiva_frames.sending.campaign import dispatch, results_from_journal, send
    from massiva_frames.wire.client import MassivaClient

    calls = 0
    df = campaign(240, seed=5)
    faults = ("http500", "reset", "hang", "truncated", "html", "http503")
    stderr = io.StringIO()
    for method in ("POST", "GET"):
        journal = workdir / f"send-{method}.db"
        with MassivaClient(
            USUARIO, PASSWORD, sb.base_url, method=method, timeout=(1.0, 1.0)
        ) as client:
            for i, fault in enumerate(faults):
                sb.inject(fault, ratio=0.1, seed=i)
            with contextlib.redirect_stderr(stderr):
                results = send(
                    df, client=client, phone="telefono", text="mensaje", journal=journal,
                    max_phones=10, concurrency=2, progress=True,
                )  # fmt: skip
            sb.clear_faults()
            calls += 1
            artifacts.update(_frame_texts(f"send {method}", results))
            results.to_parquet(workdir / f"results-{method}.parquet", compression=None)
            artifacts.update(_frame_texts(f"journal {method}", results_from_journal(journal)))
            artifacts[f"journal {method} dump"] = "\n".join(sqlite3.connect(journal).iterdump())
            sb.set_credits(0)
            try:
                dispatch(journal, client=client)
                send(df, client=client, phone="telefono", text="mensaje", journal=journal,
                     resend_unknown=True, progress=False)  # fmt: skip
            except Exception as exc:
                artifacts.update(_exception_texts(f"send {method} no credits", exc))
                frame = getattr(exc, "results", None)
                if frame is not None:
                    artifacts.update(_frame_texts(f"send {method} no credits results", frame))
            sb.set_credits(10**6)
            calls += 2
    with MassivaClient(USUARIO, WRONG_PASSWORD, sb.base_url) as wrong:
        for dry_run in (False, True):
            try:
                res = send(df, client=wrong, phone="telefono", text="mensaje",
                           dry_run=dry_run, progress=False)  # fmt: skip
                artifacts.update(_frame_texts(f"wrong password dry={dry_run}", res))
            except Exception as exc:
                artifacts.update(_exception_texts(f"wrong password dry={dry_run}", exc))
            calls += 1
        try:
            import massiva_frames.faces.accessor  # noqa: F401 - registers df.massiva

            res = df.massiva.send(client=wrong, phone="telefono", text="mensaje", progress=False)
            artifacts.update(_frame_texts("accessor", res))
        except Exception as exc:
            artifacts.update(_exception_texts("accessor", exc))
        calls += 1
    artifacts["progress bars"] = stderr.getvalue()
    calls += _widget_calls(sb, df, workdir, artifacts)
    # The CLI: send (with faults), dispatch, validate; credentials from the environment.
    data = workdir / "campaign.csv"
    df.to_csv(data)
    cli_journal = workdir / "cli.db"
    common = ["--phone", "telefono", "--text", "mensaje", "--max-phones", "20"]
    sb.inject("html", ratio=0.3, seed=7)
    sb.inject("reset", ratio=0.2, seed=8)
    cli = [
        (["send", str(data), *common, "--out", str(workdir / "cli.parquet"),
          "--journal", str(cli_journal)], env),
        (["send", str(data), *common, "--out", str(workdir / "cli-get.csv"), "--method", "GET"],
         env),
        (["dispatch", "--journal", str(cli_journal)], env),
        (["send", str(data), *common, "--out", str(workdir / "cli-wrong.csv")],
         {**env, "MASSIVA_CLAVE": WRONG_PASSWORD}),
        (["send", str(data), *common, "--out", str(workdir / "cli-dry.csv"), "--dry-run"],
         {**env, "MASSIVA_CLAVE": WRONG_PASSWORD}),
        (["validate", str(data), "--phone", "telefono", "--text", "mensaje"], env),
    ]  # fmt: skip
    for i, (args, run_env) in enumerate(cli):
        artifacts[f"cli send {i} {args[0]}"] = _run_cli(args, run_env)
        calls += 1
    sb.clear_faults()
    return calls


def _widget_calls(sb: Any, df: Any, workdir: Path, artifacts: dict[str, str | bytes]) -> int:
    """The send widget driven as a user would: good password with faults, wrong one."""
    try:
        from massiva_frames.faces.widgets import SendWidget
    except ImportError:
        return 0
    from massiva_frames.wire.client import MassivaClient

    calls = 0
    for label, password in (("good", PASSWORD), ("wrong", WRONG_PASSWORD)):
        with MassivaClient(USUARIO, password, sb.base_url, timeout=(1.0, 1.0)) as client:
            try:
                w = SendWidget(
                    df, client, phone="telefono", text="mensaje",
                    journal=workdir / f"widget-{label}.db",
                )  # fmt: skip
                sb.inject("truncated", ratio=0.3, seed=3)
                w.refresh_credits_button.click()
                w.send_button.click()
                w.confirm_button.click()
                sb.clear_faults()
                w.save_path.value = str(workdir / f"widget-{label}.parquet")
                w.save_button.click()
                artifacts[f"widget {label}"] = _widget_text(w)
                if w.results is not None:
                    artifacts.update(_frame_texts(f"widget {label} results", w.results))
            except Exception as exc:
                artifacts.update(_exception_texts(f"widget {label}", exc))
            calls += 1
    return calls


# --- scenarios 1 and 2: the send path -------------------------------------------------------

#: the states a row may end in once a send is over (DESIGN.md); `scheduled` is not one
TERMINAL = frozenset({"accepted", "rejected", "unknown", "invalid", "suppressed"})
_OPERATORS = ("412", "414", "416", "424", "426")


def campaign(rows: int, *, seed: int = 0) -> Any:
    """``rows`` distinct valid recipients in messy formats, one text each (1 in 10 rows
    share a promotional text): every (phone, text) is distinct, so the sandbox's record
    shows any message accepted twice. The index is a string label, not 0..n-1."""
    import pandas as pd

    rng = random.Random(seed)
    phones, texts = [], []
    for i in range(rows):
        op, number = _OPERATORS[i % 5], 1_000_000 + i
        shape = rng.randrange(4)
        phones.append(
            [f"0{op}-{number}", f"+58 {op} {number}", f"58{op}{number}", f"{op}{number}"][shape]
        )
        texts.append("Promo fin de semana: 2x1" if i % 10 == 0 else f"Hola #{i}, saldo {i % 997}")
    index = pd.Index([f"cliente-{i}" for i in range(rows)], name="cliente")
    return pd.DataFrame({"telefono": phones, "mensaje": texts}, index=index)


def _send_figures(fig: Figures, df: Any, results: Any, messages: Any) -> None:
    """Compare a send's results with the sandbox's record of what it accepted.

    lost: an input row missing from the results, in no terminal state, ``accepted``
    without its message in the record (or with another phone/text), or in the record
    while its row says it was never sent (a re-run would send it again).
    duplicated: a (phone, text) the sandbox accepted more than once.
    """
    import pandas as pd

    fig.tried = len(df)
    missing = df.index.difference(results.index)
    extra = len(results) - len(df)
    states = results["state"].astype("string")
    open_rows = results.index[~states.isin(list(TERMINAL))]
    record = messages.assign(pair=messages["phone"].astype(str) + "\x1f" + messages["text"])
    times = record["pair"].value_counts()
    by_id = record.set_index("id")
    pair = results["phone"].astype("string") + "\x1f" + results["text"].astype("string")
    accepted = results[states == "accepted"]
    wrong_id = 0
    for label, mid, p in zip(
        accepted.index, accepted["message_id"], pair[states == "accepted"], strict=True
    ):
        if pd.isna(mid) or int(mid) not in by_id.index:
            wrong_id += 1
            fig.problem(f"{label}: accepted, message id {mid} not in the sandbox")
        elif by_id.loc[int(mid), "pair"] != p:
            wrong_id += 1
            fig.problem(f"{label}: message {mid} is another phone/text")
    in_record = pair.isin(times.index)
    said_unsent = results.index[in_record & states.isin(["scheduled", "invalid", "rejected"])]
    for label in list(missing[:3]) + list(open_rows[:3]) + list(said_unsent[:3]):
        fig.problem(f"{label}: lost ({states.get(label, 'missing')})")
    fig.lost = len(missing) + max(extra, 0) + len(open_rows) + wrong_id + len(said_unsent)
    # DESIGN.md: every row comes back "with a state and, unless accepted, a reason".
    reasonless = results.index[(states != "accepted") & results["reason"].isna()]
    fig.crashes = (fig.crashes or 0) + len(reasonless)
    for label in list(reasonless[:3]):
        fig.problem(f"{label}: {states[label]} without a reason")
    fig.duplicated = int((times > 1).sum())
    once = pair.map(times).fillna(0) == 1
    fig.sent_once = int(((states == "accepted") & once).sum())
    unknown = states == "unknown"
    fig.unknown = int(unknown.sum())
    delivered = int((unknown & in_record).sum())
    fig.evidence.update(unknown_delivered=delivered, unknown_not_delivered=fig.unknown - delivered)
    counts = ", ".join(f"{s} {n}" for s, n in states.value_counts().items() if n)
    fig.notes.append(
        f"states: {counts}; unknown rows actually accepted by the provider: {delivered}, "
        f"not accepted: {fig.unknown - delivered}"
    )
    if fig.duplicated:
        for p in list(times[times > 1].index[:3]):
            fig.problem(f"accepted {times[p]} times: {p!r}")


def scenario_faulty_provider(sizes: Sizes, workdir: Path, *, seed: int = 0) -> Figures:
    """``sizes.provider_rows`` rows through a sandbox injecting faults by ratio, then the
    same call re-run on the same journal until no row is left to send.

    Faults (share of requests): 500 after processing, 502 before, 503 without and with
    Retry-After, 429, connection reset after and before processing, accept-then-hang,
    truncated XML, an HTML page. ``resend_unknown`` stays False; afterwards a
    ``resend_unknown=True`` run shows the duplicates the user would opt into.
    """
    from massiva_frames.sandbox import sandbox
    from massiva_frames.sending.campaign import send
    from massiva_frames.wire.client import MassivaClient

    fig = Figures("faulty provider", crashes=0)
    start = time.perf_counter()
    df = campaign(sizes.provider_rows, seed=seed)
    journal = workdir / "provider.db"
    faults: list[tuple[str, float, dict[str, Any]]] = [
        ("http500", 0.02, {}), ("http502", 0.01, {"before": True}), ("http503", 0.02, {}),
        ("http503", 0.03, {"retry_after": 0}), ("http429", 0.08, {"retry_after": 0}),
        ("reset", 0.02, {}), ("reset", 0.01, {"before": True}), ("hang", 0.01, {}),
        ("truncated", 0.02, {}), ("html", 0.02, {}),
    ]  # fmt: skip
    options = dict(
        text="mensaje", phone="telefono", journal=journal, progress=False, concurrency=4,
        max_phones=sizes.provider_max_phones,
    )  # fmt: skip
    runs = 0
    with (
        _quiet("massiva_frames.sending.loop", "massiva_frames.sending.campaign"),
        sandbox(usuario=USUARIO, clave=PASSWORD, credits=10**7, hang_seconds=5, seed=seed) as sb,
    ):
        for i, (name, ratio, opts) in enumerate(faults):
            sb.inject(name, ratio=ratio, seed=seed * 100 + i, **opts)
        # max_refusals=1: some 429s exhaust the waits, their rows stay scheduled
        # (not_sent_rate_limited) and the re-runs send them.
        client = MassivaClient(
            USUARIO, PASSWORD, sb.base_url, timeout=(1.0, 2.0), max_refusals=1, backoff_factor=0.01
        )
        with client:
            results = send(df, client=client, **options)  # type: ignore[arg-type]
            runs += 1
            first = results["state"].astype("string").value_counts().to_dict()
            fault_counts = sb.requests()["fault"].value_counts().to_dict()
            sb.clear_faults()
            while (results["state"] == "scheduled").any() and runs < 6:
                results = send(df, client=client, **options)  # type: ignore[arg-type]
                runs += 1
            _send_figures(fig, df, results, sb.messages())
            # Evidence the duplicate count can see duplicates: the user opts in.
            before = len(sb.messages())
            again = send(df, client=client, resend_unknown=True, **options)  # type: ignore[arg-type]
            record = sb.messages()
            dups = int((record.groupby(["phone", "text"]).size() > 1).sum())
    fig.evidence.update(
        faults_fired=int(sum(fault_counts.values())),
        runs=runs,
        resent=len(record) - before,
        duplicates_when_resending=dups,
    )
    fig.notes.insert(0, f"first run: {first}; faults fired: {fault_counts}; {runs} runs")
    fig.notes.append(
        f"then resend_unknown=True: {len(record) - before} messages resent, {dups} (phone, "
        f"text) now accepted twice (expected: the unknown rows the provider had accepted); "
        f"states after: {again['state'].astype('string').value_counts().to_dict()}"
    )
    fig.seconds = time.perf_counter() - start
    return fig


def _worker_send(args: argparse.Namespace) -> int:
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
            sys.executable, str(Path(__file__).resolve()), "--worker", "send",
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
        _send_figures(fig, df, results, sb.messages())
    fig.evidence.update(kills=kills, starts=starts)
    fig.notes.insert(
        0, f"{kills} SIGKILLs over {starts} starts; exit codes {exit_codes[-3:]} at the end"
    )
    if exit_codes[-1] not in (0, 3):
        fig.crashes = 1
        fig.problem(f"the last run exited {exit_codes[-1]} (see sender.log)")
    fig.seconds = time.perf_counter() - start
    return fig


# --- scenario 4: DataFrames ----------------------------------------------------------------


def _frame_strategy() -> Any:
    """Hostile DataFrames: ``(frame, options)`` with a phone and a text column of any
    dtype and content, odd indexes, colliding column names, and validate options."""
    import datetime as dt
    import decimal
    import warnings

    import numpy as np
    import pandas as pd
    from hypothesis import strategies as st

    texts = st.one_of(
        st.text(max_size=30),
        st.text(max_size=400),
        st.sampled_from(["Hola", "a|b", "x;y", "é" * 161, "🙂" * 80, "\x00", "\r\n", " ", "",
                         "{nombre}", "%s", "\ud800", "Ω" * 70, "a" * 10_000]),
    )  # fmt: skip
    phones = st.one_of(
        st.sampled_from(["04141234567", "+58 414-123.45.67", "584141234567", "4141234567",
                         "02121234567", "5.84141E+11", "0414 123 4567 ext 2", "٠٤١٤١٢٣٤٥٦٧",
                         "58414123456789012345", "+1 212 555 0100", "", " ", "nan", "None"]),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
    )  # fmt: skip
    anything = st.one_of(
        st.none(), st.just(float("nan")), st.just(pd.NA), st.just(pd.NaT), st.booleans(),
        st.just(np.int64(584141234567)), st.just(np.float32(4.141234e9)),
        st.just(decimal.Decimal("584141234567")), st.just(b"04141234567"),
        st.just(dt.datetime(2024, 1, 1)), st.just(["04141234567"]), st.just({"a": 1}),
        st.just(complex(1, 2)), st.just(object()),
    )  # fmt: skip
    dtypes = st.sampled_from([None, "object", "string", "category", "str"])

    @st.composite
    def frame(draw: Any) -> tuple[Any, dict[str, Any]]:
        n = draw(st.integers(0, 25))
        phone_values = draw(st.lists(st.one_of(phones, anything), min_size=n, max_size=n))
        text_values = draw(st.lists(st.one_of(texts, anything), min_size=n, max_size=n))
        kind = draw(st.sampled_from(["range", "dup", "str", "dt", "multi", "float"]))
        if kind == "dup":
            index: Any = pd.Index([i % 3 for i in range(n)])
        elif kind == "str":
            index = pd.Index([f"r{i}" for i in range(n)], name="cliente")
        elif kind == "dt":
            index = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC")
        elif kind == "multi":
            index = pd.MultiIndex.from_tuples([(i % 2, i) for i in range(n)], names=["a", "b"])
        elif kind == "float":
            index = pd.Index([i / 2 for i in range(n)])
        else:
            index = pd.RangeIndex(n)
        template = draw(st.integers(0, 3)) == 0
        text_name = "nombre" if template else draw(st.sampled_from(["text", "mensaje"]))
        columns: dict[Any, Any] = {"phone": phone_values, text_name: text_values}
        # Now and then a column validate() would have to overwrite: a clear InputError.
        extra = draw(st.sampled_from([None] * 12 + ["state", "valid", "phone_input", 0]))
        if extra is not None:
            columns[extra] = list(range(n))
        try:
            df = pd.DataFrame(columns, index=index)
        except UnicodeEncodeError:  # a lone surrogate cannot be an Arrow string
            df = pd.DataFrame(columns, index=index, dtype=object)
        for col in ("phone", text_name):
            dtype = draw(dtypes)
            if dtype is not None:
                with contextlib.suppress(Exception), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # casting huge numbers: pandas warns
                    df[col] = df[col].astype(dtype)
        options: dict[str, Any] = {
            "long_text": draw(st.sampled_from(["error", "truncate", "split"])),
            "transliterate": draw(st.booleans()),
            "dedupe": draw(st.sampled_from(["phone+text", "phone", None])),
        }
        if draw(st.booleans()):
            options["suppress"] = draw(st.sampled_from([["04141234567"], [], [None, 1.5]]))
        # send()'s own options (only send() sees the keys starting with "send:").
        send_options = {
            "method": draw(st.sampled_from([None, "GET", "POST"])),
            "max_phones": draw(st.sampled_from([500, 1, 3])),
            "send_at": draw(st.sampled_from([None, None, "2024-01-01 10:00", "2999-01-01",
                                             "mañana", "phone", pd.Timestamp("2024-01-01")])),
            "window": draw(st.sampled_from([None, None, ("08:00", "20:00"), ("20:00", "08:00"),
                                            ("25:00", "x")])),
            "campaign": draw(st.sampled_from([None, "enero", ""])),
            "key": draw(st.sampled_from([None, None, "phone"])),
        }  # fmt: skip
        options.update({f"send:{k}": v for k, v in send_options.items()})
        if template:
            options["template"] = draw(
                st.sampled_from(["Hola {nombre}", "{nombre:>5}", "{nombre!r}", "{0}", "{x}", "{"])
            )
        else:
            options["text"] = text_name
        return df, options

    return frame()


def fuzz_frames(examples: int, *, seed: int = 0, timeout: float = 10.0) -> Figures:
    """Hostile DataFrames into ``validate`` and ``send(dry_run=True)``.

    Either a frame comes back — same index, every row with a state, every row not
    ready/scheduled with a reason — or a :class:`~massiva_frames.errors.MassivaError`
    (a wrong argument) is raised. Anything else is a crash (DESIGN.md: "never a
    traceback from deep inside pandas or lxml"); a call past ``timeout`` is a hang.
    """
    import warnings

    from hypothesis import given

    from massiva_frames.errors import MassivaError
    from massiva_frames.prepare.validation import validate
    from massiva_frames.sending.campaign import send

    fig = Figures("bad input: DataFrames", crashes=0, hangs=0)
    start = time.perf_counter()
    watchdog = Watchdog(timeout)
    outcomes: dict[str, int] = {}
    crash_kinds: dict[str, int] = {}

    def check(df: Any, options: dict[str, Any]) -> str:
        only_send = {k[5:]: options.pop(k) for k in list(options) if k.startswith("send:")}
        out = validate(df, phone="phone", **options)
        problems = _frame_problems(df, out, ok_states=("ready",))
        res = send(df, phone="phone", dry_run=True, progress=False, **options, **only_send)
        problems += _frame_problems(df, res, ok_states=("accepted",))
        if problems:
            raise AssertionError("; ".join(problems))
        return "frame"

    def guarded(df: Any, options: dict[str, Any]) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning from pandas is a crash too
            try:
                return check(df, dict(options))
            except MassivaError as exc:
                return type(exc).__name__

    @_hypothesis_settings(examples, seed)
    @given(_frame_strategy())
    @_frame_examples()
    def run(case: tuple[Any, dict[str, Any]]) -> None:
        df, options = case
        fig.tried += 1
        outcome, value = watchdog.call(guarded, df, options)
        if outcome == "hang":
            fig.hangs = (fig.hangs or 0) + 1
            fig.problem(f"hang on {options} {df.head(3).to_dict()!r}")
        elif outcome == "error":
            fig.crashes = (fig.crashes or 0) + 1
            what = _describe(value)
            if what not in crash_kinds:
                fig.problem(f"{what} on {options} {df.head(3).to_dict()!r}")
            crash_kinds[what] = crash_kinds.get(what, 0) + 1
        else:
            outcomes[value] = outcomes.get(value, 0) + 1

    try:
        run()
    finally:
        watchdog.close()
    fig.evidence.update(outcomes)
    fig.notes.append("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    fig.notes += [f"crash x{n}: {what}" for what, n in crash_kinds.items()]
    fig.seconds = time.perf_counter() - start
    return fig


def _frame_examples() -> Callable[[Any], Any]:
    """Frames that once found a hole: always tried first (hypothesis explicit examples)."""
    import pandas as pd
    from hypothesis import example

    def frame(phones: list[Any], texts: list[Any], **kw: Any) -> Any:
        return pd.DataFrame({"phone": phones, "text": texts, **kw}, dtype=object)

    cases = [
        # every row invalid
        (frame(["x", None], ["a", "b"]), {"text": "text"}),
        # lone surrogates (text read with errors="surrogateescape")
        (frame(["04141234567", "04241234567"], ["a\udcff", "b"]), {"text": "text"}),
        (frame(["04141234567\udcff", "04241234567"], ["a", "b"]), {"text": "text"}),
        # a send_at column beside repeated index labels
        (
            frame(["04141234567"] * 2, ["a", "b"], cuando=["2999-01-01"] * 2).set_axis([0, 0]),
            {"text": "text", "send:send_at": "cuando"},
        ),
    ]

    def apply(fn: Any) -> Any:
        for case in cases:
            fn = example(case)(fn)
        return fn

    return apply


def _frame_problems(df: Any, out: Any, *, ok_states: tuple[str, ...]) -> list[str]:
    """What breaks "every input row comes back once, with a state and, unless it is
    fine, a reason" (DESIGN.md, Guarantees)."""
    problems = []
    if len(out) != len(df) or not out.index.equals(df.index):
        problems.append(f"index changed: {len(df)} rows in, {len(out)} out")
        return problems
    state = out["state"].astype("string")
    if state.isna().any():
        problems.append(f"{int(state.isna().sum())} rows without a state")
    reasonless = ~state.isin(list(ok_states)) & out["reason"].isna()
    if reasonless.any():
        problems.append(f"{int(reasonless.sum())} rows neither {ok_states} nor with a reason")
    return problems


# --- the table ------------------------------------------------------------------------------


def _input_figures(sizes: Sizes, workdir: Path, *, seed: int = 0) -> list[Figures]:
    t = sizes.example_timeout
    return [
        fuzz_frames(sizes.frame_examples, seed=seed, timeout=t),
        fuzz_xml(sizes.xml_examples, seed=seed, timeout=t),
        fuzz_queries(sizes.query_examples, workdir, seed=seed, timeout=t),
    ]


SCENARIOS: dict[str, Callable[..., Figures | list[Figures]]] = {
    "provider": scenario_faulty_provider,
    "sender": scenario_killed_sender,
    "receiver": scenario_killed_receiver,
    "input": _input_figures,
    "secrets": scenario_secrets,
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
                out.problem(f"the scenario stopped: {_describe(exc)}")
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenario", action="append", choices=sorted(SCENARIOS), help="repeatable (all)"
    )
    parser.add_argument("--quick", action="store_true", help="the bounded sizes of the tests")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (0)")
    parser.add_argument("--worker", choices=["send"], help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--journal", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--max-phones", type=int, default=25, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "send":
        return _worker_send(args)
    names = args.scenario or list(SCENARIOS)
    sizes = QUICK if args.quick else FULL
    start = time.perf_counter()
    figures = run_scenarios(names, sizes, seed=args.seed, echo=True)
    print(format_table(figures))
    failing = [f"{f.scenario}: {', '.join(f.failing())}" for f in figures if f.failing()]
    print(f"total {time.perf_counter() - start:.1f} s; must-be-zero figures not 0: "
          f"{'; '.join(failing) or 'none'}")  # fmt: skip
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
