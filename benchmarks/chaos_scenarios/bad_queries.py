"""Scenario ``input``, query strings: hypothesis-generated raw HTTP requests (hostile queries,
bodies, methods, paths, tokens) into a live receiver.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from .figures import Figures
from .harness import (
    describe,
    hypothesis_settings,
    quiet,
    raw_exchange,
)

__all__ = ["RECEIVER_ANSWERS", "fuzz_queries"]


#: what a receiver may answer to anything a client sends (never 500 nor 503: a hostile
#: request is the client's problem, and the service must stay up)
RECEIVER_ANSWERS = frozenset({200, 400, 403, 404, 405, 413, 414, 415, 431})


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
    with quiet("massiva_frames.receiving"), receiver(logdir, token=token) as rc:

        @hypothesis_settings(examples, seed)
        @given(_query_strategy(token))
        def run(case: tuple[str, bytes, bool]) -> None:
            kind, raw, authorised = case
            fig.tried += 1
            try:
                status, data = raw_exchange(rc.port, raw, timeout)
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
        health, body = raw_exchange(rc.port, b"GET /health HTTP/1.0\r\n\r\n", timeout)
        if health != 200:
            fig.crashes = (fig.crashes or 0) + 1
            fig.problem(f"the receiver stopped serving: /health -> {health} {body[:200]!r}")
    try:
        compact(logdir, timeout=60)
        stored = sum(len(read_callbacks(logdir, kind)) for kind in ("status", "inbound"))
        fig.notes.append(f"stored and read back: {stored} callbacks")
    except Exception as exc:
        fig.crashes = (fig.crashes or 0) + 1
        fig.problem(f"what the receiver stored does not read back: {describe(exc)}")
    fig.evidence.update({f"http_{k}": v for k, v in codes.items()})
    fig.notes.append("answers: " + ", ".join(f"{k} x{v}" for k, v in sorted(codes.items())))
    fig.seconds = time.perf_counter() - start
    return fig
