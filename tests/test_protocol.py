"""Unit tests of the wire protocol: parameters, canned XML, status codes.

See docs/protocol.md §1, §4.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from massiva_frames import errors
from massiva_frames.errors import (
    APIError,
    AuthenticationError,
    InputError,
    InsufficientCreditsError,
    MissingFieldsError,
    NoActivePlanError,
    NothingSentError,
    ProtocolError,
    error_for_status,
    mask,
)
from massiva_frames.wire.protocol import (
    MAX_RESPONSE_BYTES,
    Celular,
    build_credit_params,
    build_send_params,
    encode_query,
    parse_credit_response,
    parse_send_response,
)

SECRET = "s3cr3t-P@ss;|&="

# The provider's own example (massiva-api-seed.md, "Respuesta XML"), line breaks and all.
SEED_SEND_XML = b"""<respuesta>
  <mensaje>Envio Exitoso</mensaje>
  <status>3</status>
  <telefonos>
    <celular id="123451" sid="584164248750000420111115161438"
status="0" num_celular="584164248750" texto="Mensaje de prueba"/>
    <celular id="123452" sid="584265207594000420111115161438"
status="0" num_celular="584265207594" texto="Mensaje de prueba"/>
    <celular id="123453" sid="584242195147000420111115161438"
status="0" num_celular="584242195147" texto="Mensaje de prueba"/>
    <celular id="123454" sid="N/A" status="2"
num_celular="786786786" texto="Mensaje de prueba"/>
    <celular id="123455" sid="N/A" status="2" num_celular="877668"
texto="Mensaje de prueba"/>
  </telefonos>
</respuesta>"""

SEED_CREDIT_XML = b"""<respuesta>
  <creditos>907</creditos>
  <mensaje>consulta exitosa</mensaje>
