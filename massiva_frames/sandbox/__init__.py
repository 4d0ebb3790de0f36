"""A local server that behaves like the Massiva SMS API, for tests, notebooks and demos.

::

    from massiva_frames.sandbox import sandbox

    with sandbox(credits=100, status_url=receiver_url, callback_delay=0.2) as sb:
        client = MassivaClient(sb.usuario, sb.clave, base_url=sb.base_url)
        ...
        sb.wait_callbacks(10)
        sb.messages()      # DataFrame of every accepted message and its final status
        sb.contacts()      # the phones each request's ``grupo`` saved

It is a real HTTP server (waitress, 16 threads) serving ``/webservices/SendSms`` and
``/webservices/obtenerCreditoDisponible`` over GET and POST, with accounts, company and
user credits, per-message ids, delayed final-status callbacks (docs/protocol.md §2), inbound
messages (docs/protocol.md §3) and fault injection. It implements the server side of the
protocol on its own: it never imports the package's client or protocol modules.

Where the provider's document is silent, the sandbox decides (docs/protocol.md §6):

- **Order of checks**: ``-2`` (usuario or clave missing/empty), ``-3`` (telefonos or
  texto missing/empty), ``-1`` (wrong user or password), ``-4`` (plan inactive), then the
  per-phone checks; ``0`` when no phone is valid; ``-5``/``-6`` when the company's/user's
  credits are fewer than the accepted phones. Error answers (status < 0) carry no
  ``<telefonos>`` and use no ids.
- **Credits**: one credit per accepted message (not per segment). A request needing
  more than is left is refused whole (``-5``/``-6``), nothing accepted. ``company_credits
  =None`` means the company has no limit of its own.
- **Per-phone rejection** (``status="2"``, ``sid="N/A"``): a phone that is not ``58`` +
  412/414/416/424/426 + 7 digits (exactly 12 digits, no ``+``, no spaces), a text longer
  than 160 characters (Python characters), an empty text among paired texts. Phones are
  stripped; empty entries (a trailing ``;``) are ignored. A phone repeated in one
  request is accepted twice.
- **Paired texts**: when ``texto`` holds ``|``, text *i* goes to phone *i*; a count
  mismatch gives status ``0`` with every phone rejected.
- **Ids**: every ``<celular>`` (rejected ones too, also in a status-0 answer) takes the
  next id from one counter starting at 123451, like the provider's sample. ``sid`` is
  phone + a 4-digit send counter + ``YYYYmmddHHMMSS`` (Caracas time), as in
  ``584164248750000420111115161438``; two entries for the same phone in one request
  share a sid.
- **Encoding**: parameters are UTF-8 unless the Content-Type names ISO-8859-1/cp1252;
  bytes that are not valid UTF-8 fall back to ISO-8859-1. The body may be
  percent-encoded or raw (the provider's PHP sample does not encode it). The answer is
  UTF-8 XML without declaration (``Content-Type: text/xml; charset=utf-8``); characters
  XML cannot carry are echoed as U+FFFD.
- **GET URLs** longer than 2048 characters (``http://host:port/path?query``) are
  answered ``414`` (the provider's stated limit); ``max_url_length=None`` lifts it.
- **Credit query**: works with an inactive plan; ``-1`` with a message for missing
  fields or failed authentication.
- **Contact groups** (``grupo``, docs/protocol.md §1.1): each account has one address
  book. An accepted phone that is not in it yet is saved to the request's ``grupo``
  (stripped; ``CONTACTOS`` when missing or blank); a phone already saved keeps its first
  group. Rejected phones and refused requests save nothing. :meth:`Sandbox.contacts`
  lists the book (``group``, ``phone``, ``usuario``, ``added_at``, ``request_no``).
- **Callbacks**: each accepted message's fate (fails with ``fail_ratio``, line, reply
  with ``reply_ratio`` when delivered) is drawn from ``random.Random(seed)`` in
  acceptance order. ``detalle`` is ``+58414...`` (the dispatching line) or ``ERROR EN
  ENVIO``; ``fecha_actualizacion`` is America/Caracas local time. Parameters are
  urlencoded and appended with ``&`` when the URL already has a query (a token). A
  failed delivery (refused, timeout, non-200) is retried with exponential backoff, five
  attempts in all, so duplicates can happen, as with the provider.
- **Faults** (see :meth:`Sandbox.inject`): ``http503``/``http429`` refuse the request
  before processing it (never recorded). ``latency`` waits (a set time, or until a
  ``gate`` event is set), then processes normally.
  ``http500``/``http502``, ``reset``, ``hang``, ``truncated`` and ``html`` process the
  request first: its messages are recorded, so a client that re-sends produces a
  duplicate a test can see. ``before=True`` (``http500``, ``http502``, ``reset``)
  fails before anything is recorded. ``reset`` closes the TCP connection with an RST
  and no response; ``hang`` never answers and drops the connection when the client
  leaves, after ``hang_seconds`` (60) or when the server stops.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from .server import Sandbox, sandbox

__all__ = ["Sandbox", "sandbox"]


class _CallableModule(types.ModuleType):
    """Lets ``massiva_frames.sandbox(...)`` work although ``sandbox`` is also a package.

    Importing a submodule binds the package attribute ``massiva_frames.sandbox`` to this
    module, whatever the top level imported under that name; making the module callable
    keeps ``with massiva_frames.sandbox() as sb:`` working in every import order.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return sandbox(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
