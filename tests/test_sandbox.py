"""The sandbox over real HTTP, spoken to with ``requests`` directly (not the package client)."""

from __future__ import annotations

import inspect
import io
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import typing
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import pandas as pd
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from massiva_frames.errors import InputError
from massiva_frames.sandbox import Sandbox, sandbox
from massiva_frames.sandbox.app import decode_params, send_xml, xml_attr, xml_text
from massiva_frames.sandbox.dispatcher import Dispatcher
from massiva_frames.sandbox.server import SandboxOptions
from massiva_frames.sandbox.state import CARACAS, LINES, REPLIES, Celular, SandboxState, SendOutcome

if TYPE_CHECKING:
    from conftest import Sink

SEED_PHONES = "584265207594;584242195147;584164248750;786786786;877668"
VALID = ["584121234567", "584141234567", "584161234567", "584241234567", "584261234567"]


# -- helpers ---------------------------------------------------------------------------------
def parse(body: bytes) -> etree._Element:
    return etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))


def celulares(root: etree._Element) -> list[dict[str, str]]:
    return [dict(c.attrib) for c in root.iter("celular")]


def status_of(root: etree._Element) -> int:
    return int(root.findtext("status") or "nan")


def send(
    sb: Sandbox,
    phones: str,
    texto: str = "Mensaje de prueba",
    *,
    method: str = "POST",
    **extra: str,
) -> requests.Response:
    params = {"usuario": sb.usuario, "clave": sb.clave, "telefonos": phones, "texto": texto}
    params.update(extra)
    if method == "GET":
        return requests.get(sb.send_url, params=params, timeout=5)
    return requests.post(sb.send_url, data=params, timeout=5)


def credit_query(sb: Sandbox, **params: str) -> etree._Element:
    r = requests.get(sb.credit_url, params=params, timeout=5)
    assert r.status_code == 200
    return parse(r.content)