</respuesta>"""


def _send_xml(status: int, mensaje: str = "x", celulares: str = "") -> bytes:
    return (
        f"<respuesta><mensaje>{mensaje}</mensaje><status>{status}</status>"
        f"<telefonos>{celulares}</telefonos></respuesta>"
    ).encode()


# --------------------------------------------------------------------------- seed XML


def test_seed_send_response_parses_verbatim() -> None:
    resp = parse_send_response(SEED_SEND_XML)
    assert resp.status == 3
    assert resp.mensaje == "Envio Exitoso"
    assert resp.ok
    assert resp.accepted_count == 3
    assert [c.id for c in resp.celulares] == [123451, 123452, 123453, 123454, 123455]
    assert resp.celulares[0] == Celular(
        id=123451,
        sid="584164248750000420111115161438",
        status=0,
        num_celular="584164248750",
        texto="Mensaje de prueba",
    )
    # sid="N/A" marks a rejected phone; the odd numbers come back untouched.
    assert [c.sid for c in resp.celulares[3:]] == [None, None]
    assert [c.status for c in resp.celulares] == [0, 0, 0, 2, 2]
    assert [c.num_celular for c in resp.celulares[3:]] == ["786786786", "877668"]
    assert [c.accepted for c in resp.celulares] == [True, True, True, False, False]
    resp.raise_for_status()  # status 3: nothing to raise


def test_seed_credit_response_parses_verbatim() -> None:
    resp = parse_credit_response(SEED_CREDIT_XML)
    assert (resp.creditos, resp.mensaje) == (907, "consulta exitosa")


def test_credit_response_minus_one_is_returned_not_raised() -> None:
    body = b"<respuesta><creditos>-1</creditos><mensaje>autenticacion fallida</mensaje></respuesta>"
    assert parse_credit_response(body).creditos == -1


def test_str_body_is_accepted() -> None:
    assert parse_send_response(SEED_SEND_XML.decode()).status == 3


def test_error_status_without_telefonos() -> None:
    body = b"<respuesta><mensaje>Autenticacion fallida</mensaje><status>-1</status></respuesta>"
    resp = parse_send_response(body)
    assert (resp.status, resp.celulares, resp.ok) == (-1, (), False)
    with pytest.raises(AuthenticationError):
        resp.raise_for_status()


def test_entries_with_missing_ids_signs_and_spaces_keep_their_places() -> None:
    # The fast path (every id and status plain digits) and the per-entry path must
    # give the same answer: mixed entries take the second, entry by entry.
    body = _send_xml(
        1,
        celulares=(
            '<celular id="7" sid="s7" status="0" num_celular="1" texto="a"/>'
            '<celular id="N/A" sid="N/A" status="2" num_celular="2" texto="b"/>'
            '<celular sid="" status=" +2 " num_celular="3"/>'
            '<celular id=" 9 " sid="s9" status="0" num_celular="4" texto="d"/>'
        ),
    )
    resp = parse_send_response(body)
    assert resp.ids == (7, None, None, 9)
    assert resp.sids == ("s7", None, None, "s9")
    assert resp.statuses == (0, 2, 2, 0)
    assert resp.numbers == ("1", "2", "3", "4")
    assert resp.texts == ("a", "b", "", "d")
    assert resp.accepted_count == 2
    assert resp.celulares[2] == Celular(None, None, 2, "3", "")


def test_an_entry_without_status_is_refused() -> None:
    body = _send_xml(1, celulares='<celular id="1" status="0"/><celular id="2"/>')
    with pytest.raises(ProtocolError, match="celular status is not an integer"):
        parse_send_response(body)


def test_predefined_and_character_entities_still_decode() -> None:
    body = _send_xml(
        1,
        "Env&#237;o &amp; m&#xE1;s",
        '<celular id="1" sid="a" status="0" num_celular="584141234567" texto="a &lt; b &amp; c"/>',
    )
    resp = parse_send_response(body)
    assert resp.mensaje == "Envío & más"
    assert resp.celulares[0].texto == "a < b & c"


def test_leading_blank_lines_and_bom_are_tolerated() -> None:
    body = b"\xef\xbb\xbf\r\n\n" + b'<?xml version="1.0" encoding="UTF-8"?>' + SEED_CREDIT_XML
    assert parse_credit_response(body).creditos == 907


# --------------------------------------------------------------------------- parameters


def test_build_send_params_one_text_many_phones() -> None:
    params = build_send_params("a@b.c", SECRET, ["584141234567", "584241234567"], "Hola")
    assert params == {
        "usuario": "a@b.c",
        "clave": SECRET,
        "telefonos": "584141234567;584241234567",
        "texto": "Hola",
    }


@pytest.mark.parametrize("texts", ["Hola", ["Hola"], ("Hola",)])
def test_one_text_in_any_container_is_shared(texts: str | list[str]) -> None:
    params = build_send_params("u", "p", ["584141234567", "584241234567"], texts)
    assert params["texto"] == "Hola"


def test_build_send_params_paired_texts() -> None:
    params = build_send_params("u", "p", ["584141234567", "584241234567"], ["uno", "dos"])
    assert params["texto"] == "uno|dos"
    assert params["telefonos"] == "584141234567;584241234567"


def test_build_send_params_grupo() -> None:
    params = build_send_params("u", "p", ["584141234567"], "Hola", group="Clientes VIP")
    assert params["grupo"] == "Clientes VIP"
    assert "grupo" not in build_send_params("u", "p", ["584141234567"], "Hola")
    assert "grupo" not in build_send_params("u", "p", ["584141234567"], "Hola", group="")


def test_build_credit_params() -> None:
    assert build_credit_params("u", SECRET) == {"usuario": "u", "clave": SECRET}


@pytest.mark.parametrize(
    ("phones", "texts", "match"),
    [
        (["584141234567", "584241234567"], ["uno", "dos", "tres"], "3 texts, 2 phones"),
        (["584141234567", "584241234567", "584161234567"], ["uno", "dos"], "2 texts, 3"),
        (["584141234567"], [], "0 texts, 1 phones"),
        (["584141234567"], "a|b", "separator"),
        (["584141234567", "584241234567"], ["uno", "d|os"], "separator"),
        (["584141234567"], "", "empty"),
        ([], "Hola", "at least one phone"),
        (["584141234567;584241234567"], "Hola", "invalid phone"),
        ([""], "Hola", "invalid phone"),
        ([584141234567], "Hola", "invalid phone"),
        ("584141234567", "Hola", "not one string"),
        (["584141234567"], [None], "must be a string"),
    ],
)
def test_build_send_params_rejects(phones: object, texts: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        build_send_params("u", "p", phones, texts)  # type: ignore[arg-type]


def test_input_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        build_send_params("u", "p", [], "Hola")


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (";", "%3B"),
        ("|", "%7C"),
        (" ", "+"),
        ("&", "%26"),
        ("=", "%3D"),
        ("@", "%40"),
        ("+", "%2B"),
        ("ñ", "%C3%B1"),
    ],
)
def test_encode_query_quotes_separators(value: str, encoded: str) -> None:
    assert encode_query({"k": value}) == f"k={encoded}"


def test_encode_query_round_trips_and_honours_encoding() -> None:
    params = build_send_params("a@b.c", SECRET, ["584141234567", "584241234567"], ["é 1", "b"])
    query = encode_query(params)
    assert {k: v[0] for k, v in parse_qs(query).items()} == params
    assert encode_query({"texto": "envío"}, encoding="iso-8859-1") == "texto=env%EDo"


@settings(max_examples=300, deadline=None)
@given(
    params=st.dictionaries(st.text(max_size=8), st.text(max_size=60), max_size=4),
    encoding=st.sampled_from(["utf-8", "iso-8859-1", "cp1252", "utf-16", "shift_jis"]),
)
def test_encode_query_is_urlencode(params: dict[str, str], encoding: str) -> None:
    # The fast encoder must give urlencode's exact string, or fail the same way.
    try:
        expected = urlencode(params, encoding=encoding)
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            encode_query(params, encoding=encoding)
        return
    assert encode_query(params, encoding=encoding) == expected


def test_encode_query_takes_non_strings_like_urlencode() -> None:
    params = {"n": 5, "t": "a b"}
    assert encode_query(params) == urlencode(params) == "n=5&t=a+b"  # type: ignore[arg-type]


# --------------------------------------------------------------------------- status codes

STATUS_TABLE = [
    (0, NothingSentError, "No se logro ningún envío", "nothing was sent"),
    (-1, AuthenticationError, "Autenticación fallida. Usuario o Clave Incorrecta", "authentic"),
    (-2, MissingFieldsError, "Faltan campos con data", "fields missing"),
    (-3, MissingFieldsError, "Campos teléfonos y texto son obligatorios", "mandatory"),
    (-4, NoActivePlanError, "La empresa no tiene Plan de SMS Activo", "no active SMS plan"),
    (-5, InsufficientCreditsError, "La Empresa NO dispone de SMS", "company has no SMS"),
    (-6, InsufficientCreditsError, "El usuario NO dispone de SMS", "user has no SMS"),
]


@pytest.mark.parametrize(("code", "cls", "mensaje", "english"), STATUS_TABLE)
def test_error_for_status(code: int, cls: type[APIError], mensaje: str, english: str) -> None:
    err = error_for_status(code, mensaje)
    assert type(err) is cls
    assert (err.code, err.mensaje) == (code, mensaje)
    assert english in err.explanation
    assert english in str(err) and mensaje in str(err) and str(code) in str(err)


@pytest.mark.parametrize(("code", "cls", "mensaje", "english"), STATUS_TABLE)
def test_status_round_trip_through_xml(
    code: int, cls: type[APIError], mensaje: str, english: str
) -> None:
    resp = parse_send_response(_send_xml(code, mensaje))
    assert (resp.status, resp.mensaje) == (code, mensaje)
    with pytest.raises(cls) as info:
        resp.raise_for_status()
    assert info.value.code == code


@pytest.mark.parametrize("code", [-1, -4])
def test_account_errors_share_a_base(code: int) -> None:
    assert isinstance(error_for_status(code), errors.AccountError)


def test_unknown_negative_status_is_a_plain_api_error() -> None:
    err = error_for_status(-9, "raro")
    assert type(err) is APIError and err.code == -9


def test_insufficient_credits_preflight_message() -> None:
    err = InsufficientCreditsError(-6, needed=10, available=3)
    assert "needs 10 credits" in str(err) and "has 3" in str(err)


# --------------------------------------------------------------------------- bad bodies

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<respuesta><mensaje>&lol4;</mensaje><status>1</status></respuesta>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE respuesta [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<respuesta><mensaje>&xxe;</mensaje><status>1</status></respuesta>"""

