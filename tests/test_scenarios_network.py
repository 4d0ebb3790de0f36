"""The network chaos scenarios (``benchmarks/scenarios_network.py``) at bounded sizes.

Each test checks the guarantee and that the scenario did what it says (the attack held
its connections, the provider really trickled), so a scenario that stopped testing fails.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    path = ROOT / "benchmarks" / "scenarios_network.py"
    spec = importlib.util.spec_from_file_location("massiva_scenarios_network", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


scenarios = _load()
SMALL = scenarios.Sizes(idle=150, slow=60, connection_limit=120, callbacks=40,
                        warmup_seconds=1.5, trickle_rows=120, trickle_deadline=1.0)  # fmt: skip


def test_callbacks_are_answered_promptly_under_a_flood(tmp_path: Path) -> None:
    fig = scenarios.receiver_flood(SMALL, tmp_path, request_timeout=5.0, client_timeout=30.0)
    assert fig.callbacks == SMALL.callbacks
    assert fig.answered == fig.stored == SMALL.callbacks
    assert (fig.lost, fig.duplicated) == (0, 0)
    # The attack held about the limit the whole time, and churned against it.
    assert fig.held_mean >= SMALL.connection_limit * 0.8
    assert fig.closed_by_server > 0
    # waitress's stock settings make each of these wait about two minutes.
    assert fig.p99 < 5.0
    assert fig.p50_quiet < 1.0


def test_a_trickling_provider_ends_within_the_deadline_and_its_rows_are_unknown(
    tmp_path: Path,
) -> None:
    fig = scenarios.trickling_provider(SMALL, tmp_path, concurrency=2)
    assert fig.requests >= 1
    assert fig.unknown == fig.rows and fig.accepted == 0
    assert fig.hangs == 0 and fig.seconds <= fig.bound
    assert fig.seconds >= SMALL.trickle_deadline  # it did wait for the answer
    assert fig.resent == 0
    assert fig.deadline_threads_left == 0
