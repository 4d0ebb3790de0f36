"""The password in the local variables of a failed request's frames.

Debuggers, IPython's ``%xmode Verbose``, ``capture_locals=True`` and error trackers
(Sentry captures frame locals by default, and its scrubber knows "password", not
"clave") repr every local of every frame of a traceback, chained exceptions included.
Requests fail here inside the transport (reset, hang, refused, Ctrl-C), and every local
of every frame those tools can reach is repr'd the ways they do it.
"""

from __future__ import annotations

import pydoc
import reprlib
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from types import FrameType
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest

from massiva_frames.errors import (
    AmbiguousSendError,
    ConnectError,
    InputError,
    MassivaError,
    _secret_forms,
)
from massiva_frames.sandbox import Sandbox, sandbox
from massiva_frames.sending.campaign import send
from massiva_frames.wire.client import MassivaClient, _MaskedBody, _MaskedText, _Secret
from massiva_frames.wire.protocol import build_send_params, encode_query

if TYPE_CHECKING:
    from conftest import Scripted

# Distinctive, and with characters that every encoding of it changes.
PASSWORD = "Kz7-clave-ÚNICA@no;|&=+ filtrar"
USER = "locals@massiva.test"
FORMS = sorted(_secret_forms(PASSWORD), key=len)
PHONES = ["584141234567", "584241234567"]
FAULTS = ["reset", "hang", "refused"]
EXPECTED = {"reset": AmbiguousSendError, "hang": AmbiguousSendError, "refused": ConnectError}
TRANSPORT = ("/requests/", "/urllib3/", "/http/client.py", "/socket.py")


def _wide(cls: type[reprlib.Repr]) -> reprlib.Repr:
    """``cls()`` with its size limits lifted: nothing is hidden by a truncation."""
    r = cls()
    for name in vars(reprlib.Repr()):
        if name.startswith("max"):
            setattr(r, name, 10**7 if name != "maxlevel" else 12)
    return r


# What the tools print: repr (capture_locals, Sentry's safe_repr), reprlib (the
# debuggers' and IPython's short reprs), pydoc's TextRepr (cgitb and friends).
REPRS: dict[str, Callable[[object], str]] = {
    "repr": repr,
    "reprlib": reprlib.repr,
    "pydoc": pydoc.text.repr,
    "reprlib unbounded": _wide(reprlib.Repr).repr,
    "pydoc unbounded": _wide(pydoc.TextRepr).repr,
}


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with sandbox(usuario=USER, clave=PASSWORD, callback_delay=60, hang_seconds=5) as server:
        yield server


def _client(sb: Sandbox, fault: str, closed_port: int, **kwargs: Any) -> MassivaClient:
    """A client whose next request fails with ``fault``."""
    base_url = f"http://127.0.0.1:{closed_port}/webservices" if fault == "refused" else sb.base_url
    _arm(sb, fault)
    return MassivaClient(
        USER, PASSWORD, base_url, timeout=(2, 0.5), connect_retries=1, backoff_factor=0.01,
        **kwargs,
    )  # fmt: skip


def _arm(sb: Sandbox, fault: str) -> None:
    sb.clear_faults()
    if fault != "refused":
        sb.inject(fault, count=1)


def _frames(exc: BaseException, top: FrameType | None) -> list[FrameType]:
    """Every frame of ``exc``'s traceback and of its causes' and contexts', with each
    frame's callers up to ``top`` (a worker thread's, up to the thread's start)."""
    frames: dict[int, FrameType] = {}
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        tb = item.__traceback__
        while tb is not None:
            frame: FrameType | None = tb.tb_frame
            while frame is not None and id(frame) not in frames:
                frames[id(frame)] = frame
                frame = None if frame is top else frame.f_back
            tb = tb.tb_next
        todo += [item.__cause__, item.__context__]
    return list(frames.values())


def assert_no_password(exc: BaseException, top: FrameType | None) -> list[FrameType]:
    """Fail if any form of the password shows in a local of a frame ``exc`` reaches, in
    a chained exception's text, or in a ``capture_locals`` traceback; return the frames."""
    frames = _frames(exc, top)
    leaks = []
    for frame in frames:
        where = f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}"
        for name, value in frame.f_locals.items():
            for how, show in REPRS.items():
                text = show(value)
                leaks += [f"{where}: {name} ({how})" for form in FORMS if form in text]
    texts = [
        "".join(traceback.TracebackException.from_exception(exc, capture_locals=True).format())
    ]
    chained: list[BaseException | None] = [exc]
    while chained and len(texts) < 300:
        item = chained.pop()
        if item is not None:
            texts += [str(item), repr(item), repr(item.args)]
            chained += [item.__cause__, item.__context__]
    leaks += [f"exception text: ...{t[:200]}" for t in texts for form in FORMS if form in t]
    assert not leaks, "password in:\n" + "\n".join(sorted(set(leaks)))
    return frames


