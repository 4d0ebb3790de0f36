"""massiva-frames: bulk SMS through the Massiva API from pandas DataFrames.

The public verbs take and return DataFrames::

    import massiva_frames as mf

    checked = mf.validate(df, phone="telefono", template="Hola {nombre}")
    results = mf.send(df, phone="telefono", template="Hola {nombre}", journal="sends.db")
    status = mf.read_callbacks("callback-logs", kind="status")
    report = mf.delivery_summary(mf.attach_delivery(results, status), by="operator")

Importing the package registers the ``df.massiva`` accessor (so it imports pandas);
every other name is imported lazily, on first use, so ``import massiva_frames`` never
pulls in requests, lxml, ipywidgets or matplotlib. The ``massiva-frames`` console script
starts from :mod:`massiva_frames_cli`, which has no use for the accessor: loaded from
there, the package imports pandas only when a command needs it.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

from ._version import __version__

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
    "Reason": "massiva_frames.prepare.reasons",
    "failure_cases": "massiva_frames.prepare.validation",
    "validate": "massiva_frames.prepare.validation",
    "validation_summary": "massiva_frames.prepare.validation",
    "normalize_phones": "massiva_frames.prepare.phones",
    "segment_count": "massiva_frames.prepare.texts",
    "split_text": "massiva_frames.prepare.texts",
    "transliterate": "massiva_frames.prepare.texts",
    "Batch": "massiva_frames.prepare.batching",
    "iter_batches": "massiva_frames.prepare.batching",
    "minimum_requests": "massiva_frames.prepare.lower_bound",
    "plan_batches": "massiva_frames.prepare.batching",
    # sending
    "JournalBusyError": "massiva_frames.errors",
    "JournalCorruptError": "massiva_frames.errors",
    "JournalError": "massiva_frames.errors",
    "JournalFullError": "massiva_frames.errors",
    "JournalReadOnlyError": "massiva_frames.errors",
    "JournalVersionError": "massiva_frames.errors",
    "NotAJournalError": "massiva_frames.errors",
    "JournalUnavailableError": "massiva_frames.errors",
    "STATES": "massiva_frames.sending.results",
    "CancelCounts": "massiva_frames.sending.cancelling",
    "cancel": "massiva_frames.sending.cancelling",
    "dispatch": "massiva_frames.sending.campaign",
    "results_from_journal": "massiva_frames.sending.campaign",
    "send": "massiva_frames.sending.campaign",
    "ResendCounts": "massiva_frames.sending.resending",
    "resend": "massiva_frames.faces.followup",
    "StreamSummary": "massiva_frames.sending.streaming",
    "send_stream": "massiva_frames.sending.streaming",
    # transport and sandbox
    "MassivaClient": "massiva_frames.wire.client",
    "Sandbox": "massiva_frames.sandbox",
    "sandbox": "massiva_frames.sandbox",
    # callbacks
    "CompactionStats": "massiva_frames.receiving",
    "Receiver": "massiva_frames.receiving",
    "compact": "massiva_frames.receiving",
    "read_callbacks": "massiva_frames.receiving",
    "receiver": "massiva_frames.receiving",
    # analytics
    "attach_delivery": "massiva_frames.analytics.delivery",
    "delivery_summary": "massiva_frames.analytics.summary",
    "operator_of": "massiva_frames.analytics.summary",
    "opt_outs": "massiva_frames.analytics.inbound",
    "replies": "massiva_frames.analytics.inbound",
    "delivery_report_figure": "massiva_frames.analytics.plots",
    "plot_deliveries_over_time": "massiva_frames.analytics.plots",
    "plot_delivery_by_operator": "massiva_frames.analytics.plots",
    "plot_latency": "massiva_frames.analytics.plots",
    # notebook faces
    "DeliveryDashboard": "massiva_frames.faces.widgets",
    "SendWidget": "massiva_frames.faces.widgets",
    "load_sample_campaign": "massiva_frames.faces.demo",
    "run_demo": "massiva_frames.faces.demo",
}

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:
    from .analytics.delivery import attach_delivery
    from .analytics.inbound import opt_outs, replies
    from .analytics.plots import (
        delivery_report_figure,
        plot_deliveries_over_time,
        plot_delivery_by_operator,
        plot_latency,
    )
    from .analytics.summary import delivery_summary, operator_of
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
        JournalCorruptError,
        JournalError,
        JournalFullError,
        JournalReadOnlyError,
        JournalUnavailableError,
        JournalVersionError,
        MassivaError,
        MissingFieldsError,
        NoActivePlanError,
        NotAJournalError,
        NothingSentError,
        ProtocolError,
        RateLimitedError,
        ResponseMismatchError,
        TransportError,
        URLTooLongError,
    )
    from .faces.demo import load_sample_campaign, run_demo
    from .faces.followup import resend
    from .faces.widgets import DeliveryDashboard, SendWidget
    from .prepare.batching import Batch, iter_batches, plan_batches
    from .prepare.lower_bound import minimum_requests
    from .prepare.phones import normalize_phones
    from .prepare.reasons import Reason
    from .prepare.texts import segment_count, split_text, transliterate
    from .prepare.validation import failure_cases, validate, validation_summary
    from .receiving import CompactionStats, Receiver, compact, read_callbacks, receiver
    from .sandbox import Sandbox, sandbox
    from .sending.campaign import dispatch, results_from_journal, send
    from .sending.cancelling import CancelCounts, cancel
    from .sending.resending import ResendCounts
    from .sending.results import STATES
    from .sending.streaming import StreamSummary, send_stream
    from .wire.client import MassivaClient


# ``df.massiva``: registering the accessor needs pandas, and nothing heavier. The command
# line (started from massiva_frames_cli) does not use it and would wait most of a second
# for pandas on every ``--help``; it gets the accessor only if pandas is there anyway.
if "massiva_frames_cli" not in sys.modules or "pandas" in sys.modules:
    from .faces import accessor as _accessor  # noqa: F401


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
