"""Scenario ``input``, XML: hypothesis-generated bodies into the response parsers: valid ones
(parsed right), truncated, garbled, wrong roots, entities, wrong charsets, huge, the
password echoed.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .figures import Figures
from .harness import (
    Watchdog,
    describe,
    hypothesis_settings,
)
from .scanning import PASSWORD, SECRET_CORE, around, scan_for_secrets, secret_forms

__all__ = ["fuzz_xml"]


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

    @hypothesis_settings(examples, seed)
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
            fig.problem(f"{kind}: {describe(value)} on {body[:120]!r}")
            return
        send_result, _credit_result = value
        text = " ".join(repr(v) + str(v) for v in value)
        if marker in text:
            fig.crashes = (fig.crashes or 0) + 1
            fig.problem(f"{kind}: an external file was read")
        leaks, _ = scan_for_secrets({"parse": text}, [PASSWORD])
        if leaks:
            fig.leaks = (fig.leaks or 0) + leaks
            fig.problem(f"{kind}: password in {around(text)!r}")
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
