"""massiva-frames: bulk SMS through the Massiva API from pandas DataFrames.

The public verbs take and return DataFrames::

    import massiva_frames as mf

    checked = mf.validate(df, phone="telefono", template="Hola {nombre}")
    results = mf.send(df, phone="telefono", template="Hola {nombre}", journal="sends.db")
    status = mf.read_callbacks("callback-logs", kind="status")
    report = mf.delivery_summary(mf.attach_delivery(results, status), by="operator")

Names are imported lazily, so ``import massiva_frames`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # errors
    "APIError": "massiva_frames.errors",
    "AccountError": "massiva_frames.errors",
    "AmbiguousSendError": "massiva_frames.errors",
    "AuthenticationError": "massiva_frames.errors",
    "ConnectError": "massiva_frames.errors",
    "HTTPStatusError": "massiva_frames.errors",
    "InputError": "massiva_frames.errors",
    "InsufficientCreditsError": "massiva_frames.errors",
    "MassivaError": "massiva_frames.errors",
    "MissingFieldsError": "massiva_frames.errors",
    "NoActivePlanError": "massiva_frames.errors",
    "NothingSentError": "massiva_frames.errors",
    "ProtocolError": "massiva_frames.errors",
    "RateLimitedError": "massiva_frames.errors",
    "ResponseMismatchError": "massiva_frames.errors",
    "TransportError": "massiva_frames.errors",
    "URLTooLongError": "massiva_frames.errors",
}

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:
    from .errors import (  # noqa: F401
        AccountError,
        AmbiguousSendError,
        APIError,
        AuthenticationError,
        ConnectError,
        HTTPStatusError,
        InputError,
        InsufficientCreditsError,
        MassivaError,
        MissingFieldsError,
        NoActivePlanError,
        NothingSentError,
        ProtocolError,
        RateLimitedError,
        ResponseMismatchError,
        TransportError,
        URLTooLongError,
    )


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'massiva_frames' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
