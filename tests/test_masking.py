"""A password that is not Latin-1, and log records that cannot be formatted: still masked.

``contraseña-ñ€😀`` has no Latin-1 or cp1252 form and a 4-byte UTF-8 character: every
shape it takes (raw, percent-encoded in UTF-8, JSON-escaped with surrogate pairs) must
stay out of logs, exceptions, reprs, the journal and the results. A record whose
arguments do not fit its format makes logging print the raw message and arguments to
stderr: a GET URL among them would carry the password.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pandas as pd
import pytest

from massiva_frames.errors import InputError, MassivaError, mask
from massiva_frames.sandbox import Sandbox, sandbox
from massiva_frames.sending.campaign import send
from massiva_frames.wire.client import MassivaClient

SECRET = "contraseña-ñ€😀"
USER = "ana@massiva.test"
LEAKS = (
    SECRET,
    quote(SECRET, safe=""),
    quote_plus(SECRET, safe=""),
    quote(SECRET, safe="").lower(),
    json.dumps(SECRET)[1:-1],  # \u00f1 ... \ud83d\ude00
    ascii(SECRET)[1:-1],  # \xf1 ... \U0001f600
    repr(SECRET.encode("utf-8"))[2:-1],  # \xc3\xb1 ...
    "contrase",  # any partial form of it
)
PHONES = ["584141234567", "584241234567"]


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for leak in LEAKS:
            assert leak not in text, f"password leaked as {leak!r}"


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with sandbox(usuario=USER, clave=SECRET, credits=100, callback_delay=60, hang_seconds=10) as s:
        yield s


def test_mask_covers_every_form_of_the_password() -> None:
    for leak in LEAKS[:-1]:
        assert mask(f"a {leak} b", [SECRET]) == "a *** b"


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("case", ["ok", "connect", "hang", "http500"])
def test_a_password_outside_latin1_never_leaks(
    sb: Sandbox, caplog: pytest.LogCaptureFixture, free_port: int, method: str, case: str
) -> None:
    caplog.set_level(logging.DEBUG)
    url, timeout = sb.base_url, (2.0, 5.0)
    if case == "connect":
        url = f"http://127.0.0.1:{free_port}/webservices"
    elif case == "hang":
        sb.inject("hang", count=1)
        timeout = (2.0, 0.3)
    elif case == "http500":
        sb.inject("http500", count=1)
    with MassivaClient(
        USER, SECRET, url, method=method, timeout=timeout, backoff_factor=0.01
    ) as client:
        assert_no_secret(repr(client), str(vars(client)))
        if case == "ok":
            assert client.send_batch(PHONES, "Hola").status == 2
            assert client.credits() == 98
        else:
            with pytest.raises(MassivaError) as info:
                client.send_batch(PHONES, "Hola")
            err = info.value
            assert_no_secret(str(err), repr(err), "".join(traceback.format_exception(err)))
    assert_no_secret(caplog.text, *(str(r.args) for r in caplog.records))
    if case in ("ok", "connect") and method == "GET":
        # urllib3 logged the URL, so the check above could have failed
        assert any("clave=***" in r.getMessage() for r in caplog.records)


def test_a_charset_that_cannot_carry_the_password_says_so_without_it(sb: Sandbox) -> None:
    client = MassivaClient(USER, SECRET, sb.base_url, encoding="latin-1")
    with pytest.raises(InputError, match=r"\['clave'\] cannot be encoded") as info:
        client.credits()
    assert_no_secret(str(info.value), "".join(traceback.format_exception(info.value)))
    assert len(sb.requests()) == 0


def test_the_journal_and_the_results_hold_no_password(sb: Sandbox, tmp_path: Path) -> None:
    df = pd.DataFrame({"phone": ["04141234567", "04241234567"], "msg": ["Hola", "Chao"]})
    journal = tmp_path / "j.db"
    with MassivaClient(USER, SECRET, sb.base_url, method="GET") as client:
        results = send(df, client=client, text="msg", journal=journal, progress=False)
    assert (results["state"] == "accepted").all()
    assert_no_secret(results.to_csv(), repr(results.attrs))
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        for encoded in (SECRET.encode("utf-8"), SECRET.encode("utf-16-le"), b"contrase"):
            assert encoded not in data, path.name


@pytest.fixture
def urllib3_to_stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Logger]:
    """urllib3's request logger printing to this test's stderr, through one handler."""
    logger = logging.getLogger("urllib3.connectionpool")
    monkeypatch.setattr(logging, "raiseExceptions", True)  # print the record that failed
    monkeypatch.setattr(logger, "propagate", False)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    yield logger
    logger.setLevel(old)


@pytest.mark.parametrize(
    ("fmt", "extra"),
    [
        ("%s %s", ()),  # too few arguments
        ("%d requests", ()),  # the wrong type
        ("%s", ("one too many",)),
        ("%(url)s", ()),  # a mapping key, no mapping
    ],
)
def test_an_unformattable_record_is_masked_on_stderr(
    sb: Sandbox,
    urllib3_to_stderr: logging.Logger,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
    extra: tuple[str, ...],
) -> None:
    client = MassivaClient(USER, SECRET, sb.base_url, method="GET")
    url = f"{client.send_url}?usuario={USER}&clave={quote_plus(SECRET, safe='')}"
    # Only a plain handler: pytest's own capture handlers raise on a bad record.
    monkeypatch.setattr(urllib3_to_stderr, "handlers", [logging.StreamHandler(sys.stderr)])
    urllib3_to_stderr.debug(fmt, url, *extra)
    urllib3_to_stderr.debug("%s", SECRET.encode("utf-8"))  # bytes: their repr is escaped
    err = capsys.readouterr().err
    assert_no_secret(err)
    assert "clave=***" in err  # the record is still there, readable and masked
    assert "\\xc3\\xb1" not in err