# -- SendSms: the seed's sample -----------------------------------------------------------------
def test_seed_php_post_sample(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    # The PHP sample posts its fields unencoded: '@' raw, spaces raw, ';' raw.
    body = (
        f"usuario={sb.usuario}&clave={sb.clave}&texto=Mensaje de prueba&telefonos={SEED_PHONES}"
    ).encode()
    r = requests.post(
        sb.send_url,
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=5,
    )
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/xml")
    root = parse(r.content)
    assert root.tag == "respuesta"
    assert [child.tag for child in root] == ["mensaje", "status", "telefonos"]
    assert root.findtext("mensaje") == "Envio Exitoso"
    assert status_of(root) == 3
    cels = celulares(root)
    assert [c["num_celular"] for c in cels] == SEED_PHONES.split(";")
    assert [c["status"] for c in cels] == ["0", "0", "0", "2", "2"]
    assert {c["texto"] for c in cels} == {"Mensaje de prueba"}
    assert [int(c["id"]) for c in cels] == [123451, 123452, 123453, 123454, 123455]
    assert [c["sid"] for c in cels[3:]] == ["N/A", "N/A"]
    for c in cels[:3]:
        # like 584164248750000420111115161438: phone + 4-digit counter + timestamp
        assert re.fullmatch(re.escape(c["num_celular"]) + r"\d{4}\d{14}", c["sid"])
        stamp = datetime.strptime(c["sid"][-14:], "%Y%m%d%H%M%S").replace(tzinfo=CARACAS)
        assert abs(stamp - datetime.now(CARACAS)) < timedelta(minutes=1)
    msgs = sb.messages()
    assert msgs["phone"].tolist() == SEED_PHONES.split(";")[:3]
    assert msgs["id"].tolist() == [123451, 123452, 123453]
    assert sb.credits() == 997


def test_get_equals_post(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    got = parse(send(sb, SEED_PHONES, "prueba de envío", method="GET").content)
    posted = parse(send(sb, SEED_PHONES, "prueba de envío").content)
    assert status_of(got) == status_of(posted) == 3
    strip = [{k: v for k, v in c.items() if k not in ("id", "sid")} for c in celulares(got)]
    assert strip == [
        {k: v for k, v in c.items() if k not in ("id", "sid")} for c in celulares(posted)
    ]
    assert celulares(got)[0]["texto"] == "prueba de envío"
    assert sb.requests()["method"].tolist() == ["GET", "POST"]


def test_paired_texts_go_to_their_phone(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    phones = ";".join(VALID[:3])
    root = parse(send(sb, phones, "uno|dos con ñ|tres ").content)
    assert status_of(root) == 3
    assert [(c["num_celular"], c["texto"]) for c in celulares(root)] == [
        (VALID[0], "uno"),
        (VALID[1], "dos con ñ"),
        (VALID[2], "tres "),
    ]
    assert sb.messages()["text"].tolist() == ["uno", "dos con ñ", "tres "]


def test_paired_text_too_long_rejects_only_its_phone(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    root = parse(send(sb, ";".join(VALID[:3]), f"ok|{'x' * 161}|").content)
    assert status_of(root) == 1
    assert [c["status"] for c in celulares(root)] == ["0", "2", "2"]


# -- status codes ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"usuario": None}, -2),
        ({"clave": None}, -2),
        ({"usuario": ""}, -2),
        ({"clave": ""}, -2),
        ({"telefonos": None}, -3),
        ({"texto": None}, -3),
        ({"telefonos": ""}, -3),
        ({"texto": ""}, -3),
        ({"telefonos": ";;"}, -3),
        ({"clave": "wrong"}, -1),
        ({"usuario": "nobody@massiva.test"}, -1),
        ({"telefonos": "786786786;877668"}, 0),
        ({"texto": "x" * 161}, 0),
        ({"texto": "uno|dos"}, 0),  # 2 texts for 3 phones
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_status_codes(
    sandbox_server: Sandbox, fields: dict[str, str | None], expected: int, method: str
) -> None:
    sb = sandbox_server
    params: dict[str, Any] = {
        "usuario": sb.usuario,
        "clave": sb.clave,
        "telefonos": ";".join(VALID[:3]),
        "texto": "hola",
    }
    for key, value in fields.items():
        if value is None:
            del params[key]
        else:
            params[key] = value
    if method == "GET":
        r = requests.get(sb.send_url, params=params, timeout=5)
    else:
        r = requests.post(sb.send_url, data=params, timeout=5)
    assert r.status_code == 200
    root = parse(r.content)
    assert status_of(root) == expected
    assert root.findtext("mensaje")
    if expected < 0:
        assert root.find("telefonos") is None
    else:
        cels = celulares(root)
        assert [c["num_celular"] for c in cels] == params["telefonos"].split(";")
        assert {c["status"] for c in cels} == {"2"}
        assert {c["sid"] for c in cels} == {"N/A"}
    assert sb.messages().empty
    assert sb.credits() == 1000


def test_plan_inactive_is_minus_4(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    sb.set_plan(False)
    assert status_of(parse(send(sb, VALID[0]).content)) == -4
    # the credit query still answers
    assert credit_query(sb, usuario=sb.usuario, clave=sb.clave).findtext("creditos") == "1000"
    sb.set_plan(True)
    assert status_of(parse(send(sb, VALID[0]).content)) == 1


def test_company_credits_short_is_minus_5_and_refused_whole() -> None:
    with sandbox(credits=100, company_credits=2, callback_delay=60) as sb:
        root = parse(send(sb, ";".join(VALID[:3])).content)
        assert status_of(root) == -5
        assert sb.messages().empty and sb.credits() == 100 and sb.company_credits == 2
        # two valid + one invalid needs only two credits
        assert status_of(parse(send(sb, f"{VALID[0]};{VALID[1]};123").content)) == 2
        assert sb.company_credits == 0 and sb.credits() == 98


def test_user_credits_short_is_minus_6(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    sb.set_credits(2)
    assert status_of(parse(send(sb, ";".join(VALID[:3])).content)) == -6
    assert sb.credits() == 2 and sb.messages().empty
    sb.set_credits(5, company=1)
    assert status_of(parse(send(sb, ";".join(VALID[:2])).content)) == -5


def test_credits_decrement_per_accepted_message(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    sb.set_credits(10, company=50)
    send(sb, f"{VALID[0]};{VALID[1]};786786786")
    send(sb, VALID[2], method="GET")
    assert sb.credits() == 7 and sb.company_credits == 47
    root = credit_query(sb, usuario=sb.usuario, clave=sb.clave)
    assert [child.tag for child in root] == ["creditos", "mensaje"]
    assert root.findtext("creditos") == "7"
    assert root.findtext("mensaje") == "consulta exitosa"


def test_second_account(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    sb.add_account("otro@massiva.test", "s3cr3t", credits=5)
    r = requests.post(
        sb.send_url,
        data={
            "usuario": "otro@massiva.test",
            "clave": "s3cr3t",
            "telefonos": VALID[0],
            "texto": "a",
        },
        timeout=5,
    )
    assert status_of(parse(r.content)) == 1
    assert sb.credits("otro@massiva.test") == 4 and sb.credits() == 1000
    assert sb.messages()["usuario"].tolist() == ["otro@massiva.test"]


# -- per-phone rules --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("phone", "accepted"),
    [
        *[(p, True) for p in VALID],
        (" 584121234567 ", True),  # surrounding spaces are stripped
        ("58412123456", False),  # 11 digits
        ("5841212345678", False),  # 13 digits
        ("584131234567", False),  # unknown operator
        ("584151234567", False),
        ("582121234567", False),  # Caracas landline
        ("+584121234567", False),
        ("04121234567", False),
        ("4121234567", False),
        ("58412123456a", False),
        ("58412-123456", False),
        ("١٢٣٤٥٦٧٨٩٠١٢", False),  # non-ASCII digits
        ("786786786", False),
        ("877668", False),
    ],
)
def test_phone_rules(sandbox_server: Sandbox, phone: str, accepted: bool) -> None:
    root = parse(send(sandbox_server, phone).content)
    (cel,) = celulares(root)
    assert cel["status"] == ("0" if accepted else "2")
    assert status_of(root) == (1 if accepted else 0)
    assert (cel["sid"] == "N/A") is not accepted


@pytest.mark.parametrize(
    ("text", "accepted"),
    [("x" * 160, True), ("x" * 161, False), ("á" * 160, True), ("é" * 161, False), ("😀", True)],
)
def test_text_length_rule(sandbox_server: Sandbox, text: str, accepted: bool) -> None:
    root = parse(send(sandbox_server, VALID[0], text).content)
    assert celulares(root)[0]["status"] == ("0" if accepted else "2")
    assert celulares(root)[0]["texto"] == text


def test_awkward_text_round_trips_through_xml(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    text = "a & b < c > \"d\" 'e'\nlínea\tdos; 100%+"
    root = parse(send(sb, VALID[0], text, method="GET").content)
    assert celulares(root)[0]["texto"] == text
    assert sb.messages()["text"].iloc[0] == text
    ctl = "bell\x07end"
    root = parse(send(sb, VALID[1], ctl).content)
    assert celulares(root)[0]["texto"] == "bell\ufffdend"
    assert sb.messages()["text"].iloc[1] == ctl


def test_ids_unique_and_auto_numbered_across_requests(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    ids: list[int] = []
    for phones in (SEED_PHONES, "786786786", ";".join(VALID), "1;2"):
        ids += [int(c["id"]) for c in celulares(parse(send(sb, phones).content))]
    assert ids == list(range(123451, 123451 + len(ids)))
    msgs = sb.messages()
    assert msgs["id"].is_unique and msgs["request_no"].tolist() == [1] * 3 + [3] * 5
    # each accepted request has its own send counter in the sid
    assert msgs["sid"].str.slice(12, 16).tolist() == ["0001"] * 3 + ["0002"] * 5


def test_concurrent_sends_are_counted_exactly(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with requests.Session() as s:
                for _ in range(10):
                    data = {
                        "usuario": sb.usuario,
                        "clave": sb.clave,
                        "telefonos": ";".join(VALID),
                        "texto": "hola",
                    }
                    assert status_of(parse(s.post(sb.send_url, data=data, timeout=5).content)) == 5
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    msgs = sb.messages()
    assert len(msgs) == 400 and msgs["id"].is_unique and sb.credits() == 600


# -- encodings, routing, limits -----------------------------------------------------------------
def test_latin1_body_when_charset_says_so(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    body = f"usuario={sb.usuario}&clave={sb.clave}&telefonos={VALID[0]}&texto=envío ñandú".encode(
        "latin-1"
    )
    for ctype in (
        "application/x-www-form-urlencoded; charset=ISO-8859-1",
        "application/x-www-form-urlencoded",  # not UTF-8: falls back to ISO-8859-1
    ):
        r = requests.post(sb.send_url, data=body, headers={"Content-Type": ctype}, timeout=5)
        assert celulares(parse(r.content))[0]["texto"] == "envío ñandú"
    assert sb.requests()["charset"].tolist() == ["latin-1", "latin-1"]


def test_utf8_percent_encoded_by_default(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    send(sb, VALID[0], "¿Cómo está? 😀")
    assert sb.messages()["text"].iloc[0] == "¿Cómo está? 😀"
    assert sb.requests()["charset"].iloc[0] == "utf-8"


# The decoder as it was before its fast path, kept word for word as the reference.
_REF_LATIN1 = {"iso-8859-1", "iso8859-1", "latin-1", "latin1", "l1", "cp1252", "windows-1252"}


def _ref_charset(content_type: str) -> str | None:
    for piece in content_type.split(";")[1:]:
        key, _, value = piece.strip().partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"').lower() or None
    return None


def _ref_pairs(raw: bytes, charset: str) -> tuple[list[tuple[str, str]], str]:
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    as_bytes = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs]
    try:
        return [(k.decode(charset), v.decode(charset)) for k, v in as_bytes], charset
    except (UnicodeDecodeError, LookupError):
        decoded = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in as_bytes]
        return decoded, "latin-1"


def _ref_decode_params(environ: Mapping[str, Any]) -> tuple[dict[str, str], str]:
    params: dict[str, str] = {}
    query = str(environ.get("QUERY_STRING", "")).encode("latin-1")
    used = "utf-8"
    if query:
        pairs, used = _ref_pairs(query, "utf-8")
        params.update(pairs)
    length_text = str(environ.get("CONTENT_LENGTH") or "0")
    length = int(length_text) if length_text.isdigit() else 0
    if length:
        body: bytes = environ["wsgi.input"].read(length)
        content_type = str(environ.get("CONTENT_TYPE", ""))
        kind = content_type.split(";")[0].strip().lower()
        if kind in ("", "application/x-www-form-urlencoded"):
            declared = _ref_charset(content_type) or "utf-8"
            charset = "latin-1" if declared in _REF_LATIN1 else declared
            pairs, used = _ref_pairs(body, charset)
            params.update(pairs)
    return params, used


# Pieces that stress the decoder: escapes valid, stray, partial, of '%', '&', '=', '+'
# and '\\'; raw backslashes, raw non-ASCII bytes, invalid UTF-8, empty keys and values.
_PIECES = [
    *(b"a", b"usuario", b"texto", b"=", b"&", b"&&", b"+", b" ", b";", b"|"),
    *(b"%", b"%2", b"%25", b"%2541", b"%41", b"%4a", b"%e9", b"%C3", b"%A9", b"%c3%a9"),
    *(b"%zz", b"%%", b"%3B", b"%26", b"%3D", b"%2B", b"%5C", b"%5c", b"%00", b"%ff", b"%7C"),
    *(b"\\", b"\\x41", b"\\x", b"\\\\", b"\\n", b"\\0", b"\x00", b"\xc3\xa9", b"\xe9", b"\xff"),
]
_FORM_BYTES = st.one_of(
    st.binary(max_size=80),
    st.lists(st.sampled_from(_PIECES), max_size=30).map(b"".join),
)
_CHARSETS = [
    *("utf-8", "UTF-8", '"utf-8"', "", "iso-8859-1", "ISO-8859-1", "latin1", "cp1252"),
    *("windows-1252", "ascii", "utf-16", "shift_jis", "koi8-r", "bogus", "rot13", "hex"),
]


@settings(max_examples=500, deadline=None)
@given(
    query=_FORM_BYTES,
    body=_FORM_BYTES,
    kind=st.sampled_from(["application/x-www-form-urlencoded", "", "text/plain"]),
    charset=st.sampled_from([None, *_CHARSETS]),
)
def test_decode_params_matches_parse_qsl(
    query: bytes, body: bytes, kind: str, charset: str | None
) -> None:
    content_type = kind if charset is None else f"{kind}; charset={charset}"

    def environ() -> dict[str, Any]:
        return {
            "QUERY_STRING": query.decode("latin-1"),
            "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": content_type,
            "wsgi.input": io.BytesIO(body),
        }

    try:
        expected = _ref_decode_params(environ())
    except Exception as exc:  # the same failure, if any (a codec may raise its own)
        with pytest.raises(type(exc)):
            decode_params(environ())
        return
    got = decode_params(environ())
    assert got == expected
    assert list(got[0]) == list(expected[0])  # keys in the same order too


@pytest.mark.parametrize(
    "body", [b"a=%41%2c&b=c+d", b"k=%zz%41", b"x=%c3%a9&x=2&y", b"t=Hola%2C+Ana%7CChao"]
)
def test_decode_params_without_escape_decode(monkeypatch: pytest.MonkeyPatch, body: bytes) -> None:
    # codecs.escape_decode is undocumented: without it the parse_qsl route answers alike.
    import massiva_frames.sandbox.app as app_module

    def environ() -> dict[str, Any]:
        return {"CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}

    expected = _ref_decode_params(environ())
    monkeypatch.setattr(app_module, "_escape_decode", None)
    assert decode_params(environ()) == expected


def _ref_send_xml(outcome: SendOutcome) -> bytes:
    # send_xml as it was before its fast path: every value through xml_attr.
    parts = [
        "<respuesta>\n",
        f"  <mensaje>{xml_text(outcome.mensaje)}</mensaje>\n",
        f"  <status>{outcome.status}</status>\n",
    ]
    if outcome.celulares:
        parts.append("  <telefonos>\n")
        for c in outcome.celulares:
            parts.append(
                f'    <celular id="{c.id}" sid="{xml_attr(c.sid)}" status="{c.status}" '
                f'num_celular="{xml_attr(c.num_celular)}" texto="{xml_attr(c.texto)}"/>\n'
            )
        parts.append("  </telefonos>\n")
    parts.append("</respuesta>\n")
    return "".join(parts).encode("utf-8")


_ATTR_TEXT = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=20),
    st.lists(
        st.sampled_from(["584141234567", "Hola", "ñ", "&", "<", ">", '"', "'", "\t", "\x7f"]),
        max_size=6,
    ).map("".join),
)


@settings(max_examples=300, deadline=None)
@given(
    entries=st.lists(
        st.tuples(
            st.integers(0, 10**9), _ATTR_TEXT, st.sampled_from([0, 2]), _ATTR_TEXT, _ATTR_TEXT
        ),
        max_size=8,
    )
)
def test_send_xml_escapes_like_xml_attr(
    entries: list[tuple[int, str, int, str, str]],
) -> None:
    outcome = SendOutcome(len(entries), "Envio Exitoso", tuple(Celular(*e) for e in entries))
    assert send_xml(outcome) == _ref_send_xml(outcome)


def test_send_xml_plain_check_agrees_with_xml_attr_on_ascii() -> None:
    for o in range(0x80):
        ch = chr(o)
        outcome = SendOutcome(1, "Envio Exitoso", (Celular(1, "s", 0, "p", f"a{ch}b"),))
        assert send_xml(outcome) == _ref_send_xml(outcome), hex(o)


def test_unknown_path_is_404(sandbox_server: Sandbox) -> None:
    base = sandbox_server.base_url
    for path in ("/SendSmsX", "/sendsms", "/../SendSms", ""):
        assert requests.get(base + path, timeout=5).status_code == 404
    assert (
        requests.get(base.replace("/webservices", "/other/SendSms"), timeout=5).status_code == 404
    )
    assert requests.put(sandbox_server.send_url, timeout=5).status_code == 405


def test_get_url_over_2048_is_414(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    base = f"{sb.send_url}?usuario=demo%40massiva.test&clave=demo&telefonos={VALID[0]}&texto="
    fits = base + "x" * (2048 - len(base))
    assert len(fits) == 2048
    assert requests.get(fits, timeout=5).status_code == 200
    assert requests.get(fits + "x", timeout=5).status_code == 414
    assert sb.requests()["url_length"].tolist() == [2048, 2049]


def test_request_log_never_holds_the_password() -> None:
    with sandbox(clave="Sup3r-Secret!") as sb:
        send(sb, VALID[0])
        credit_query(sb, usuario=sb.usuario, clave="Sup3r-Secret!")
        log = sb.requests()
        assert list(log.columns) == [
            "request_no", "received_at", "method", "path", "usuario", "n_phones", "n_texts",
            "charset", "url_length", "http_status", "api_status", "accepted", "fault", "recorded",
        ]  # fmt: skip
        assert "Sup3r" not in log.to_csv() and "Sup3r" not in repr(sb)
        assert "Sup3r" not in sb.messages().to_csv()
        assert log["api_status"].tolist() == [1, 999]
        assert log["n_phones"].tolist() == [1, 0]


# -- credit query -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "params",
    [{}, {"usuario": "demo@massiva.test"}, {"clave": "demo"}, {"usuario": "x", "clave": "demo"}],
)
def test_credit_query_minus_1(sandbox_server: Sandbox, params: dict[str, str]) -> None:
    root = credit_query(sandbox_server, **params)
    assert root.findtext("creditos") == "-1"
    assert root.findtext("mensaje") not in (None, "", "consulta exitosa")


def test_credit_query_post(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    r = requests.post(sb.credit_url, data={"usuario": sb.usuario, "clave": sb.clave}, timeout=5)
    assert parse(r.content).findtext("creditos") == "1000"


def test_messages_frame_columns(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    empty = sb.messages()
    send(sb, VALID[0])
    frame = sb.messages()
    cols = ["id", "sid", "phone", "text", "usuario", "accepted_at", "final", "updated_at"]
    assert list(frame.columns[:8]) == list(empty.columns[:8]) == cols
    assert {"line", "request_no"} <= set(frame.columns)
    assert frame["id"].dtype == "int64" and empty["id"].dtype == "int64"
    assert str(frame["accepted_at"].dtype) == "datetime64[us, UTC]"
    assert frame["final"].iloc[0] == "pending" and pd.isna(frame["updated_at"].iloc[0])
    assert frame["grupo"].iloc[0] == "CONTACTOS"


# -- contact groups (grupo, docs/protocol.md §1.1) ------------------------------------------
def test_grupo_saves_new_phones_to_that_group_by_get_and_post(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    assert list(sb.contacts().columns) == ["group", "phone", "usuario", "added_at", "request_no"]
    assert sb.contacts().empty
    before = datetime.now(UTC)
    send(sb, f"{VALID[0]};{VALID[1]};786786786", method="GET", grupo="Clientes Caracas")
    send(sb, f"{VALID[2]};{VALID[0]}", grupo=" morosos ")  # POST; VALID[0] is already saved
    send(sb, VALID[3])  # no grupo: CONTACTOS
    send(sb, VALID[4], grupo="")  # blank: CONTACTOS
    book = sb.contacts()
    assert book[["group", "phone"]].values.tolist() == [
        ["Clientes Caracas", VALID[0]],
        ["Clientes Caracas", VALID[1]],
        ["morosos", VALID[2]],
        ["CONTACTOS", VALID[3]],
        ["CONTACTOS", VALID[4]],
    ]
    assert book["request_no"].tolist() == [1, 1, 2, 3, 4]
    assert set(book["usuario"]) == {sb.usuario}
    assert str(book["added_at"].dtype) == "datetime64[us, UTC]"
    assert ((book["added_at"] >= before) & (book["added_at"] <= datetime.now(UTC))).all()
    assert sb.contacts("morosos")["phone"].tolist() == [VALID[2]]
    assert sb.contacts("nadie").empty
    # the group named in each request is still on its messages
    assert sb.messages()["grupo"].tolist()[:3] == ["Clientes Caracas"] * 2 + ["morosos"]


def test_grupo_with_accents_latin1_and_percent_encoded(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    body = (
        f"usuario={sb.usuario}&clave={sb.clave}&texto=Hola&telefonos={VALID[0]}&grupo=Mérida"
    ).encode("latin-1")
    r = requests.post(
        sb.send_url,
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=ISO-8859-1"},
        timeout=5,
    )
    assert status_of(parse(r.content)) == 1
    send(sb, VALID[1], grupo="Año 2024 & más", method="GET")
    assert sb.contacts()["group"].tolist() == ["Mérida", "Año 2024 & más"]


def test_refused_and_rejected_phones_save_nothing() -> None:
    with sandbox(credits=1) as sb:
        sb.add_account("otra@massiva.test", "otra", credits=5)
        assert status_of(parse(send(sb, "786786786;877668", grupo="g").content)) == 0
        assert status_of(parse(send(sb, f"{VALID[0]};{VALID[1]}", grupo="g").content)) == -6
        assert status_of(parse(send(sb, VALID[2], grupo="g", clave="wrong").content)) == -1
        assert sb.contacts().empty
        # each account has its own book
        send(sb, VALID[0], grupo="mia")
        params = {"usuario": "otra@massiva.test", "clave": "otra", "telefonos": VALID[0]}
        requests.post(sb.send_url, data={**params, "texto": "Hola", "grupo": "suya"}, timeout=5)
        book = sb.contacts()
        assert book[["usuario", "group"]].values.tolist() == [
            [sb.usuario, "mia"],
            ["otra@massiva.test", "suya"],
        ]
        assert sb.contacts(usuario="otra@massiva.test")["group"].tolist() == ["suya"]


def test_contacts_through_the_client(sandbox_server: Sandbox) -> None:
    from massiva_frames import MassivaClient

    sb = sandbox_server
    for method in ("GET", "POST"):
        with MassivaClient(sb.usuario, sb.clave, base_url=sb.base_url, method=method) as client:
            client.send_batch([VALID[0 if method == "GET" else 1]], "Hola", f"grupo {method}")
    assert sb.contacts()[["group", "phone"]].values.tolist() == [
        ["grupo GET", VALID[0]],
        ["grupo POST", VALID[1]],
    ]


# -- faults -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("fault", "code"), [("http503", 503), ("http429", 429)])
def test_refusals_carry_retry_after_and_record_nothing(
    sandbox_server: Sandbox, fault: str, code: int
) -> None:
    sb = sandbox_server
    sb.inject(fault, count=1, retry_after=2)
    r = send(sb, VALID[0])
    assert r.status_code == code and r.headers["Retry-After"] == "2"
    assert sb.messages().empty and sb.credits() == 1000
    assert status_of(parse(send(sb, VALID[0]).content)) == 1  # count=1: next one is fine
    sb.inject(fault, count=1)
    r = send(sb, VALID[0])
    assert r.status_code == code and "Retry-After" not in r.headers


@pytest.mark.parametrize(("fault", "code"), [("http500", 500), ("http502", 502)])
def test_server_errors_after_recording(sandbox_server: Sandbox, fault: str, code: int) -> None:
    sb = sandbox_server
    sb.inject(fault, count=1)
    assert send(sb, VALID[0]).status_code == code
    assert len(sb.messages()) == 1  # it went out: a re-send duplicates it
    assert send(sb, VALID[0]).status_code == 200
    assert sb.messages()["phone"].tolist() == [VALID[0], VALID[0]]
    sb.inject(fault, count=1, before=True)
    assert send(sb, VALID[1]).status_code == code
    assert len(sb.messages()) == 2 and sb.credits() == 998
    log = sb.requests()
    assert log["fault"].fillna("-").tolist() == [fault, "-", fault]
    assert log["recorded"].tolist() == [True, True, False]
    assert log["http_status"].tolist() == [code, 200, code]


def test_latency(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    sb.inject("latency", count=1, seconds=0.3)
    t0 = time.monotonic()
    r = send(sb, VALID[0])
    assert time.monotonic() - t0 >= 0.3
    assert status_of(parse(r.content)) == 1
    sb.inject("latency", count=1, seconds=0.8)
    with pytest.raises(requests.ReadTimeout):
        send_timeout(sb, VALID[1], 0.3)
    # the server kept working after the client left: the message went out
    assert wait_until(lambda: len(sb.messages()) == 2)


def test_gated_latency_holds_each_request_until_the_gate_opens(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    gate = threading.Event()
    sb.inject("latency", count=2, seconds=30, gate=gate)
    answers: list[int] = []
    threads = [
        threading.Thread(target=lambda p=p: answers.append(send(sb, p).status_code))
        for p in VALID[:2]
    ]
    for t in threads:
        t.start()
    # both requests arrive and are logged; neither is processed while the gate is shut
    assert wait_until(lambda: len(sb.requests()) == 2)
    assert sb.messages().empty and not answers
    assert sb.requests()["fault"].tolist() == ["latency", "latency"]
    gate.set()
    for t in threads:
        t.join(10)
    assert answers == [200, 200] and len(sb.messages()) == 2
    # a gate that is never set is bounded by seconds
    sb.inject("latency", count=1, seconds=0.2, gate=threading.Event())
    t0 = time.monotonic()
    assert send(sb, VALID[2]).status_code == 200
    assert 0.2 <= time.monotonic() - t0 < 5


def send_timeout(sb: Sandbox, phone: str, timeout: float) -> requests.Response:
    data = {"usuario": sb.usuario, "clave": sb.clave, "telefonos": phone, "texto": "t"}
    return requests.post(sb.send_url, data=data, timeout=(2, timeout))


def wait_until(cond: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_truncated_body(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    sb.inject("truncated", count=1)
    r = send(sb, ";".join(VALID))
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/xml")
    assert r.content.startswith(b"<respuesta>") and b"</respuesta>" not in r.content
    assert int(r.headers["Content-Length"]) == len(r.content)
    with pytest.raises(etree.XMLSyntaxError):
        parse(r.content)
    assert len(sb.messages()) == 5


def test_html_page_with_200(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    sb.inject("html", count=1)
    r = send(sb, VALID[0])
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert r.text.lstrip().lower().startswith("<!doctype html")
    assert len(sb.messages()) == 1


def test_reset_drops_the_connection(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    sb.inject("reset", count=1)
    with pytest.raises(requests.ConnectionError):
        send(sb, VALID[0])
    assert len(sb.messages()) == 1
    sb.inject("reset", count=1, before=True)
    with pytest.raises(requests.ConnectionError):
        send(sb, VALID[1])
    assert len(sb.messages()) == 1
    assert status_of(parse(send(sb, VALID[2]).content)) == 1  # the server is fine
    assert sb.requests()["http_status"].tolist() == [0, 0, 200]


def test_hang_times_out_the_client_and_records(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    sb.inject("hang", count=1)
    with pytest.raises(requests.ReadTimeout):
        send_timeout(sb, VALID[0], 0.3)
    assert len(sb.messages()) == 1
    assert status_of(parse(send(sb, VALID[1]).content)) == 1


def test_hang_bounded_by_seconds() -> None:
    with sandbox(hang_seconds=0.3) as sb:
        sb.inject("hang", count=1)
        with pytest.raises(requests.ConnectionError):
            send_timeout(sb, VALID[0], 5)


def test_stop_ends_a_hang_promptly() -> None:
    sb = Sandbox().start()
    sb.inject("hang")
    outcome: list[BaseException] = []

    def client() -> None:
        try:
            send_timeout(sb, VALID[0], 30)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            outcome.append(exc)

    t = threading.Thread(target=client)
    t.start()
    assert wait_until(lambda: len(sb.messages()) == 1)
    t0 = time.monotonic()
    sb.stop()
    assert time.monotonic() - t0 < 5
    t.join(10)
    assert not t.is_alive() and isinstance(outcome[0], requests.ConnectionError)
    with pytest.raises(requests.ConnectionError):
        requests.get(sb.credit_url, timeout=2)  # the port is closed


def test_faults_hit_credit_queries_and_count_semantics(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    sb.inject("http500", count=2)
    codes = [requests.get(sb.credit_url, timeout=5).status_code for _ in range(3)]
    assert codes == [500, 500, 200]
    sb.inject("http503")  # no count, no ratio: every request until cleared
    assert [send(sb, VALID[0]).status_code for _ in range(3)] == [503] * 3
    sb.clear_faults()
    assert send(sb, VALID[0]).status_code == 200


def fault_pattern(seed: int | None, sandbox_seed: int = 0, n: int = 30) -> list[int]:
    with sandbox(seed=sandbox_seed) as sb:
        sb.inject("http502", ratio=0.5, seed=seed)
        with requests.Session() as s:
            return [s.get(sb.credit_url, timeout=5).status_code for _ in range(n)]


def test_ratio_faults_are_reproducible_with_a_seed() -> None:
    first = fault_pattern(7)
    assert first == fault_pattern(7)
    assert set(first) == {200, 502}
    assert first != fault_pattern(8)
    # without a fault seed the draws derive from the sandbox's seed
    assert fault_pattern(None, 3) == fault_pattern(None, 3)


def test_ratio_with_count_fires_at_most_count_times(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    sb.inject("http500", ratio=0.9, count=2, seed=1)
    codes = [requests.get(sb.credit_url, timeout=5).status_code for _ in range(10)]
    assert codes.count(500) == 2


def test_first_armed_fault_wins(sandbox_server: Sandbox) -> None:
    sb = sandbox_server
    sb.inject("http429", count=1)
    sb.inject("http503", count=1)
    codes = [requests.get(sb.credit_url, timeout=5).status_code for _ in range(3)]
    assert codes == [429, 503, 200]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("explode",), {}),
        (("latency",), {"retry_after": 1}),
        (("http503",), {"count": 0}),
        (("http503",), {"ratio": 1.5}),
    ],
)
def test_inject_rejects_bad_arguments(
    sandbox_server: Sandbox, args: tuple[str], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InputError):
        sandbox_server.inject(*args, **kwargs)


# -- callbacks ---------------------------------------------------------------------------------
FECHA = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


def test_status_callbacks_exactly_as_the_spec(http_sink: Sink) -> None:
    url = http_sink.url + "?token=abc"
    with sandbox(status_url=url, callback_delay=0, fail_ratio=0.3, seed=1) as sb:
        phones = [f"58414{i:07d}" for i in range(40)]
        for chunk in (phones[:25], phones[25:]):
            assert status_of(parse(send(sb, ";".join(chunk)).content)) == len(chunk)
        assert sb.wait_callbacks(10)
        msgs = sb.messages()
    assert http_sink.wait_for(40, 5)
    assert {path for path, _ in http_sink.hits} == {"/recepcionsms"}
    hits = [pairs for _, pairs in http_sink.hits]
    assert all([k for k, _ in p] == KEYS for p in hits)
    by_id = {int(dict(p)["id"]): dict(p) for p in hits}
    assert sorted(by_id) == msgs["id"].tolist()
    now = datetime.now(CARACAS).replace(tzinfo=None)
    for row in msgs.itertuples():
        hit = by_id[row.id]
        assert hit["token"] == "abc" and hit["usuario"] == "demo@massiva.test"
        assert FECHA.fullmatch(hit["fecha_actualizacion"])
        assert abs(datetime.strptime(hit["fecha_actualizacion"], "%Y-%m-%d %H:%M:%S") - now) < (
            timedelta(minutes=1)
        )
        if row.final == "failed":
            assert (hit["estatus"], hit["detalle"]) == ("2", "ERROR EN ENVIO")
        else:
            assert row.final == "delivered" and hit["estatus"] == "1"
            assert hit["detalle"] == f"+{row.line}" and row.line in LINES
    failed = int((msgs["final"] == "failed").sum())
    assert 3 <= failed <= 25  # 30% of 40, loosely
    assert msgs["updated_at"].notna().all()


KEYS = ["token", "id", "estatus", "fecha_actualizacion", "usuario", "detalle"]


@pytest.mark.parametrize(("ratio", "expected"), [(0.0, {"delivered"}), (1.0, {"failed"})])
def test_fail_ratio_extremes(http_sink: Sink, ratio: float, expected: set[str]) -> None:
    with sandbox(status_url=http_sink.url, callback_delay=0, fail_ratio=ratio) as sb:
        send(sb, ";".join(VALID))
        assert sb.wait_callbacks(10)
        assert set(sb.messages()["final"]) == expected
    assert {p["estatus"] for p in http_sink.params()} == {"1" if ratio == 0 else "2"}


def test_stored_messages_leave_the_garbage_collector_alone() -> None:
    # A sandbox holding many messages must not slow down: its records are plain tuples
    # of atomic values, which CPython's collector stops tracking.
    import gc

    from massiva_frames.sandbox.state import SandboxState
    from massiva_frames.wire.protocol import build_send_params

    state = SandboxState(fail_ratio=0.5, reply_ratio=0.5)
    state.add_account("u@x.test", "pw", 10_000)
    phones = [f"58414{1000000 + i:07d}" for i in range(300)]
    params = build_send_params("u@x.test", "pw", phones, [f"t{i}" for i in range(300)])
    outcome = state.send(params, request_no=1)
    assert len(outcome.accepted_ids) == 300
    gc.collect()
    records = list(state._records.values())
    assert len(records) == 300 and not any(gc.is_tracked(r) for r in records)
    msg = state.finalize(outcome.accepted_ids[0], datetime.now(UTC))
    assert msg is not None and msg.final in ("delivered", "failed") and msg.phone == phones[0]
    assert state.finalize(outcome.accepted_ids[0], datetime.now(UTC)) is None
    assert len(state.pending_ids()) == 299 and state.message_count() == 300
    frame = state.messages_frame()
    assert frame["final"].iloc[0] == msg.final and set(frame["final"].iloc[1:]) == {"pending"}
    assert frame["updated_at"].iloc[1:].isna().all() and list(frame["phone"]) == phones


def test_fates_are_reproducible_with_the_seed() -> None:
    def fates(seed: int) -> list[tuple[str, str]]:
        with sandbox(callback_delay=0, fail_ratio=0.5, seed=seed) as sb:
            send(sb, ";".join(f"58424{i:07d}" for i in range(30)))
            assert sb.wait_callbacks(10)
            frame = sb.messages()
            return list(zip(frame["final"], frame["line"], strict=True))

    first = fates(5)
    assert first == fates(5) and first != fates(6)
    assert {f for f, _ in first} == {"delivered", "failed"}


def test_fates_are_four_draws_per_accepted_message_in_order() -> None:
    # fails, line, replies, reply: four random() draws per accepted message, none for
    # a refused phone, so a seed gives the same fates in every version.
    state = SandboxState(fail_ratio=0.3, reply_ratio=0.5, seed=7)
    state.add_account("u", "c", 100)
    phones = ["584141234567", "786786786", "584241234567", "58412", *VALID]
    out = state.send(
        {"usuario": "u", "clave": "c", "telefonos": ";".join(phones), "texto": "x"}, request_no=1
    )
    assert out.status == len(VALID) + 2
    draw = random.Random(7).random
    now = datetime.now(UTC)
    for mid in out.accepted_ids:
        fails = draw() < 0.3
        line = LINES[int(draw() * len(LINES))]
        replies = draw() < 0.5
        reply = REPLIES[int(draw() * len(REPLIES))]
        msg = state.finalize(mid, now)
        assert msg is not None
        assert (msg.fails, msg.line, msg.reply) == (
            fails,
            line,
            reply if replies and not fails else None,
        )


def test_failed_delivery_is_retried(http_sink: Sink) -> None:
    http_sink.fail_next(2)
    with sandbox(status_url=http_sink.url, callback_delay=0, fail_ratio=0) as sb:
        send(sb, VALID[0])
        assert sb.wait_callbacks(10)
        cb = sb.callbacks()
    assert http_sink.failures == 2 and len(http_sink.hits) == 1
    assert cb["attempts"].tolist() == [3] and cb["delivered"].tolist() == [True]
    assert cb["http_status"].tolist() == [200]


def test_unreachable_receiver_is_given_up(free_port: int) -> None:
    url = f"http://127.0.0.1:{free_port}/recepcionsms"
    with sandbox(status_url=url, callback_delay=0, callback_attempts=2) as sb:
        send(sb, VALID[0])
        assert sb.wait_callbacks(10)
        cb = sb.callbacks()
    assert cb["gave_up"].tolist() == [True] and cb["attempts"].tolist() == [2]
    assert cb["error"].iloc[0] == "ConnectionRefusedError"


def test_wait_callbacks_times_out_while_a_receiver_fails(http_sink: Sink) -> None:
    http_sink.fail_next(1000)
    with sandbox(status_url=http_sink.url, callback_delay=0) as sb:
        send(sb, VALID[0])
        assert sb.wait_callbacks(0.2) is False


def test_delay_and_dispatch_now(http_sink: Sink) -> None:
    with sandbox(status_url=http_sink.url, callback_delay=60, fail_ratio=0) as sb:
        send(sb, ";".join(VALID[:2]))
        # Both dispatches are scheduled a minute out (not merely "not done yet").
        due = [entry[0] for entry in sb._dispatcher._heap]
        assert len(due) == 1 and due[0] - time.monotonic() > 55  # one entry per request
        assert set(sb.messages()["final"]) == {"pending"} and not http_sink.hits
        assert sb.wait_callbacks(0.1)  # nothing is due before the deadline
        sb.dispatch_now()
        assert sb.wait_callbacks(10)
        assert set(sb.messages()["final"]) == {"delivered"}
    assert len(http_sink.hits) == 2


def test_callback_delay_is_honoured(http_sink: Sink) -> None:
    with sandbox(status_url=http_sink.url, callback_delay=0.3) as sb:
        send(sb, VALID[0])
        assert sb.messages()["final"].tolist() == ["pending"]
        assert sb.wait_callbacks(10)
        msgs = sb.messages()
    lag = msgs["updated_at"].iloc[0] - msgs["accepted_at"].iloc[0]
    assert lag >= pd.Timedelta(seconds=0.29)


def test_callback_jitter_spreads_dispatch_reproducibly(http_sink: Sink) -> None:
    lags = []
    for _ in range(2):
        with sandbox(status_url=http_sink.url, callback_delay=0.1, callback_jitter=1.0) as sb:
            send(sb, ";".join(VALID[:4]))
            assert sb.wait_callbacks(10)
            msgs = sb.messages().sort_values("id")
        lags.append((msgs["updated_at"] - msgs["accepted_at"]).dt.total_seconds())
    assert lags[0].min() >= 0.09
    assert lags[0].max() <= 1.5
    assert lags[0].max() - lags[0].min() > 0.2  # spread, not one moment
    # the same ids get the same delays (up to scheduling noise)
    assert (lags[0].reset_index(drop=True) - lags[1].reset_index(drop=True)).abs().max() < 0.15


@pytest.mark.parametrize("jitter", [0.0, 0.5])
def test_dispatch_of_whole_requests(http_sink: Sink, jitter: float) -> None:
    # Without jitter a request's ids share one heap entry; with it each has its own.
    # Either way wait() leaves later dispatches out, dispatch_now() brings them in and
    # every message is dispatched once, in id order, its callback delivered once.
    state = SandboxState(fail_ratio=0.2, seed=3)
    state.add_account("u", "c", 10**4)
    ids: list[int] = []
    for r in range(3):  # 1,500 messages: more than the scheduler takes per turn
        phones = ";".join(f"58416{r}{i:06d}" for i in range(500))
        ids += state.send(
            {"usuario": "u", "clave": "c", "telefonos": phones, "texto": "x"}, request_no=r
        ).accepted_ids
    dispatcher = Dispatcher(state, lambda: (http_sink.url, None), delay=60, jitter=jitter)
    dispatcher.start()
    try:
        for start in range(0, len(ids), 500):
            dispatcher.schedule(tuple(ids[start : start + 500]))
        dispatcher.schedule(())
        assert len(dispatcher._heap) == (3 if jitter == 0 else 1500)
        dispatcher.emit("inbound", http_sink.url, {"msg": "hola"})
        assert dispatcher.wait(10)  # the emitted callback only: the dispatches are later
        assert http_sink.wait_for(1) and len(state.pending_ids()) == 1500
        dispatcher.dispatch_now()
        assert dispatcher.wait(30)
    finally:
        dispatcher.stop()
    assert state.pending_ids() == [] and not dispatcher._heap
    # dispatch_now() made every dispatch due at once: they run in scheduling order
    statuses = [r for r in dispatcher.records() if r.kind == "status"]
    assert [r.message_id for r in statuses] == ids
    assert all(r.delivered and r.attempts == 1 for r in dispatcher.records())
    sent = Counter(p["id"] for p in http_sink.params() if "id" in p)
    assert sent == Counter(str(mid) for mid in ids)


def test_callback_urls_can_be_set_later(sandbox_server: Sandbox, http_sink: Sink) -> None:
    sb = sandbox_server
    with pytest.raises(InputError):
        sb.set_callback_urls(status_url="ftp://example.invalid/x")
    sb.set_callback_urls(status_url=http_sink.url)
    assert sb.status_url == http_sink.url and sb.inbound_url is None
    send(sb, VALID[0])
    sb.dispatch_now()
    assert sb.wait_callbacks(10) and len(http_sink.hits) == 1


def test_replies_from_delivered_phones(http_sink: Sink) -> None:
    url = http_sink.url
    with sandbox(
        status_url=url, inbound_url=url, callback_delay=0, fail_ratio=0, reply_ratio=1.0
    ) as sb:
        send(sb, ";".join(VALID))
        assert sb.wait_callbacks(10)
        msgs = sb.messages()
    inbound_pairs = [pairs for _, pairs in http_sink.hits if pairs[0][0] == "msg"]
    assert all([k for k, _ in p] == ["msg", "phone", "linea", "email"] for p in inbound_pairs)
    inbound = [dict(p) for p in inbound_pairs]
    assert len(http_sink.hits) == 2 * len(VALID)  # a status callback and a reply each
    assert sorted(p["phone"] for p in inbound) == sorted(VALID)
    lines = dict(zip(msgs["phone"], msgs["line"], strict=True))
    for p in inbound:
        assert p["msg"] in REPLIES and p["email"] == "demo@massiva.test"
        assert p["linea"] == lines[p["phone"]]


def test_send_inbound_on_demand(sandbox_server: Sandbox, http_sink: Sink) -> None:
    sb = sandbox_server
    with pytest.raises(InputError):
        sb.send_inbound("584121234567", "Hola")
    sb.set_callback_urls(inbound_url=http_sink.url + "?token=t")
    sb.send_inbound("584121234567", "Hola Mundo ñ & más")
    sb.send_inbound("584241112233", "BAJA", linea="584161234567")
    assert sb.wait_callbacks(10)
    # deliveries run in parallel: their order is not guaranteed (nor is the provider's)
    assert sorted(
        (pairs for _, pairs in http_sink.hits), key=lambda p: p[1][1] != "Hola Mundo ñ & más"
    ) == [
        [
            ("token", "t"),
            ("msg", "Hola Mundo ñ & más"),
            ("phone", "584121234567"),
            ("linea", LINES[0]),
            ("email", "demo@massiva.test"),
        ],
        [
            ("token", "t"),
            ("msg", "BAJA"),
            ("phone", "584241112233"),
            ("linea", "584161234567"),
            ("email", "demo@massiva.test"),
        ],
    ]


def test_thousands_of_callbacks(http_sink: Sink) -> None:
    n = 3000
    with sandbox(status_url=http_sink.url, callback_delay=0, credits=n) as sb:
        with requests.Session() as s:
            for start in range(0, n, 500):
                phones = ";".join(f"58416{i:07d}" for i in range(start, start + 500))
                data = {"usuario": sb.usuario, "clave": sb.clave, "telefonos": phones, "texto": "x"}
                assert status_of(parse(s.post(sb.send_url, data=data, timeout=10).content)) == 500
        assert sb.wait_callbacks(30)
        assert (sb.messages()["final"] != "pending").all()
    assert len({p["id"] for p in http_sink.params()}) == n


# -- the CLI ----------------------------------------------------------------------------------
def read_until(proc: subprocess.Popen[str], pattern: str, timeout: float = 20) -> str:
    """Read the process's stdout until a line matches (bounded by a watchdog)."""
    seen: list[str] = []
    found: list[str] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if re.search(pattern, line):
                found.append(line)
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    assert found, f"no line matching {pattern!r} in {seen!r}"
    return "".join(seen)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_sandbox_serves_until_signalled(sig: signal.Signals) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "massiva_frames.faces.cli",
            "sandbox",
            "--port",
            "0",
            "--credits",
            "1000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        head = read_until(proc, r"Ctrl\+C")
        base = re.search(r"(http://127\.0\.0\.1:\d+/webservices)", head)
        assert base, head
        assert "demo@massiva.test" in head and "clave:" in head
        r = requests.get(
            f"{base.group(1)}/obtenerCreditoDisponible",
            params={"usuario": "demo@massiva.test", "clave": "demo"},
            timeout=5,
        )
        assert parse(r.content).findtext("creditos") == "1000"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0, out
        assert "stopped: 1 request(s)" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)


def test_hang_frees_its_thread_when_the_client_leaves() -> None:
    # Two server threads, four abandoned hangs: a fifth request is served at once
    # only if each hang ended when its client went away.
    with sandbox(threads=2) as sb:
        sb.inject("hang", count=4)
        for _ in range(4):
            with pytest.raises(requests.ReadTimeout):
                requests.get(sb.credit_url, timeout=(2, 0.2))
        root = credit_query(sb, usuario=sb.usuario, clave=sb.clave)
        assert root.findtext("creditos") == "1000"


# -- options ----------------------------------------------------------------------------------
def test_sandbox_options_name_every_keyword_of_sandbox() -> None:
    # sandbox(**options) is typed by SandboxOptions: a keyword added to Sandbox and not
    # there would work at run time and fail every type check of a caller.
    params = inspect.signature(Sandbox.__init__).parameters
    keywords = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    hints = typing.get_type_hints(Sandbox.__init__)
    options = typing.get_type_hints(SandboxOptions)
    assert sorted(options) == sorted(keywords)
    assert {n: options[n] for n in keywords} == {n: hints[n] for n in keywords}
    assert SandboxOptions.__required_keys__ == frozenset()


def test_sandbox_passes_every_option_on() -> None:
    options: SandboxOptions = {
        "usuario": "otra@massiva.test",
        "clave": "otra",
        "credits": 7,
        "company_credits": 3,
        "plan_active": False,
        "status_url": "http://127.0.0.1:9/status",
        "inbound_url": "http://127.0.0.1:9/inbound",
        "threads": 2,
        "max_url_length": 200,
        "seed": 5,
    }
    with sandbox(**options) as sb:
        assert (sb.usuario, sb.clave, sb.credits(), sb.company_credits) == (
            "otra@massiva.test",
            "otra",
            7,
            3,
        )
        assert (sb.status_url, sb.inbound_url, sb.threads) == (
            "http://127.0.0.1:9/status",
            "http://127.0.0.1:9/inbound",
            2,
        )
        assert status_of(parse(send(sb, VALID[0]).content)) == -4  # plan inactive
        assert send(sb, ";".join(VALID), "x" * 100, method="GET").status_code == 414
    misspelt: dict[str, Any] = {"credit": 5}
    with pytest.raises(TypeError, match="credit"), sandbox(**misspelt):
        pass
