"""The sandbox's books: accounts, credits, contact groups, accepted messages, the request log.

Everything here is guarded by one lock, so the WSGI threads, the callback dispatcher
and the test thread can read and write at once. The send rules (docs/protocol.md §1) are
implemented in :meth:`SandboxState.send`; where the provider's document is silent the
decisions are listed in :mod:`massiva_frames.sandbox` (and docs/protocol.md §6).
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CARACAS",
    "FIRST_MESSAGE_ID",
    "LINES",
    "REPLIES",
    "Account",
    "Celular",
    "Message",
    "RequestRecord",
    "SandboxState",
    "SendOutcome",
    "caracas_now",
    "valid_phone",
]


def _caracas() -> tzinfo:
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo("America/Caracas")
    except Exception:  # pragma: no cover - no tz database: Venezuela is UTC-4 since 2016
        return timezone(timedelta(hours=-4), "VET")


#: docs/protocol.md §2: callback times are Venezuelan local time.
CARACAS = _caracas()

#: The seed's sample response numbers its entries from 123451.
FIRST_MESSAGE_ID = 123451

#: Platform lines that "dispatch" messages and receive replies (docs/protocol.md §2, §3).
LINES = ("584141234567", "584241234567", "584121234567", "584161234567")

#: Replies a share of recipients send back (docs/protocol.md §3), opt-out keywords included.
REPLIES = (
    "Gracias",
    "Ok, recibido",
    "BAJA",
    "STOP",
    "¿Quién es?",
    "No me interesa",
    "Sí, me interesa",
    "Llámenme por favor",
    "baja",
    "Excelente, gracias!",
)

# docs/protocol.md §1.2: 12 characters, 58 + 412/414/416/424/426 + 7 digits.
_PHONE_RE = re.compile(r"58(?:412|414|416|424|426)[0-9]{7}", re.ASCII)
MAX_TEXT = 160

# docs/protocol.md §1.4: the provider's messages, word for word.
_MESSAGES = {
    0: (
        "No se logro ningún envío. Verifique la longitud de el(los) mensaje(s) o que "
        "los teléfonos de envío estén correctos"
    ),
    -1: "Autenticación fallida. Usuario o Clave Incorrecta",
    -2: "Faltan campos con data (usuario, clave, teléfono, texto). No se pueden enviar SMS",
    -3: "Campos teléfonos y texto son obligatorios",
    -4: (
        "La empresa no tiene Plan de SMS Activo. Por favor comuníquese con el "
        "Administrador del Sistema"
    ),
    -5: (
        "La Empresa NO dispone de SMS para enviar. Por favor comuníquese con el "
        "Administrador del Sistema"
    ),
    -6: (
        "El usuario NO dispone de SMS para enviar. Por favor comuníquese con el "
        "Administrador del Sistema"
    ),
}
_MISMATCH = "La cantidad de mensajes no coincide con la cantidad de teléfonos"
_SUCCESS = "Envio Exitoso"


def caracas_now() -> datetime:
    """Return the current time in America/Caracas (docs/protocol.md §2)."""
    return datetime.now(CARACAS)


def valid_phone(phone: str) -> bool:
    """Return True for a 12-digit Venezuelan mobile number.

    Examples
    --------
    >>> valid_phone("584164248750"), valid_phone("786786786")
    (True, False)
    """
    return _PHONE_RE.fullmatch(phone) is not None


@dataclass
class Account:
    """One user of the sandbox: login, password and SMS credits."""

    usuario: str
    clave: str = field(repr=False)
    credits: int


class Celular(NamedTuple):
    """One ``<celular>`` entry of a SendSms answer (a tuple: 500 are built per request)."""

    id: int
    sid: str
    status: int
    num_celular: str
    texto: str


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """The answer to one SendSms request, before it is written as XML."""

    status: int
    mensaje: str
    celulares: tuple[Celular, ...] = ()
    accepted_ids: tuple[int, ...] = ()


@dataclass(slots=True)
class Message:
    """One accepted message, with the fate decided when it was accepted.

    Built on demand: the state keeps each message as a plain tuple of these fields up
    to ``reply`` (see ``SandboxState._records``), which the garbage collector stops
    tracking, so a sandbox holding millions of messages does not slow down.
    """

    id: int
    sid: str
    phone: str
    text: str
    usuario: str
    grupo: str
    accepted_at: datetime
    request_no: int
    line: str
    fails: bool
    reply: str | None
    final: str = "pending"
    updated_at: datetime | None = None


#: a stored message: Message's fields up to ``reply``
_Record = tuple[int, str, str, str, str, str, datetime, int, str, bool, str | None]
_FAILS = 9  # Message.fails in a stored record


@dataclass(slots=True)
class RequestRecord:
    """One HTTP request the sandbox received (the password is never kept)."""

    request_no: int
    received_at: datetime
    method: str
    path: str
    usuario: str | None = None
    n_phones: int = 0
    n_texts: int = 0
    charset: str = "utf-8"
    url_length: int | None = None
    http_status: int = 200
    api_status: int | None = None
    accepted: int = 0
    fault: str | None = None
    recorded: bool = False


class SandboxState:
    """Accounts, company credits, plan, accepted messages and the request log.

    Parameters
    ----------
    seed : int
        Seed of the random source that decides each message's fate (failure, line,
        reply), drawn in acceptance order so a sequential run is reproducible.
    fail_ratio, reply_ratio : float
        Share of accepted messages that fail; share of delivered ones that get a reply.
    """

    def __init__(
        self,
        *,
        company_credits: int | None = None,
        plan_active: bool = True,
        fail_ratio: float = 0.1,
        reply_ratio: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.lock = threading.RLock()
        self.accounts: dict[str, Account] = {}
        self.company_credits = company_credits
        self.plan_active = plan_active
        self.fail_ratio = fail_ratio
        self.reply_ratio = reply_ratio
        self._rng = random.Random(seed)
        self._next_id = FIRST_MESSAGE_ID
        self._lote = 0
        self._request_no = 0
        # id -> (id, sid, phone, text, usuario, grupo, accepted_at, request_no, line,
        # fails, reply): exact tuples of atomic values, which CPython's collector
        # untracks; instances of a class would be traversed on every full collection
        # (measured: 1.5-2x slower requests once a few hundred thousand are held).
        self._records: dict[int, _Record] = {}
        self._finals: dict[int, tuple[str, datetime]] = {}  # id -> (final, updated_at)
        self._requests: list[RequestRecord] = []
        # docs/protocol.md §1.1: each account's address book, phone -> (group, added_at,
        # request_no); a phone is saved once, in the group of the first request that
        # sent to it.
        self._contacts: dict[str, dict[str, tuple[str, datetime, int]]] = {}

    # -- accounts ------------------------------------------------------------------
    def add_account(self, usuario: str, clave: str, credits: int) -> None:
        """Create or replace an account."""
        with self.lock:
            self.accounts[usuario] = Account(usuario, clave, int(credits))

    def authenticate(self, usuario: str, clave: str) -> Account | None:
        """Return the account when the login and password match, else None."""
        account = self.accounts.get(usuario)
        if account is None or account.clave != clave:
            return None
        return account

    # -- request log ---------------------------------------------------------------
    def next_request_no(self) -> int:
        """Number the next request (1, 2, ...)."""
        with self.lock:
            self._request_no += 1
            return self._request_no

    def log_request(self, record: RequestRecord) -> None:
        """Append a finished (or abandoned) request to the log."""
        with self.lock:
            self._requests.append(record)

    def request_records(self) -> list[RequestRecord]:
        """A copy of the request log, in request order."""
        with self.lock:
            return sorted(self._requests, key=lambda r: r.request_no)

    # -- sending -------------------------------------------------------------------
    def send(self, params: Mapping[str, str], *, request_no: int) -> SendOutcome:
        """Apply the SendSms rules to decoded parameters; record what is accepted."""
        usuario = params.get("usuario", "").strip()
        clave = params.get("clave", "")
        if not usuario or not clave.strip():
            return SendOutcome(-2, _MESSAGES[-2])
        telefonos = params.get("telefonos", "")
        texto = params.get("texto", "")
        # A trailing or doubled ';' leaves empty entries: they are not phones.
        phones = [p.strip() for p in telefonos.split(";")]
        phones = [p for p in phones if p]
        if not phones or not texto.strip():
            return SendOutcome(-3, _MESSAGES[-3])
        grupo = params.get("grupo", "").strip() or "CONTACTOS"
        texts = texto.split("|")
        with self.lock:
            account = self.authenticate(usuario, clave)
            if account is None:
                return SendOutcome(-1, _MESSAGES[-1])
            if not self.plan_active:
                return SendOutcome(-4, _MESSAGES[-4])
            if len(texts) > 1 and len(texts) != len(phones):
                # docs/protocol.md §1.2: with several texts their count must equal the
                # phones' count; otherwise the sandbox sends nothing (§6).
                cels = tuple(
                    Celular(self._take_id(), "N/A", 2, p, texts[i] if i < len(texts) else "")
                    for i, p in enumerate(phones)
                )
                return SendOutcome(0, _MISMATCH, cels)
            if len(texts) == 1:
                texts = texts * len(phones)
            fullmatch = _PHONE_RE.fullmatch
            ok = [
                fullmatch(p) is not None and 0 < len(t) <= MAX_TEXT
                for p, t in zip(phones, texts, strict=True)
            ]
            n_ok = sum(ok)
            if n_ok == 0:
                cels = tuple(
                    Celular(self._take_id(), "N/A", 2, p, t)
                    for p, t in zip(phones, texts, strict=True)
                )
                return SendOutcome(0, _MESSAGES[0], cels)
            # A request needing more credits than are left is refused whole.
            if self.company_credits is not None and self.company_credits < n_ok:
                return SendOutcome(-5, _MESSAGES[-5])
            if account.credits < n_ok:
                return SendOutcome(-6, _MESSAGES[-6])
            account.credits -= n_ok
            if self.company_credits is not None:
                self.company_credits -= n_ok
            self._lote += 1
            now = datetime.now(UTC)
            # Seed: sid = phone + zero-padded send counter + YYYYmmddHHMMSS local time.
            stamp = f"{self._lote:04d}{now.astimezone(CARACAS):%Y%m%d%H%M%S}"
            first = self._next_id
            self._next_id = first + len(phones)
            # The loop runs 500 times per request: everything it calls is bound locally,
            # Celular built without its keyword-handling __new__.
            draw = self._rng.random
            fail_ratio, reply_ratio = self.fail_ratio, self.reply_ratio
            n_lines, n_replies = len(LINES), len(REPLIES)
            records = self._records
            contact = (grupo, now, request_no)
            add_contact = self._contacts.setdefault(usuario, {}).setdefault
            new_tuple = tuple.__new__
            cels_list: list[Celular] = []
            add_cel = cels_list.append
            accepted: list[int] = []
            add_accepted = accepted.append
            for mid, phone, text, good in zip(
                range(first, first + len(phones)), phones, texts, ok, strict=True
            ):
                if not good:
                    add_cel(new_tuple(Celular, (mid, "N/A", 2, phone, text)))
                    continue
                sid = phone + stamp
                add_cel(new_tuple(Celular, (mid, sid, 0, phone, text)))
                add_accepted(mid)
                add_contact(phone, contact)  # a phone already in the book keeps its group
                # Always draw the same four numbers per message (fails, line, replies,
                # reply), so changing one ratio does not reshuffle the other fates.
                # random() rather than randrange(): a quarter of the cost, the same
                # determinism.
                fails = draw() < fail_ratio
                line = LINES[int(draw() * n_lines)]
                replies = draw() < reply_ratio
                reply = REPLIES[int(draw() * n_replies)]
                records[mid] = (
                    mid,
                    sid,
                    phone,
                    text,
                    usuario,
                    grupo,
                    now,
                    request_no,
                    line,
                    fails,
                    reply if replies and not fails else None,
                )
            return SendOutcome(n_ok, _SUCCESS, tuple(cels_list), tuple(accepted))

    def contacts_frame(self) -> pd.DataFrame:
        """Every account's address book as a DataFrame (see ``Sandbox.contacts``)."""
        import pandas as pd

        with self.lock:
            rows = [
                (group, phone, usuario, added_at, request_no)
                for usuario, book in self._contacts.items()
                for phone, (group, added_at, request_no) in book.items()
            ]
        rows.sort(key=lambda r: r[4])  # stable: request order, then order in the request
        cols = ("group", "phone", "usuario", "added_at", "request_no")
        data = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
        return pd.DataFrame(
            {
                "group": pd.Series(data["group"], dtype="string"),
                "phone": pd.Series(data["phone"], dtype="string"),
                "usuario": pd.Series(data["usuario"], dtype="string"),
                "added_at": pd.Series(data["added_at"], dtype="datetime64[us, UTC]"),
                "request_no": pd.Series(data["request_no"], dtype="int64"),
            }
        )

    def _take_id(self) -> int:
        mid = self._next_id
        self._next_id += 1
        return mid

    def credits_for(self, params: Mapping[str, str]) -> tuple[int, str]:
        """Answer a credit query (docs/protocol.md §4): ``(creditos, mensaje)``."""
        usuario = params.get("usuario", "").strip()
        clave = params.get("clave", "")
        if not usuario or not clave.strip():
            return -1, "parámetros no recibidos (usuario y clave)"
        with self.lock:
            account = self.authenticate(usuario, clave)
            if account is None:
                return -1, "autenticación fallida"
            return account.credits, "consulta exitosa"

    # -- dispatch ------------------------------------------------------------------
    def finalize(self, mid: int, when: datetime) -> Message | None:
        """Mark a pending message delivered or failed (its fate); None if unknown/done."""
        with self.lock:
            record = self._records.get(mid)
            if record is None or mid in self._finals:
                return None
            final = "failed" if record[_FAILS] else "delivered"
            self._finals[mid] = (final, when)
            return Message(*record, final, when)

    def pending_ids(self) -> list[int]:
        """Ids of the messages not dispatched yet."""
        with self.lock:
            finals = self._finals
            return [mid for mid in self._records if mid not in finals]

    def message_count(self) -> int:
        """How many messages were accepted."""
        with self.lock:
            return len(self._records)

    def messages_frame(self) -> pd.DataFrame:
        """Every accepted message as a DataFrame (see ``Sandbox.messages``)."""
        import pandas as pd

        with self.lock:
            pending = ("pending", None)
            rows = [
                (
                    mid,
                    sid,
                    phone,
                    text,
                    usuario,
                    at,
                    *self._finals.get(mid, pending),
                    line,
                    no,
                    grupo,
                )
                for mid, sid, phone, text, usuario, grupo, at, no, line, *_ in (
                    self._records.values()
                )
            ]
        cols = [
            "id",
            "sid",
            "phone",
            "text",
            "usuario",
            "accepted_at",
            "final",
            "updated_at",
            "line",
            "request_no",
            "grupo",
        ]
        data: dict[str, Any] = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
        frame = pd.DataFrame(
            {
                "id": pd.Series(data["id"], dtype="int64"),
                "sid": pd.Series(data["sid"], dtype="string"),
                "phone": pd.Series(data["phone"], dtype="string"),
                "text": pd.Series(data["text"], dtype="string"),
                "usuario": pd.Series(data["usuario"], dtype="string"),
                "accepted_at": pd.Series(data["accepted_at"], dtype="datetime64[us, UTC]"),
                "final": pd.Series(data["final"], dtype="string"),
                "updated_at": pd.Series(data["updated_at"], dtype="datetime64[us, UTC]"),
                "line": pd.Series(data["line"], dtype="string"),
                "request_no": pd.Series(data["request_no"], dtype="int64"),
                "grupo": pd.Series(data["grupo"], dtype="string"),
            }
        )
        return frame
