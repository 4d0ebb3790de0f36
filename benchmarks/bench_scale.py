"""Benchmark: preparation and delivery analytics at scale, beyond one pandas frame.

Two data sets are written first (in chunks, so writing them needs little memory):

- a messy audience as a parquet directory (``--rows``, default 10,000,000): phones in
  ten spreadsheet styles (~3% missing, landlines or junk, ~1% repeated customers), names
  with accents, balances with ~1% missing, filled into ``"Hola {nombre}, su saldo es
  {saldo:,.2f}"``;
- results and a receiver's status log (``--log-rows``, default 20,000,000 each): the
  results parquet, and the LOGDIR parquet dataset (``status/day=YYYY-MM-DD/part-*``) with
  repeated callbacks, second opinions and events of unknown ids.

Then each measurement runs in its own process, so its peak memory is its own:

- ``pandas``: ``read_parquet`` + ``validate`` (time, peak RSS);
- ``dask``: ``massiva_frames.engines.dask.validate`` + ``estimate`` on a ``LocalCluster`` of
  ``--workers`` worker processes (1 thread each), the result written as parquet (time,
  peak RSS of the client and of the largest worker);
- ``spark``: ``massiva_frames.engines.spark.validate`` + ``estimate`` with
  ``local[--workers]``, written as parquet (time, peak RSS of the Python driver, of the
  JVM and of the largest Python worker);
- ``duckdb``: ``write_attached`` (results x LOGDIR -> parquet) then ``delivery_summary`` of
  that file, both by DuckDB with ``memory_limit`` (time, peak RSS).

Peaks are the processes' ``VmHWM`` (Linux), sampled every 0.2 s for child processes.

``--stream`` measures sending instead, each send in a child process against an embedded
sandbox (``massiva_frames.sandbox``) in a process of its own (so neither the sandbox's
books nor this process count), with the child's peak RSS from ``resource.getrusage``
(and its ``VmHWM`` beside it):

- ``stream``: ``send_stream`` of ``--stream-rows`` audience rows (default 5,000,000) from
  the parquet directory, ``--chunk-rows`` at a time, SQLite journal, results written as
  a parquet dataset (time, peak RSS, messages/s end to end: both passes, validation,
  journal, requests, results);
- ``memory``: ``send`` of ``--memory-rows`` rows (default 1,000,000; 5,000,000 in memory
  peaks at ~7.5 GB) read into one frame, and ``stream`` of the same rows beside it
  (``stream_same``; the only streamed run when both sizes are equal). Sizes are rounded
  up to whole audience files (250,000 rows each).

    python benchmarks/bench_scale.py                        # 10M audience, 20M x 20M
    python benchmarks/bench_scale.py --rows 2000000 --log-rows 5000000
    python benchmarks/bench_scale.py --only duckdb --log-rows 20000000
    python benchmarks/bench_scale.py --stream               # 5M streamed, 1M both ways
    python benchmarks/bench_scale.py --stream --stream-rows 2000000 --memory-rows 500000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEMPLATE = "Hola {nombre}, su saldo es {saldo:,.2f}"
CHUNK = 250_000
STEPS = ("pandas", "dask", "spark", "duckdb")
SEND_STEPS = ("stream", "memory")
NAMES = ["José Pérez", "María González", "Luis Díaz", "Ana Muñoz", "Ángel Briceño", "Inés Rojas"]


# ------------------------------------------------------------------------ the data


def _audience_chunk(rows: int, seed: int) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    op = np.array(["412", "414", "416", "424", "426"])[rng.integers(0, 5, rows)]
    sub = np.char.zfill(rng.integers(0, 10_000_000, rows).astype(str), 7)
    nat = np.char.add(op, sub)
    styles = [
        np.char.add("58", nat),
        np.char.add(np.char.add(np.char.add("+58 ", op), "-"), sub),
        np.char.add(np.char.add(np.char.add("0", op), " "), sub),
        np.char.add(np.char.add(np.char.add("(0", op), ") "), sub),
        nat,
        np.char.add("0058", nat),
        np.char.add(np.char.add("58", nat), ".0"),
        np.char.add(np.char.add(" 0", nat), "\u00a0"),
        np.char.add(np.char.add("0", op), np.char.add("-", sub)),
        np.char.add("+58", nat),
    ]
    style = rng.integers(0, len(styles), rows)
    cells = np.empty(rows, dtype=object)
    for k, values in enumerate(styles):
        cells[style == k] = values[style == k]
    bad = rng.random(rows)
    cells[bad < 0.01] = None
    cells[(bad >= 0.01) & (bad < 0.02)] = "0212 5551234"
    cells[(bad >= 0.02) & (bad < 0.03)] = "sin teléfono"
    repeat = rng.random(rows) < 0.01
    cells[repeat] = cells[rng.integers(0, rows, int(repeat.sum()))]
    saldo = np.round(rng.random(rows) * 50_000, 2)
    saldo[rng.random(rows) < 0.01] = np.nan
    return pd.DataFrame(
        {
            "telefono": pd.Series(cells, dtype="string"),
            "nombre": pd.Series(np.array(NAMES, dtype=object)[rng.integers(0, 6, rows)]),
            "saldo": saldo,
        }
    )


def write_audience(rows: int, folder: Path) -> None:
    """The messy audience as ``folder/part-NNNNN.parquet`` files of CHUNK rows."""
    folder.mkdir(parents=True)
    for i, start in enumerate(range(0, rows, CHUNK)):
        chunk = _audience_chunk(min(CHUNK, rows - start), seed=i)
        chunk.index = chunk.index + start
        chunk.to_parquet(folder / f"part-{i:05d}.parquet")


def write_delivery(rows: int, folder: Path) -> None:
    """``results.parquet`` (``rows`` rows) and ``logs/`` (about ``rows`` status events)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from massiva_frames.receiving.store import SCHEMAS

    t0 = np.datetime64("2024-05-01T14:00:00", "us")
    day_us = 86_400_000_000
    results_schema = pa.schema(
        [
            ("phone", pa.string()),
            ("state", pa.string()),
            ("reason", pa.string()),
            ("batch", pa.int64()),
            ("message_id", pa.int64()),
            ("sent_at", pa.timestamp("us", tz="UTC")),
        ]
    )
    logdir = folder / "logs"
    folder.mkdir(parents=True)
    with pq.ParquetWriter(folder / "results.parquet", results_schema) as writer:
        for i, start in enumerate(range(0, rows, CHUNK)):
            n = min(CHUNK, rows - start)
            rng = np.random.default_rng(1000 + i)
            ids = np.arange(start, start + n, dtype=np.int64) + 123_451
            roll = rng.random(n)
            state = np.where(roll < 0.97, "accepted", np.where(roll < 0.985, "rejected", "invalid"))
            codes = np.array(["412", "414", "416", "424", "426"])[rng.integers(0, 5, n)]
            phone = np.char.add(np.char.add("58", codes), rng.integers(10**6, 10**7, n).astype(str))
            sent = t0 + rng.integers(0, 2 * day_us, n).astype("timedelta64[us]")
            table = pa.table(
                {
                    "phone": pa.array(phone),
                    "state": pa.array(state),
                    "reason": pa.nulls(n, pa.string()),
                    "batch": pa.array((ids - 123_451) // 500),
                    "message_id": pa.array(ids, mask=state == "invalid"),
                    "sent_at": pa.array(sent).cast(pa.timestamp("us", tz="UTC")),
                },
                schema=results_schema,
            )
            writer.write_table(table)
            # events: 80% covered once, 12% repeats (same event_key), 7% second opinions,
            # 1% unknown ids; provider times in Caracas wall-clock (UTC-4), no zone
            kind = rng.random(n)
            repeat = kind >= 0.80
            repeat &= kind < 0.92
            ev_ids = np.where(kind < 0.99, ids, ids + 10**10)
            variant = (kind >= 0.92).astype(np.int64)
            delay = rng.exponential(8.0, n).astype("int64") * 1_000_000 + variant * 30_000_000
            updated = sent + delay.astype("timedelta64[us]") - np.timedelta64(4, "h")
            status = np.where(rng.random(n) < 0.9, "delivered", "failed")
            received = sent + delay.astype("timedelta64[us]") + np.timedelta64(1, "s")
            key = pc.binary_join_element_wise(
                pa.array(ev_ids).cast(pa.string()), pa.array(variant).cast(pa.string()), "-"
            )
            events = pa.table(
                {
                    "event_key": key,
                    "received_at": pa.array(received).cast(pa.timestamp("us", tz="UTC")),
                    "message_id": pa.array(ev_ids),
                    "status": pa.array(status),
                    "updated_at": pa.array(updated.astype("datetime64[us]")),
                    "user": pa.array(np.full(n, "demo@massiva.test")),
                    "detail": pa.array(np.where(status == "delivered", "+584141234567", "ERROR")),
                    "line": pa.array(np.where(status == "delivered", "584141234567", None)),
                },
                schema=SCHEMAS["status"],
            )
            again = events.filter(pa.array(repeat))
            again = again.set_column(
                1,
                "received_at",
                pc.add(again["received_at"], pa.scalar(60_000_000, pa.duration("us"))),
            )
            day = logdir / "status" / f"day=2024-05-0{1 + i % 2}"
            day.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.concat_tables([events, again]), day / f"part-{i:05d}.parquet")