def _bodies_in_transport(frames: list[FrameType]) -> set[str]:
    """The requests/urllib3/http.client frames that hold the POST body, as file:name."""
    return {
        f"{frame.f_code.co_filename.rsplit('/', 2)[-2]}/{frame.f_code.co_name}:{name}"
        for frame in frames
        if any(part in frame.f_code.co_filename for part in TRANSPORT)
        for name, value in frame.f_locals.items()
        if isinstance(value, _MaskedBody)
        or (isinstance(value, tuple) and any(isinstance(v, _MaskedBody) for v in value))
    }


# --------------------------------------------------------------------------- send_batch


@pytest.mark.parametrize("fault", FAULTS)
def test_a_post_failing_in_the_transport_shows_no_password_in_any_frame(
    sb: Sandbox, free_port: int, fault: str
) -> None:
    client = _client(sb, fault, free_port)
    with pytest.raises(MassivaError) as info:
        client.send_batch(PHONES, "Hola ñandú")
    assert type(info.value) is EXPECTED[fault]
    frames = assert_no_password(info.value, sys._getframe())
    # The walk went through requests and urllib3 (the chained cause), and there the
    # body is the masked object the client built: passed on, never copied.
    assert any("/urllib3/" in f.f_code.co_filename for f in frames)
    held = _bodies_in_transport(frames)
    assert any(h.startswith("requests/") for h in held), held
    assert any(h.startswith("urllib3/") for h in held), held


@pytest.mark.parametrize("fault", FAULTS)
def test_a_failing_get_chains_nothing_and_masks_its_url(
    sb: Sandbox, free_port: int, fault: str
) -> None:
    # A GET's URL carries the password: the client's own frames hold it masked, and the
    # requests/urllib3 frames (plain URL strings) are not chained to the error.
    client = _client(sb, fault, free_port, method="GET")
    with pytest.raises(MassivaError) as info:
        client.send_batch(PHONES, "Hola")
    assert type(info.value) is EXPECTED[fault]
    frames = assert_no_password(info.value, sys._getframe())
    assert not any(part in f.f_code.co_filename for f in frames for part in TRANSPORT)
    with pytest.raises(MassivaError) as info:
        _arm(sb, fault)
        client.credits()
    assert_no_password(info.value, sys._getframe())


def test_ctrl_c_while_waiting_for_the_answer_shows_no_password(sb: Sandbox) -> None:
    # An exception the client does not translate keeps every transport frame, down to
    # the socket read: the POST body is the masked object in all of them.
    sb.inject("hang", count=1)
    client = MassivaClient(USER, PASSWORD, sb.base_url, timeout=(2, 10))
    main = threading.main_thread().ident
    assert main == threading.get_ident() and main is not None
    done = threading.Event()

    def ctrl_c() -> None:
        # Once the sandbox has the messages, the client is waiting for the answer.
        deadline = time.monotonic() + 4
        while len(sb.messages()) < len(PHONES) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not done.wait(0.1):
            signal.pthread_kill(main, signal.SIGINT)

    interrupter = threading.Thread(target=ctrl_c)
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt) as info:
            client.send_batch(PHONES, "Hola")
    finally:
        done.set()
        interrupter.join()
    frames = assert_no_password(info.value, sys._getframe())
    assert any("/socket.py" in f.f_code.co_filename for f in frames)
    held = _bodies_in_transport(frames)
    assert any(h.startswith("urllib3/") for h in held), held


# --------------------------------------------------------------------------- send()


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"phone": ["0414-123.45.67", "0424 1234567"], "text": ["Hola", "Chao"]})


@pytest.mark.parametrize("fault", FAULTS)
def test_send_whose_credit_check_fails_shows_no_password(
    sb: Sandbox, free_port: int, fault: str
) -> None:
    client = _client(sb, fault, free_port)
    with pytest.raises(MassivaError) as info:
        send(_frame(), client=client, text="text", progress=False)
    assert type(info.value) is EXPECTED[fault]
    assert_no_password(info.value, sys._getframe())


@pytest.mark.parametrize("fault", FAULTS)
def test_send_whose_batch_fails_shows_no_password(
    sb: Sandbox, free_port: int, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    # send() records a failed batch as rows and raises nothing: the exception an error
    # tracker would see is taken where it leaves the client, in the worker thread.
    client = MassivaClient(USER, PASSWORD, sb.base_url, timeout=(2, 0.5), connect_retries=0)
    if fault == "refused":  # the credit check reaches the sandbox, the batch nothing
        client.send_url = f"http://127.0.0.1:{free_port}/webservices/SendSms"
    caught: list[BaseException] = []
    send_batch = client.send_batch

    def failing(*args: Any, **kwargs: Any) -> Any:
        _arm(sb, fault)
        try:
            return send_batch(*args, **kwargs)
        except BaseException as exc:
            caught.append(exc)
            raise

    monkeypatch.setattr(client, "send_batch", failing)
    results = send(_frame(), client=client, text="text", progress=False)
    assert len(caught) == 1 and type(caught[0]) is EXPECTED[fault]
    # Sent, maybe received: unknown; never connected: left for the next run.
    assert (results["state"] == ("scheduled" if fault == "refused" else "unknown")).all()
    frames = assert_no_password(caught[0], None)
    assert any("massiva_frames/sending/loop.py" in f.f_code.co_filename for f in frames)
    assert any(h.startswith("urllib3/") for h in _bodies_in_transport(frames))


# --------------------------------------------------------------------------- the client


def test_the_constructor_frame_holds_the_password_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError) as info:
        MassivaClient(USER, PASSWORD, "ftp://example.invalid")
    assert_no_password(info.value, sys._getframe())
    monkeypatch.setenv("MASSIVA_CLAVE", PASSWORD)
    with pytest.raises(InputError) as info:
        MassivaClient(USER, base_url="http://example.invalid", timeout=-1)
    assert_no_password(info.value, sys._getframe())
    client = MassivaClient(USER, PASSWORD, "http://example.invalid", encoding="ascii")
    assert all(form not in show(vars(client)) for show in REPRS.values() for form in FORMS)
    with pytest.raises(InputError, match="clave") as info:  # 'Ú' is not ASCII
        client.credits()
    assert info.value.__context__ is None  # the encoder's frames are not chained
    assert_no_password(info.value, sys._getframe())


