"""massiva-frames: bulk SMS through the Massiva API from pandas DataFrames.

The public verbs take and return DataFrames::

    import massiva_frames as mf

    checked = mf.validate(df, phone="telefono", template="Hola {nombre}")
    results = mf.send(df, phone="telefono", template="Hola {nombre}", journal="sends.db")
    status = mf.read_callbacks("callback-logs", kind="status")
    report = mf.delivery_summary(mf.attach_delivery(results, status), by="operator")

Importing the package registers the ``df.massiva`` accessor (so it imports pandas);
every other name is imported lazily, on first use, so ``import massiva_frames`` never
pulls in requests, lxml, ipywidgets or matplotlib.
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
    # preparation
    "Reason": "massiva_frames.validation",
    "failure_cases": "massiva_frames.validation",
    "validate": "massiva_frames.validation",
    "validation_summary": "massiva_frames.validation",
    "normalize_phones": "massiva_frames.phones",
    "segment_count": "massiva_frames.texts",
    "split_text": "massiva_frames.texts",
    "transliterate": "massiva_frames.texts",
    "Batch": "massiva_frames.batching",
    "iter_batches": "massiva_frames.batching",
    "minimum_requests": "massiva_frames.batching",
    "plan_batches": "massiva_frames.batching",
    # sending
    "JournalBusyError": "massiva_frames.errors",
    "STATES": "massiva_frames.results",
    "dispatch": "massiva_frames.sending",
    "results_from_journal": "massiva_frames.sending",
    "send": "massiva_frames.sending",
    # transport and sandbox
    "MassivaClient": "massiva_frames.client",
    "Sandbox": "massiva_frames.sandbox",
    "sandbox": "massiva_frames.sandbox",
    # callbacks
    "CompactionStats": "massiva_frames.callbacks",
    "Receiver": "massiva_frames.callbacks",
    "compact": "massiva_frames.callbacks",
    "read_callbacks": "massiva_frames.callbacks",
    "receiver": "massiva_frames.callbacks",
    # analytics
    "attach_delivery": "massiva_frames.analytics",
    "delivery_summary": "massiva_frames.analytics",
    "operator_of": "massiva_frames.analytics",
    "opt_outs": "massiva_frames.analytics",
    "replies": "massiva_frames.analytics",
    "delivery_report_figure": "massiva_frames.plots",
    "plot_deliveries_over_time": "massiva_frames.plots",
    "plot_delivery_by_operator": "massiva_frames.plots",
    "plot_latency": "massiva_frames.plots",
    # notebook faces
    "DeliveryDashboard": "massiva_frames.widgets",
    "SendWidget": "massiva_frames.widgets",
    "load_sample_campaign": "massiva_frames.demo",
    "run_demo": "massiva_frames.demo",
}

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:
    from .analytics import attach_delivery, delivery_summary, operator_of, opt_outs, replies
    from .batching import Batch, iter_batches, minimum_requests, plan_batches
    from .callbacks import CompactionStats, Receiver, compact, read_callbacks, receiver
    from .client import MassivaClient
    from .demo import load_sample_campaign, run_demo
    from .errors import (
        AccountError,
        AmbiguousSendError,
        APIError,
        AuthenticationError,
        ConnectError,
        HTTPStatusError,
        InputError,
        InsufficientCreditsError,
        JournalBusyError,
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
    from .phones import normalize_phones
    from .plots import (
        delivery_report_figure,
        plot_deliveries_over_time,
        plot_delivery_by_operator,
        plot_latency,
    )
    from .results import STATES
    from .sandbox import Sandbox, sandbox
    from .sending import dispatch, results_from_journal, send
    from .texts import segment_count, split_text, transliterate
    from .validation import Reason, failure_cases, validate, validation_summary
    from .widgets import DeliveryDashboard, SendWidget


# ``df.massiva``: registering the accessor needs pandas, and nothing heavier.
from . import accessor as _accessor  # noqa: E402


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'massiva_frames' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    # ``sandbox`` is both a subpackage and its entry point: the (callable) package
    # itself is returned, so ``massiva_frames.sandbox()`` and ``.sandbox.Sandbox`` work.
    value = module if module_name.rsplit(".", 1)[-1] == name else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
