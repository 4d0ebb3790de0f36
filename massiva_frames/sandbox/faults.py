"""Fault injection for the sandbox: what can go wrong between a client and the provider.

A fault is armed with :meth:`FaultPlan.inject` and drawn once per SendSms or credit
request, in arrival order. Armed faults are checked in the order they were injected;
the first one that fires applies and the others are left untouched.

- ``count=N`` alone: the next N requests.
- ``ratio=r`` alone: each request with probability r, until cleared; ``seed`` makes the
  draws reproducible (without it they derive from the sandbox's seed).
- both: with probability r, at most N times.
- neither: every request until :meth:`FaultPlan.clear`.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError

__all__ = ["FAULTS", "Fault", "FaultPlan"]

#: fault name -> accepted options and their defaults
FAULTS: dict[str, dict[str, Any]] = {
    "latency": {"seconds": 1.0, "gate": None},
    "http500": {"before": False},
    "http502": {"before": False},
    "http503": {"retry_after": None},
    "http429": {"retry_after": None},
    "hang": {"seconds": None},
    "reset": {"before": False},
    "truncated": {},
    "html": {},
}


@dataclass
class Fault:
    """One armed fault: its name, options and how often it still fires."""

    name: str
    opts: dict[str, Any]
    count: int | None
    ratio: float | None
    rng: random.Random = field(repr=False)
    fired: int = 0

    def draw(self) -> bool:
        """Decide whether this fault applies to the current request."""
        if self.count is not None and self.fired >= self.count:
            return False
        if self.ratio is not None and self.rng.random() >= self.ratio:
            return False
        self.fired += 1
        return True

    @property
    def exhausted(self) -> bool:
        """True once a counted fault has fired ``count`` times."""
        return self.count is not None and self.fired >= self.count


class FaultPlan:
    """The armed faults of one sandbox (thread-safe).

    Examples
    --------
    >>> plan = FaultPlan(seed=0)
    >>> plan.inject("http503", count=1, retry_after=2)
    >>> plan.draw().opts["retry_after"], plan.draw()
    (2, None)
    """

    def __init__(self, *, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._seed = seed
        self._armed = 0

    def inject(
        self,
        fault: str,
        *,
        count: int | None = None,
        ratio: float | None = None,
        seed: int | None = None,
        **opts: Any,
    ) -> None:
        """Arm ``fault`` (see the module docstring for ``count``/``ratio``)."""
        if fault not in FAULTS:
            raise InputError(f"unknown fault {fault!r}; expected one of {sorted(FAULTS)}")
        allowed = FAULTS[fault]
        unknown = sorted(set(opts) - set(allowed))
        if unknown:
            raise InputError(
                f"fault {fault!r} takes no option(s) {unknown}; known: {sorted(allowed)}"
            )
        if count is not None and (isinstance(count, bool) or int(count) < 1):
            raise InputError(f"count must be a positive integer, got {count!r}")
        if ratio is not None and not 0.0 <= float(ratio) <= 1.0:
            raise InputError(f"ratio must be between 0 and 1, got {ratio!r}")
        merged = {**allowed, **opts}
        with self._lock:
            self._armed += 1
            rng = random.Random(seed if seed is not None else f"{self._seed}:{self._armed}")
            self._faults.append(
                Fault(
                    fault,
                    merged,
                    None if count is None else int(count),
                    None if ratio is None else float(ratio),
                    rng,
                )
            )

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._faults.clear()

    def draw(self) -> Fault | None:
        """Return the fault that applies to the current request, if any."""
        with self._lock:
            chosen = None
            for fault in self._faults:
                if fault.draw():
                    chosen = fault
                    break
            self._faults = [f for f in self._faults if not f.exhausted]
            return chosen

    def armed(self) -> list[str]:
        """Names of the faults still armed, in injection order."""
        with self._lock:
            return [f.name for f in self._faults]