def test_the_masked_objects_are_plain_values_with_masked_reprs() -> None:
    secrets = (_Secret(PASSWORD),)
    query = encode_query(build_send_params(USER, PASSWORD, PHONES, "Hola"))
    text, body = _MaskedText(query, secrets), _MaskedBody(query, secrets)
    assert text == query and hash(text) == hash(query) and str(text) == query
    assert body == query.encode("ascii") and bytes(body) == query.encode("ascii")
    assert repr(text).startswith("'usuario=locals%40massiva.test&clave=***&telefonos=")
    assert repr(body).startswith("b'usuario=locals%40massiva.test&clave=***&telefonos=")
    params = build_send_params(USER, secrets[0], PHONES, "Hola")
    assert encode_query(params) == query and params == {**params, "clave": PASSWORD}
    for value in (text, body, params, secrets):
        assert all(form not in show(value) for show in REPRS.values() for form in FORMS)


# --------------------------------------------------------------------------- the wire


def _one_accepted(handler: BaseHTTPRequestHandler) -> None:
    answer = (
        b"<respuesta><mensaje>ok</mensaje><status>1</status><telefonos>"
        b'<celular id="1" sid="s" status="0" num_celular="584141234567" '
        b'texto="x"/></telefonos></respuesta>'
    )
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(answer)))
    handler.end_headers()
    handler.wfile.write(answer)


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_the_post_body_on_the_wire_is_unchanged(
    monkeypatch: pytest.MonkeyPatch, scripted: Callable[..., Scripted], encoding: str
) -> None:
    sent: list[tuple[type, bytes]] = []
    sendall = socket.socket.sendall

    def spy(self: socket.socket, data: Any, *args: Any) -> None:
        sent.append((type(data), bytes(data)))
        sendall(self, data, *args)

    recorder = scripted(_one_accepted)
    with MassivaClient(USER, PASSWORD, recorder.base_url, encoding=encoding) as client:
        monkeypatch.setattr(socket.socket, "sendall", spy)
        client.send_batch([PHONES[0]], "Hola ñandú & co; 100% =+", group="VIP")
        monkeypatch.undo()
    plain = {
        "usuario": USER,
        "clave": PASSWORD,
        "telefonos": PHONES[0],
        "texto": "Hola ñandú & co; 100% =+",
        "grupo": "VIP",
    }
    expected = encode_query(plain, encoding).encode("ascii")
    assert recorder.bodies == [expected]
    assert str(recorder.content_types[0]).startswith("application/x-www-form-urlencoded; charset=")
    # The socket was handed the client's own object: requests and urllib3 made no copy.
    assert [data for kind, data in sent if kind is _MaskedBody] == [expected]


def _trickling(status_line: bytes) -> Callable[[BaseHTTPRequestHandler], None]:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.close_connection = True
        try:
            handler.wfile.write(status_line)
            for _ in range(200):  # one byte every 50 ms: no read ever times out
                handler.wfile.write(b"X")
                handler.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass  # the client shut the connection down at its deadline

    return respond


@pytest.mark.parametrize("status_line", [b"", b"HTTP/1.1 200 OK\r\n"], ids=["status", "headers"])
@pytest.mark.parametrize("method", ["POST", "GET"])
def test_a_deadline_cut_shows_no_password(
    scripted: Callable[..., Scripted], method: str, status_line: bytes
) -> None:
    server = scripted(_trickling(status_line))
    client = MassivaClient(USER, PASSWORD, server.base_url, timeout=(2, 5), deadline=0.5)
    with pytest.raises(AmbiguousSendError, match="deadline") as info:
        client.send_batch(PHONES, "Hola", method=method)
    frames = assert_no_password(info.value, sys._getframe())
    if method == "GET":
        assert not any(part in f.f_code.co_filename for f in frames for part in TRANSPORT)
    elif not status_line:  # the cut status line fails in http.client: chained to the socket
        assert any(h.startswith("urllib3/") for h in _bodies_in_transport(frames))
