"""attach_delivery on 1M results and 1M status events: seconds and peak memory.

    python benchmarks/bench_merge.py                 # 1M x 1M, 3 runs per method
    python benchmarks/bench_merge.py --rows 200000 --runs 1

The data: ``--rows`` results (97% accepted, the rest rejected or invalid, ids in shuffled
order) and as many status events, shuffled (out of order), covering ~86% of the accepted
messages, with repeated callbacks, messages that failed and were then delivered (or the
reverse) and ~1% ids that match no row. It is generated once, written to parquet, and
every measurement runs in a fresh Python process that reads it, so each peak-memory
figure is that method's own: the peak resident set size (Linux ``VmHWM``, reset just
before the call through ``/proc/self/clear_refs``) minus the resident size before it.

Methods, measured in the same run:

- ``attach_delivery``: the package (sort events, ``drop_duplicates``, hash lookup).
- ``groupby-last + merge``: the obvious pandas spelling: sort, ``groupby().last()``,
  ``merge`` back, ``where`` the state. (Also subtly wrong: ``last()`` takes the last
  *non-null* value per column, so a failed event inherits the line of an earlier
  delivered one.)
- ``per-row Python``: a dict of the latest event per id, then a loop over the rows, on a
  ``--sample`` of the rows, scaled to the full size (labelled as such).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

STATES = ["invalid", "suppressed", "scheduled", "accepted", "rejected", "unknown"]


def make_data(rows: int, folder: Path, seed: int = 0) -> None:
    """Write results.parquet and status.parquet for ``rows`` results and events."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2024-05-01 14:00", tz="UTC")
    ids = rng.permutation(rows).astype("int64") + 123_451
    roll = rng.random(rows)
    state = np.where(roll < 0.97, "accepted", np.where(roll < 0.985, "rejected", "invalid"))
    codes = rng.choice(np.array(["412", "414", "416", "424", "426"]), rows)
    tails = rng.integers(1_000_000, 10_000_000, rows).astype(str)
    phones = pd.Series(np.char.add(np.char.add("58", codes), tails), dtype="string")
    sent_at = t0 + pd.to_timedelta(rng.integers(0, 3_600_000_000, rows), unit="us")
    message_id = pd.array(ids, dtype="Int64")
    message_id[state == "invalid"] = pd.NA
    results = pd.DataFrame(
        {
            "phone": phones,
            "text": pd.Series(["Hola, tu saldo vence pronto"] * rows, dtype="string"),
            "state": pd.Categorical(state, categories=[*STATES, "delivered", "failed"]),
            "reason": pd.Series([None] * rows, dtype="string"),
            "batch": pd.array(np.arange(rows) // 500, dtype="Int64"),
            "message_id": message_id,
            "sent_at": sent_at,
        }
    )

    # events: one per covered message, then repeats and second opinions, then noise
    accepted_ids = ids[state == "accepted"]
    covered = rng.choice(accepted_ids, size=int(rows * 0.80), replace=False)
    n_repeat = int(rows * 0.12)
    n_flip = int(rows * 0.07)
    n_unknown = rows - len(covered) - n_repeat - n_flip
    repeat = rng.choice(covered, n_repeat)
    flip = rng.choice(covered, n_flip)
    unknown = rng.integers(10**9, 2 * 10**9, n_unknown)
    ev_ids = np.concatenate([covered, repeat, flip, unknown])
    n = len(ev_ids)
    by_id = pd.Series(sent_at, index=ids)
    base = pd.DatetimeIndex(by_id.reindex(ev_ids)).tz_convert("UTC").fillna(t0)
    delay = rng.exponential(8.0, n) + np.where(np.arange(n) >= len(covered), 30.0, 0.0)
    updated = (base + pd.to_timedelta(delay, unit="s")).floor("s")
    status = np.where(rng.random(n) < 0.9, "delivered", "failed")
    events = pd.DataFrame(
        {
            "message_id": pd.array(ev_ids, dtype="Int64"),
            "status": pd.Categorical(status, categories=["delivered", "failed"]),
            "updated_at": updated.tz_convert("America/Caracas"),
            "user": pd.Series(["demo@massiva.test"] * n, dtype="string"),
            "detail": pd.Series(
                np.where(status == "delivered", "+584141234567", "ERROR EN ENVIO"), dtype="string"
            ),
            "line": pd.Series(
                np.where(status == "delivered", "584141234567", None), dtype="string"
            ),
            "received_at": updated.tz_convert("UTC") + pd.to_timedelta(rng.random(n), unit="s"),
        }
    )
    events = events.iloc[rng.permutation(n)].reset_index(drop=True)  # out of order
    results.to_parquet(folder / "results.parquet")
    events.to_parquet(folder / "status.parquet")


# ------------------------------------------------------------------- the methods


def _baseline_groupby(results: Any, log: Any) -> Any:
    import pandas as pd

    ordered = log.sort_values(["updated_at", "received_at"])
    last = ordered.groupby("message_id").last()[["status", "updated_at", "line"]]
    merged = results.merge(last, left_on="message_id", right_index=True, how="left")
    accepted = (merged["state"] == "accepted") & merged["status"].notna()
    state = merged["state"].astype(object).where(~accepted, merged["status"].astype(object))
    merged["state"] = pd.Categorical(state, categories=results["state"].cat.categories)
    updated = merged["updated_at"].dt.tz_convert("UTC")
    merged["delivered_at"] = updated.where(merged["state"] == "delivered")
    merged["latency"] = merged["delivered_at"] - merged["sent_at"]
    return merged


def _baseline_loop(results: Any, log: Any) -> Any:
    latest: dict[int, tuple[Any, Any, str]] = {}
    for mid, status, upd, rec in zip(
        log["message_id"], log["status"], log["updated_at"], log["received_at"], strict=True
    ):
        key = (upd, rec)
        if mid not in latest or key >= latest[mid][:2]:
            latest[mid] = (upd, rec, status)
    states = []
    for mid, state in zip(results["message_id"], results["state"], strict=True):
        if state == "accepted" and mid is not None and mid in latest:
            states.append(latest[mid][2])
        else:
            states.append(state)
    out = results.copy()
    out["state"] = states
    return out


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def measure(method: str, folder: str, sample: int) -> None:
    """Child process: read the data, run one method once, print a JSON line."""
    import resource

    import pandas as pd

    from massiva_frames.analytics.delivery import attach_delivery

    results = pd.read_parquet(Path(folder) / "results.parquet")
    log = pd.read_parquet(Path(folder) / "status.parquet")
    scale = 1.0
    if method == "loop":
        scale = len(results) / sample
        results = results.iloc[:sample]
        log = log.iloc[: int(len(log) / scale)]
    func = {
        "attach_delivery": lambda: attach_delivery(results, log),
        "groupby": lambda: _baseline_groupby(results, log),
        "loop": lambda: _baseline_loop(results, log),
    }[method]
    try:  # reset the peak RSS (Linux), so VmHWM is this call's peak
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        resettable = True
    except OSError:
        resettable = False
    before = _rss_kb("VmRSS")
    t, cpu = time.perf_counter(), time.process_time()
    out = func()
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    peak = _rss_kb("VmHWM") if resettable else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    counts = {str(k): int(v) for k, v in out["state"].value_counts().items() if v}
    print(
        json.dumps(
            {
                "seconds": seconds * scale,
                "cpu": cpu * scale,
                "peak_mb": (peak - before) / 1024 * scale,
                "rss_before_mb": before / 1024,
                "counts": counts,
                "scaled": scale != 1.0,
            }
        )
    )


def run_child(method: str, folder: Path, sample: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", method, "--data", str(folder)]
    cmd += ["--sample", str(sample)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    """Generate the data, measure every method in fresh processes, print a table."""
    parser = argparse.ArgumentParser(description="attach_delivery at scale")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sample", type=int, default=50_000, help="rows for per-row Python")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        measure(args.child, args.data, args.sample)
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        make_data(args.rows, folder)
        print(
            f"data: {args.rows:,} results, {args.rows:,} status events "
            f"(generated in {time.perf_counter() - t:.1f} s); {args.runs} run(s) per method, "
            "each in a fresh process"
        )
        table = []
        for method, label in (
            ("attach_delivery", "attach_delivery"),
            ("groupby", "groupby-last + merge"),
            ("loop", f"per-row Python ({args.sample:,}-row sample, scaled)"),
        ):
            runs = [run_child(method, folder, args.sample) for _ in range(args.runs)]
            table.append(
                (
                    method,
                    label,
                    statistics.median(r["seconds"] for r in runs),
                    statistics.median(r["cpu"] for r in runs),
                    max(r["peak_mb"] for r in runs),
                    runs[0]["counts"],
                )
            )

    ours = table[0]
    print(f"\n{'method':<48} {'seconds':>8} {'cpu s':>7} {'x ours':>7} {'peak MB':>8}")
    for _, label, seconds, cpu, peak, _counts in table:
        print(f"{label:<48} {seconds:>8.2f} {cpu:>7.2f} {seconds / ours[2]:>7.1f} {peak:>8.0f}")
    agree = table[1][5].get("delivered") == ours[5].get("delivered")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\nfinal states (attach_delivery): {ours[5]}")
    print(f"groupby-last + merge agrees on the delivered count: {agree}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
