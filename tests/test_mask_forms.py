"""``mask``: every form a password takes on the wire or in an echoed page comes out as ``***``.

The forms are built here from the standard library, independently of ``errors.py``:
the password as typed, HTML-escaped (with and without quotes), JSON-escaped (ASCII and
not), and percent-encoded as a query or a form body carries it (``quote`` and
``quote_plus``, ``@`` kept or escaped, in UTF-8, Latin-1 and cp1252, escapes in upper
or lower case). The passwords are chosen so that these forms differ from each other:
one form missing from the mask is then a leak these tests see.
"""

from __future__ import annotations

import html
import json
import re
from urllib.parse import quote, quote_plus

import pytest

from massiva_frames.errors import MASK, mask

PASSWORDS = [
    # ñ differs between UTF-8 and Latin-1; '@', ' ', '/' between quote and quote_plus and
    # the safe characters; '&', '"', "'", '<' between the HTML escapes
    "señ@ 1/2&\"'<x",
    # '€' is cp1252 only (0x80): no Latin-1 form at all
    "pr€cio @1",
    # not Latin-1 at all: only the UTF-8 and JSON forms exist
    "密码 @секрет",
    # '%' and '+' are themselves escaped by the URL encodings
    "a+b%2Bc d",
]


def _percent_lower(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), text)


def forms_of(password: str) -> dict[str, str]:
    """Every form of ``password``, labelled, as the wire, a log or an error page shows it."""
    forms = {
        "as typed": password,
        "html, quotes kept": html.escape(password, quote=False),
        "html, quotes escaped": html.escape(password, quote=True),
        "json, ascii": json.dumps(password)[1:-1],
        "json, utf-8": json.dumps(password, ensure_ascii=False)[1:-1],
    }
    for encoding in ("utf-8", "iso-8859-1", "cp1252"):
        try:
            password.encode(encoding)
        except UnicodeEncodeError:
            continue
        encoded = {
            f"quote {encoding}": quote(password, safe="", encoding=encoding),
            f"quote_plus {encoding}": quote_plus(password, safe="", encoding=encoding),
            f"quote @ kept {encoding}": quote(password, safe="@", encoding=encoding),
        }
        forms |= encoded
        forms |= {f"{label}, lower-case escapes": _percent_lower(v) for label, v in encoded.items()}
    return forms


CASES = [
    pytest.param(password, form, id=f"{i}-{label}")
    for i, password in enumerate(PASSWORDS)
    for label, form in forms_of(password).items()
]


def test_the_passwords_exercise_distinct_forms() -> None:
    # the point of the chosen passwords: the forms are not all the same string
    assert len(set(forms_of(PASSWORDS[0]).values())) >= 10
    assert "iso-8859-1" not in " ".join(forms_of(PASSWORDS[1]))
    assert "quote cp1252" in forms_of(PASSWORDS[1])
    labels = " ".join(forms_of(PASSWORDS[2]))
    assert "quote utf-8" in labels and "iso-8859-1" not in labels and "cp1252" not in labels


@pytest.mark.parametrize(("password", "form"), CASES)
def test_every_form_is_masked_whole(password: str, form: str) -> None:
    text = f"GET /SendSms?usuario=u&clave={form} -> error page: {form}."
    assert mask(text, [password]) == f"GET /SendSms?usuario=u&clave={MASK} -> error page: {MASK}."


@pytest.mark.parametrize(("password", "form"), CASES)
def test_masked_among_other_secrets_and_none(password: str, form: str) -> None:
    masked = mask(f"user usuario1 pass {form}", [None, "", "usuario1", password])
    assert masked == f"user {MASK} pass {MASK}"


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_form_inside_a_longer_one_leaves_no_tail(password: str) -> None:
    # the HTML form of "x&" starts with "x&" itself: the longer form must win, whole
    for secret in ("x&", password + "&"):
        escaped = html.escape(secret)
        assert mask(f"[{escaped}]", [secret]) == f"[{MASK}]"


def test_nothing_to_mask() -> None:
    assert mask("no secret here", [None, ""]) == "no secret here"
    assert mask("", ["p@ss"]) == ""
    assert mask("nothing of it here", ["p@ss"]) == "nothing of it here"


def test_text_that_merely_resembles_is_left_alone() -> None:
    # a prefix of the password, or another user's password, is not masked
    assert mask("señ@ 1/ and señ", [PASSWORDS[0]]) == "señ@ 1/ and señ"


def test_the_longest_form_wins_case_blind_across_secrets() -> None:
    # "x%3b" (one secret as typed) is a case-blind prefix of "x%3B%3B" (another secret,
    # "x;;", percent-encoded): the longer must be masked whole, not leave "%3B" behind
    assert mask("[x%3B%3B]", ["x%3b", "x;;"]) == f"[{MASK}]"
    assert mask("[x%3b%3b]", ["x;;", "x%3B"]) == f"[{MASK}]"