BAD_BODIES = {
    "html page": b"<html><head><title>500</title></head><body><h1>Error</h1></body></html>",
    "html doctype": b"<!DOCTYPE html><html><body>Service Unavailable</body></html>",
    "truncated": SEED_SEND_XML[: len(SEED_SEND_XML) // 2],
    "truncated at the end": SEED_SEND_XML[:-5],
    "empty": b"",
    "blank": b"  \r\n ",
    "wrong root": b"<response><status>1</status></response>",
    "namespaced root": b'<respuesta xmlns="urn:x"><status>1</status></respuesta>',
    "billion laughs": BILLION_LAUGHS,
    "external entity": XXE,
    "late doctype": b"<!--"
    + b" " * 9000
    + b"--><!DOCTYPE r []><respuesta><status>1</status></respuesta>",
    "non-integer status": b"<respuesta><mensaje>x</mensaje><status>tres</status></respuesta>",
    "float status": b"<respuesta><status>3.0</status></respuesta>",
    "underscore status": b"<respuesta><status>1_000</status></respuesta>",
    "missing status": b"<respuesta><mensaje>x</mensaje></respuesta>",
    "empty status": b"<respuesta><status></status></respuesta>",
    "bad celular status": _send_xml(1, celulares='<celular id="1" status="ok"/>'),
    "bad celular id": _send_xml(1, celulares='<celular id="uno" status="0"/>'),
    "undefined entity": b"<respuesta><status>&nope;</status></respuesta>",
    "trailing garbage": SEED_CREDIT_XML + b"<b>Notice</b>",
    "json": b'{"status": 3}',
    "unknown charset": b'<?xml version="1.0" encoding="x-nope"?><respuesta/>',
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_bad_send_bodies_raise_protocol_error(name: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_send_response(BAD_BODIES[name], http_status=200)
    assert info.value.http_status == 200
    assert info.value.may_have_been_received


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html><body>Not Found</body></html>",
        b"<respuesta><mensaje>x</mensaje></respuesta>",
        b"<respuesta><creditos>mucho</creditos></respuesta>",
        SEED_CREDIT_XML[:30],
        XXE.replace(b"<status>1</status>", b"<creditos>1</creditos>"),
    ],
)
def test_bad_credit_bodies_raise_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_credit_response(body, http_status=200)


def test_external_entity_is_never_read(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("TOP-SECRET-CONTENT")
    body = XXE.replace(b"file:///etc/passwd", secret_file.as_uri().encode())
    with pytest.raises(ProtocolError) as info:
        parse_send_response(body)
    assert "TOP-SECRET-CONTENT" not in f"{info.value} {info.value.excerpt}"


def test_oversized_body_is_refused_before_parsing() -> None:
    body = b"<respuesta><status>1</status><mensaje>" + b"x" * MAX_RESPONSE_BYTES + b"</mensaje>"
    with pytest.raises(ProtocolError, match="too large"):
        parse_send_response(body)
    with pytest.raises(ProtocolError, match="too large"):
        parse_credit_response(body)


@pytest.mark.parametrize("name", ["html page", "html doctype"])
def test_html_pages_are_named_as_such(name: str) -> None:
    with pytest.raises(ProtocolError, match="HTML page"):
        parse_send_response(BAD_BODIES[name])


def test_protocol_error_carries_status_and_excerpt() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_send_response(b"<html><body>Bad   Gateway</body></html>", http_status=502)
    err = info.value
    assert err.http_status == 502
    assert err.excerpt == "<html><body>Bad Gateway</body></html>"
    assert "HTTP 502" in str(err)


def test_excerpt_is_bounded() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_send_response(b"<html>" + b"y" * 50_000)
    assert 0 < len(info.value.excerpt) <= 200


# --------------------------------------------------------------------------- charsets


def _credit(mensaje: str, declaration: str | None, encoding: str) -> bytes:
    decl = f'<?xml version="1.0" encoding="{declaration}"?>' if declaration else ""
    text = f"{decl}<respuesta><creditos>5</creditos><mensaje>{mensaje}</mensaje></respuesta>"
    return text.encode(encoding)


@pytest.mark.parametrize(
    ("declaration", "encoding"),
    [
        ("ISO-8859-1", "iso-8859-1"),
        ("iso-8859-1", "iso-8859-1"),
        ("windows-1252", "cp1252"),
        ("UTF-8", "utf-8"),
        ("utf-8", "utf-8"),
        (None, "utf-8"),  # docs/protocol.md §5.4: no declaration means UTF-8
        (None, "iso-8859-1"),  # ... falling back to ISO-8859-1 on a decode error
        ("UTF-8", "iso-8859-1"),  # mislabelled: the same fallback
    ],
)
def test_charsets(declaration: str | None, encoding: str) -> None:
    assert parse_credit_response(_credit("envío ñandú", declaration, encoding)).mensaje == (
        "envío ñandú"
    )


def test_latin1_declared_celular_texto() -> None:
    body = (
        '<?xml version="1.0" encoding="ISO-8859-1"?><respuesta><mensaje>Envio Exitoso</mensaje>'
        '<status>1</status><telefonos><celular id="1" sid="s" status="0" '
        'num_celular="584141234567" texto="envío"/></telefonos></respuesta>'
    ).encode("latin-1")
    assert b"env\xedo" in body
    assert parse_send_response(body).celulares[0].texto == "envío"


def test_str_body_ignores_its_declaration() -> None:
    text = _credit("envío", "ISO-8859-1", "latin-1").decode("latin-1")
    assert parse_credit_response(text).mensaje == "envío"


# --------------------------------------------------------------------------- masking

ECHO_BODIES = {
    "raw": f"<html><body>bad login for clave={SECRET}</body></html>",
    "query": "<html><body>GET /SendSms?usuario=u&clave="
    + encode_query({"c": SECRET})[2:]
    + "</body></html>",
    "lowercase escapes": "<html>clave=s3cr3t-P%40ss%3b%7c%26%3d</html>",
    "html escaped": "<html><p>s3cr3t-P@ss;|&amp;=</p></html>",
    "at the cut": "<html>" + "z" * 192 + SECRET + "</html>",
    "in status": "<respuesta><status>" + SECRET.replace("&", "&amp;") + "</status></respuesta>",
}


@pytest.mark.parametrize("name", sorted(ECHO_BODIES))
def test_excerpts_mask_credentials(name: str) -> None:
    body = ECHO_BODIES[name].encode()
    with pytest.raises(ProtocolError) as info:
        parse_send_response(body, secrets=(SECRET,))
    text = f"{info.value} {info.value!r} {info.value.args} {info.value.excerpt}"
    for leak in ("s3cr3t-P@", "s3cr3t-P%40", "s3cr3t-P@ss;|&amp;="):
        assert leak not in text
    assert "**" in text  # masked (the excerpt's bound may cut the mask itself)


def test_partial_secret_at_the_window_edge_is_dropped() -> None:
    # The secret starts inside the decoded window and ends beyond it.
    body = ("<html>" + " " * 794 + "x" + SECRET + "</html>").encode()
    with pytest.raises(ProtocolError) as info:
        parse_send_response(body, secrets=(SECRET,))
    assert "s3cr3t" not in str(info.value)


def test_mensaje_echoing_the_password_is_masked() -> None:
    echoed = SECRET.replace("&", "&amp;")  # as the XML carries it
    resp = parse_send_response(_send_xml(-1, f"clave {echoed} incorrecta"), secrets=[SECRET])
    assert resp.mensaje == "clave *** incorrecta"


@pytest.mark.parametrize(
    ("text", "secret", "expected"),
    [
        ("a p@ss b", "p@ss", "a *** b"),
        ("a p%40ss b", "p@ss", "a *** b"),
        ("a contrase%F1a b", "contraseña", "a *** b"),
        ("a contrase%C3%B1a b", "contraseña", "a *** b"),
        ("nothing here", "p@ss", "nothing here"),
        ("empty secret", "", "empty secret"),
    ],
)
def test_mask(text: str, secret: str, expected: str) -> None:
    assert mask(text, [secret, None]) == expected
