"""Reason codes: why a row will not be sent, one stable code each, with a one-line message.

:func:`~massiva_frames.prepare.validation.validate` gives every row that will not be sent
one of these codes; :func:`~massiva_frames.prepare.validation.failure_cases` and
:func:`~massiva_frames.prepare.validation.validation_summary` show their messages.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Reason"]


class Reason(StrEnum):
    """Stable reason codes for rows that will not be sent; ``.message`` explains each.

    ``text_missing_value``: a value a template uses is missing: NaN, None, ``pd.NA``,
    ``NaT``, a ``nan``-like string, or a blank (empty or whitespace-only) string. A
    blank counts as missing by default, so that no customer gets ``"Hola , ..."``;
    ``validate(..., blank="keep")`` renders blanks as empty text instead, and
    ``blank={"nota": "keep"}`` does so for the named columns only (optional fields).

    ``text_not_scalar``: a value a template (or the text column) uses is not one value
    (a list, a tuple, a dict, a set, an array, a Series, bytes, or an object without a
    text form of its own): its Python ``repr`` is never sent.

    ``phone_international``: a valid number of another country, refused because the
    provider documents Venezuelan mobiles only; ``allow_international=True`` accepts it
    for an account the provider lets send abroad.
    """

    PHONE_MISSING = "phone_missing"
    PHONE_NOT_A_NUMBER = "phone_not_a_number"
    PHONE_TRUNCATED = "phone_truncated"
    PHONE_WRONG_LENGTH = "phone_wrong_length"
    PHONE_UNKNOWN_COUNTRY = "phone_unknown_country"
    PHONE_INTERNATIONAL = "phone_international"
    PHONE_LANDLINE = "phone_landline"
    PHONE_UNKNOWN_OPERATOR = "phone_unknown_operator"
    PHONE_TOO_LONG = "phone_too_long"
    TEXT_MISSING_VALUE = "text_missing_value"
    TEXT_NOT_SCALAR = "text_not_scalar"
    TEXT_FORMAT_ERROR = "text_format_error"
    TEXT_EMPTY = "text_empty"
    TEXT_CONTROL_CHARS = "text_control_chars"
    TEXT_SEPARATOR = "text_separator"
    TEXT_TOO_LONG = "text_too_long"
    URL_TOO_LONG = "url_too_long"
    OPTED_OUT = "opted_out"
    DUPLICATE = "duplicate"

    @property
    def message(self) -> str:
        """A one-line English explanation."""
        return _MESSAGES[self]

    @property
    def state(self) -> str:
        """``suppressed`` for opt-outs and duplicates, else ``invalid``."""
        return "suppressed" if self in (Reason.OPTED_OUT, Reason.DUPLICATE) else "invalid"


_MESSAGES: dict[Reason, str] = {
    Reason.PHONE_MISSING: "no phone number",
    Reason.PHONE_NOT_A_NUMBER: "the phone is not a number",
    Reason.PHONE_TRUNCATED: "the phone was stored in scientific notation and lost digits "
    "(e.g. 5.84141E+11 from Excel): the full number cannot be recovered",
    Reason.PHONE_WRONG_LENGTH: "the phone has the wrong number of digits",
    Reason.PHONE_UNKNOWN_COUNTRY: "the international prefix is not a country calling code",
    Reason.PHONE_INTERNATIONAL: "a number of another country: the provider documents "
    "Venezuelan mobiles only (allow_international=True if it accepts them for the account)",
    Reason.PHONE_LANDLINE: "a landline number: it cannot receive SMS",
    Reason.PHONE_UNKNOWN_OPERATOR: "the operator code is not one of the accepted mobile codes",
    Reason.PHONE_TOO_LONG: "the number does not fit in the API's 12 characters",
    Reason.TEXT_MISSING_VALUE: "a value used by the text is missing or blank "
    "(blank='keep' renders blank strings as empty)",
    Reason.TEXT_NOT_SCALAR: "a value used by the text is not a single value "
    "(a list, dict, array...): it would be sent as Python code",
    Reason.TEXT_FORMAT_ERROR: "a value used by the template cannot be formatted as asked",
    Reason.TEXT_EMPTY: "the text is empty or blank",
    Reason.TEXT_CONTROL_CHARS: "the text contains control characters (only newlines are allowed)",
    Reason.TEXT_SEPARATOR: "the text contains '|', the API's text separator",
    Reason.TEXT_TOO_LONG: "the text is longer than 160 characters "
    "(long_text='truncate' or 'split' to send it)",
    Reason.URL_TOO_LONG: "a GET request for this row alone would exceed 2048 characters",
    Reason.OPTED_OUT: "the phone is on the suppression (opt-out) list",
    Reason.DUPLICATE: "the same message to the same phone appears earlier in the frame",
}