# -------------------------------------------------------------------- measurements


def _status_kb(pid: int | str, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        kids = []
        try:  # every thread's children: the JVM starts processes from other threads
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            tasks = []
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as fh:
                    kids += [int(k) for k in fh.read().split()]
            except OSError:
                continue
        found += kids
        todo += kids
    return found


class Sampler:
    """Peak RSS per role of this process's descendants, sampled every 0.2 s."""

    def __init__(self, roles: dict[str, str]) -> None:
        self.roles = roles  # role -> substring of the command line
        self.peaks: dict[str, int] = dict.fromkeys(roles, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in _children(os.getpid()):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                for role, marker in self.roles.items():
                    if marker in cmd:
                        kb = max(_status_kb(pid, "VmHWM"), _status_kb(pid, "VmRSS"))
                        self.peaks[role] = max(self.peaks[role], kb)
                        break
            self._stop.wait(0.2)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _peak_mb() -> float:
    return _status_kb("self", "VmHWM") / 1024


def run_pandas(data: Path, out: Path, workers: int) -> dict[str, Any]:
    import pandas as pd

    import massiva_frames as mf
    from massiva_frames.prepare.partitions import estimate

    t = time.perf_counter()
    df = pd.read_parquet(data / "audience")
    validated = mf.validate(df, phone="telefono", template=TEMPLATE, dedupe="phone")
    figures = estimate(validated)
    return {"seconds": time.perf_counter() - t, "peak_mb": _peak_mb(), "estimate": figures}


def run_dask(data: Path, out: Path, workers: int) -> dict[str, Any]:
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    from massiva_frames.engines import dask as mf_dask

    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    try:
        client.run(lambda: None)  # workers up before the clock starts
        t = time.perf_counter()
        ddf = dd.read_parquet(data / "audience")
        validated = mf_dask.validate(ddf, phone="telefono", template=TEMPLATE, dedupe="phone")
        validated.to_parquet(out / "dask", write_index=False)
        figures = mf_dask.estimate(dd.read_parquet(out / "dask"))
        seconds = time.perf_counter() - t
        worker_peaks = client.run(lambda: _status_kb("self", "VmHWM") / 1024)
    finally:
        client.close()
        cluster.close()
    return {
        "seconds": seconds,
        "peak_mb": _peak_mb(),
        "worker_peak_mb": max(worker_peaks.values()),
        "partitions": ddf.npartitions,
        "estimate": figures,
    }


def run_spark(data: Path, out: Path, workers: int) -> dict[str, Any]:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    import warnings

    warnings.simplefilter("ignore")
    from pyspark.sql import SparkSession

    from massiva_frames.engines import spark as mf_spark

    with Sampler({"jvm": "java", "python_worker": "pyspark"}) as sampler:
        spark = (
            SparkSession.builder.master(f"local[{workers}]")
            .config("spark.driver.memory", "2g")
            .config("spark.sql.shuffle.partitions", str(4 * workers))
            .config("spark.sql.files.maxPartitionBytes", str(16 << 20))
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .getOrCreate()
        )
        spark.sparkContext.setLogLevel("ERROR")
        try:
            t = time.perf_counter()
            sdf = spark.read.parquet(str(data / "audience"))
            validated = mf_spark.validate(sdf, phone="telefono", template=TEMPLATE, dedupe="phone")
            validated.write.parquet(str(out / "spark"))
            figures = mf_spark.estimate(spark.read.parquet(str(out / "spark")))
            seconds = time.perf_counter() - t
            partitions = sdf.rdd.getNumPartitions()
        finally:
            spark.stop()
    return {
        "seconds": seconds,
        "peak_mb": _peak_mb(),
        "jvm_peak_mb": sampler.peaks["jvm"] / 1024,
        "worker_peak_mb": sampler.peaks["python_worker"] / 1024,
        "partitions": partitions,
        "estimate": figures,
    }


def run_duckdb(data: Path, out: Path, workers: int) -> dict[str, Any]:
    from massiva_frames.analytics.duckdb_engine import write_attached
    from massiva_frames.analytics.summary import delivery_summary

    t = time.perf_counter()
    stats = write_attached(
        data / "delivery" / "results.parquet",
        data / "delivery" / "logs",
        out / "attached.parquet",
        memory_limit="1GB",
        threads=workers,
    )
    attach_seconds = time.perf_counter() - t
    t = time.perf_counter()
    summary = delivery_summary(out / "attached.parquet", by="operator", engine="duckdb")
    return {
        "seconds": attach_seconds,
        "summary_seconds": time.perf_counter() - t,
        "peak_mb": _peak_mb(),
        "stats": stats,
        "delivered": int(summary["delivered"].sum()),
    }


def _audience_files(data: Path, rows: int) -> list[Path]:
    """The first audience files holding ``rows`` rows (CHUNK rows a file)."""
    files = sorted((data / "audience").glob("part-*.parquet"))
    return files[: max(1, -(-rows // CHUNK))]


def run_send(step: str, data: Path, out: Path, rows: int, chunk_rows: int) -> dict[str, Any]:
    """One send in this (child) process; the sandbox's URL and account in the environment."""
    import resource

    import pandas as pd
    import pyarrow.dataset as ds

    import massiva_frames as mf

    files = _audience_files(data, rows)
    options: dict[str, Any] = {
        "phone": "telefono", "template": TEMPLATE, "journal": str(out / "journal.db"),
        "progress": False,
    }  # fmt: skip
    t = time.perf_counter()
    with mf.MassivaClient() as client:
        if step == "memory":
            df = pd.concat([pd.read_parquet(f) for f in files])
            results = mf.send(df, client=client, **options)
            states = results["state"].astype(str).value_counts().to_dict()
            n = len(df)
        else:
            dataset = ds.dataset([str(f) for f in files], format="parquet")
            summary = mf.send_stream(
                dataset, out=out / "results", chunk_rows=chunk_rows, client=client, **options
            )
            states, n = summary.states, summary.rows
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    accepted = int(states.get("accepted", 0))
    return {
        "rows": n,
        "seconds": round(seconds, 1),
        "peak_mb": round(peak),
        "vm_hwm_mb": round(_peak_mb()),
        "accepted": accepted,
        "messages_per_second": round(accepted / seconds),
        "states": {k: int(v) for k, v in states.items() if v},
    }


#: the sandbox of a send measurement, in a process of its own: were it in this process,
#: the child's ``ru_maxrss`` would count this process's memory (Linux carries the
#: pre-exec address space's high-water mark across ``execve``)
SANDBOX = """
import json, sys
from massiva_frames.sandbox import sandbox
with sandbox(credits=10**9, callback_delay=3600) as sb:
    print(json.dumps([sb.base_url, sb.usuario, sb.clave]), flush=True)
    sys.stdin.readline()
    record = sb.messages()
    print(json.dumps({"sandbox_accepted": len(record),
                      "sent_twice": int(record.duplicated(["phone", "text"]).sum())}))
"""


def spawn_send(step: str, data: Path, out: Path, rows: int, chunk_rows: int) -> dict[str, Any]:
    """``step`` in a child process against a fresh sandbox in another process."""
    cmd = [sys.executable, __file__, "--child", step, "--data", str(data), "--out", str(out)]
    cmd += ["--send-rows", str(rows), "--chunk-rows", str(chunk_rows)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-c", SANDBOX], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    assert server.stdin is not None and server.stdout is not None
    try:
        base_url, usuario, clave = json.loads(server.stdout.readline())
        env.update(MASSIVA_BASE_URL=base_url, MASSIVA_USUARIO=usuario, MASSIVA_CLAVE=clave)
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        server.stdin.write("report\n")
        server.stdin.flush()
        record = json.loads(server.stdout.readline())
    finally:
        server.stdin.close()
        server.wait(120)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-5:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(record)
    return result


def child(step: str, data: Path, out: Path, workers: int) -> None:
    runner = {"pandas": run_pandas, "dask": run_dask, "spark": run_spark, "duckdb": run_duckdb}
    print(json.dumps(runner[step](data, out, workers)))


def spawn(step: str, data: Path, out: Path, workers: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", step, "--data", str(data), "--out", str(out)]
    cmd += ["--workers", str(workers)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-5:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="audience rows")
    parser.add_argument("--log-rows", type=int, default=20_000_000, help="results and events")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", default=",".join(STEPS), help="comma-separated steps")
    parser.add_argument("--dir", help="where to write the data (default: a temporary dir)")
    parser.add_argument("--stream", action="store_true", help="measure streaming send instead")
    parser.add_argument("--stream-rows", type=int, default=5_000_000, help="rows streamed")
    parser.add_argument("--memory-rows", type=int, default=1_000_000, help="rows sent in memory")
    parser.add_argument("--chunk-rows", type=int, default=100_000, help="streamed chunk size")
    parser.add_argument("--send-rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=STEPS + SEND_STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child in SEND_STEPS:
        figures = run_send(
            args.child, Path(args.data), Path(args.out), args.send_rows, args.chunk_rows
        )
        print(json.dumps(figures))
        return
    if args.child:
        child(args.child, Path(args.data), Path(args.out), args.workers)
        return
    if args.stream:
        stream_part(args)
        return
    steps = [s.strip() for s in args.only.split(",") if s.strip()]
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-scale-"))
    data = base / "data"
    try:
        t = time.perf_counter()
        if {"pandas", "dask", "spark"} & set(steps) and not (data / "audience").exists():
            write_audience(args.rows, data / "audience")
        if "duckdb" in steps and not (data / "delivery").exists():
            write_delivery(args.log_rows, data / "delivery")
        print(f"data written in {time.perf_counter() - t:.1f} s under {base}", flush=True)
        report: dict[str, Any] = {"rows": args.rows, "log_rows": args.log_rows}
        for step in steps:
            out = base / f"out-{step}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            report[step] = spawn(step, data, out, args.workers)
            print(step, json.dumps(report[step]), flush=True)
        print(json.dumps(report, indent=2))
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)


def stream_part(args: argparse.Namespace) -> None:
    """``--stream``: the streamed send at ``--stream-rows``, and both ways at
    ``--memory-rows``."""
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-stream-"))
    data = base / "data"
    try:
        t = time.perf_counter()
        rows = max(args.stream_rows, args.memory_rows)
        if len(list((data / "audience").glob("part-*.parquet"))) * CHUNK < rows:
            shutil.rmtree(data / "audience", ignore_errors=True)
            write_audience(rows, data / "audience")
        print(f"data written in {time.perf_counter() - t:.1f} s under {base}", flush=True)
        report: dict[str, Any] = {"chunk_rows": args.chunk_rows}
        runs = [
            ("memory", "memory", args.memory_rows),
            ("stream_same", "stream", args.memory_rows),
        ]
        if args.stream_rows != args.memory_rows:  # else stream_same is that run
            runs.append(("stream", "stream", args.stream_rows))
        for name, step, n in runs:
            out = base / f"out-{name}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            report[name] = spawn_send(step, data, out, n, args.chunk_rows)
            print(name, json.dumps(report[name]), flush=True)
        print(json.dumps(report, indent=2))
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
