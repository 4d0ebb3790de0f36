"""The ``df.massiva`` accessor: a thin face over the package's functions.

Importing this module registers the accessor (``import massiva_frames`` imports it).
Every method only forwards to the function of the same name, so ``df.massiva.send(...)``
and ``df.pipe(massiva_frames.send, ...)`` are the same call::

    checked = df.massiva.validate(phone="telefono", template="Hola {nombre}")
    planned = df.massiva.plan(phone="telefono", template="Hola {nombre}")
    results = df.massiva.send(phone="telefono", template="Hola {nombre}", journal="j.db")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from ..wire.client import MassivaClient

# Nothing to import: importing the module registers ``df.massiva``.
__all__: list[str] = []

#: plan_batches's own options; every other keyword goes to validate.
_PLAN_OPTIONS = (
    "method",
    "max_phones",
    "client",
    "base_url",
    "usuario",
    "clave",
    "group",
    "max_url",
)


@pd.api.extensions.register_dataframe_accessor("massiva")
class MassivaAccessor:
    """``df.massiva``: :func:`validate`, :func:`plan` and :func:`send` on this frame.

    Examples
    --------
    >>> import massiva_frames.faces.accessor  # registers df.massiva
    >>> df = pd.DataFrame({"tel": ["0414-1234567"], "nombre": ["Ana"]})
    >>> df.massiva.validate(phone="tel", template="Hola {nombre}")["state"].tolist()
    ['ready']
    """

    def __init__(self, df: pd.DataFrame) -> None:
        self._df = df

    def validate(self, **options: Any) -> pd.DataFrame:
        """:func:`massiva_frames.prepare.validation.validate` on this frame."""
        from ..prepare.validation import validate

        return validate(self._df, **options)

    def plan(self, **options: Any) -> pd.DataFrame:
        """Validate, then :func:`massiva_frames.prepare.batching.plan_batches`.

        ``method``, ``max_phones``, ``client``, ``group`` (and the URL options) go to the
        planner; every other keyword to validation.
        """
        from ..prepare.batching import plan_batches
        from ..prepare.validation import validate

        planning = {k: options.pop(k) for k in _PLAN_OPTIONS if k in options}
        return plan_batches(validate(self._df, **options), **planning)

    def send(self, *, client: MassivaClient | None = None, **options: Any) -> pd.DataFrame:
        """:func:`massiva_frames.sending.campaign.send` on this frame (same keywords)."""
        from ..sending.campaign import send

        results: pd.DataFrame = send(self._df, client=client, **options)
        return results
