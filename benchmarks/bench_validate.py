"""Benchmark: validate + plan_batches on messy phones and a template, against a per-row loop.

The data: ``--rows`` rows (default 1,000,000) of phones the way Excel exports them (an
object column mixing strings in ten formats, integers and floats; ~3% missing,
landlines or junk; some repeated), a name column with accents and a balance column with
~1% missing, and the template ``"Hola {nombre}, su saldo es {saldo:,.2f}"``.

Ours: ``validate(...)`` then ``plan_batches(...)`` (POST, 500 phones per request).
Baseline: the loop a user would write — ``phonenumbers.parse`` / ``is_valid_number`` /
``format_number`` per row, ``str.format`` per row, a dict of texts chunked by 500. It
runs on ``--baseline-rows`` rows (default 20,000) and its rate is extrapolated; the
output says so. Each side runs in its own subprocess so its peak memory (``ru_maxrss``,
data included) is its own.

A second case, ``--campaign``, is a realistic campaign measured as the *first* call of
a fresh process (nothing warmed up: the time a user waits, and the process's peak
memory): a 120+ character template with a numeric spec
(:data:`CAMPAIGN_TEMPLATE`), ~1M mostly distinct texts (a customer name, account, amount
and date each), ~10% missing values across the used columns, the messy phones above,
``transliterate=True`` (Spanish names); then ``plan_batches`` on the ready rows, timed
on its own.

    python benchmarks/bench_validate.py                 # 1M rows, 3 repeats, + campaign
    python benchmarks/bench_validate.py --rows 200000 --repeat 1
    python benchmarks/bench_validate.py --only campaign --campaign-runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

TEMPLATE = "Hola {nombre}, su saldo es {saldo:,.2f}"
CAMPAIGN_TEMPLATE = (
    "Estimado(a) {nombre}: su cuenta {cuenta} tiene un saldo pendiente de Bs. {saldo:,.2f}"
    " con vencimiento el {vence}. Pague en {ciudad}."
)
CITIES = ["Caracas", "Maracaibo", "Valencia", "Barquisimeto", "Mérida", "Cumaná", "Coro"]
FIRST = [
    "José",
    "María",
    "Luis",
    "Ana",
    "Carlos",
    "Andrés",
    "Sofía",
    "Pedro",
    "Lucía",
    "Jesús",
    "Valentina",
    "Ramón",
    "Inés",
    "Raúl",
    "Ángel",
    "Gabriela",
    "Héctor",
]
LAST = [
    "Pérez",
    "González",
    "Rodríguez",
    "Hernández",
    "García",
    "Martínez",
    "López",
    "Díaz",
    "Sánchez",
    "Romero",
    "Muñoz",
    "Rojas",
    "Briceño",
    "Castillo",
]


def make_frame(rows: int, seed: int = 0) -> Any:
    """Messy phones (object column as read from Excel), names, balances."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    ops = np.array(["412", "414", "416", "424", "426"])
    op = ops[rng.integers(0, 5, rows)]
    sub = np.char.zfill(rng.integers(0, 10_000_000, rows).astype(str), 7)
    nat = np.char.add(op, sub)
    style = rng.integers(0, 10, rows)
    cells = np.empty(rows, dtype=object)
    cells[:] = np.char.add("58", nat)  # 584141234567

    def join(*parts: Any) -> Any:
        out = parts[0]
        for part in parts[1:]:
            out = np.char.add(out, part)
        return out

    for k in range(1, 10):
        rows_k = style == k
        cells[rows_k] = _styled(k, op[rows_k], sub[rows_k], nat[rows_k], join)
    bad = rng.random(rows)
    cells[bad < 0.01] = None
    cells[(bad >= 0.01) & (bad < 0.02)] = "0212 5551234"
    cells[(bad >= 0.02) & (bad < 0.03)] = "sin teléfono"
    repeat = rng.random(rows) < 0.01  # a few customers appear twice
    cells[repeat] = cells[rng.integers(0, rows, int(repeat.sum()))]
    names = np.array([f"{f} {last}" for f in FIRST for last in LAST], dtype=object)
    saldo = np.round(rng.random(rows) * 50_000, 2)
    saldo[rng.random(rows) < 0.01] = np.nan
    return pd.DataFrame(
        {
            "telefono": pd.Series(cells, dtype=object),
            "nombre": pd.Series(names[rng.integers(0, len(names), rows)], dtype="str"),
            "saldo": saldo,
        }
    )


def _styled(k: int, op: Any, sub: Any, nat: Any, join: Any) -> Any:
    """Phones in format ``k``, the way they arrive from spreadsheets."""
    if k == 1:
        return join("+58 ", op, "-", sub)  # +58 414-1234567
    if k == 2:
        return join("0", op, " ", sub)  # 0414 1234567
    if k == 3:
        return join("(0", op, ") ", sub)  # (0414) 1234567
    if k == 4:
        return nat  # 4141234567
    if k == 5:
        return join("0058", nat)  # 00584141234567
    if k == 6:
        return [int(v) for v in join("58", nat)]  # an Excel integer
    if k == 7:
        return [float(v) for v in join("58", nat)]  # an Excel float
    if k == 8:
        return join("58", nat, ".0")  # a float written as text
    return join(" 0", nat, "\u00a0")  # stray (non-breaking) spaces


def make_campaign(rows: int, seed: int = 1) -> Any:
    """The realistic campaign: messy phones, distinct accounts, ~10% missing values."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    df = make_frame(rows, seed)
    names = np.array([f"{f} {a} {b}" for f in FIRST for a in LAST for b in LAST], dtype=object)
    cuenta = np.char.add("0102-", rng.permutation(rows).astype(str)).astype(object)
    day = pd.Timestamp("2024-06-01") + pd.to_timedelta(rng.integers(0, 90, rows), unit="D")
    columns = {
        "nombre": names[rng.integers(0, len(names), rows)],
        "cuenta": cuenta,
        "vence": np.asarray(day.strftime("%d/%m/%Y"), dtype=object),
        "ciudad": np.array(CITIES, dtype=object)[rng.integers(0, len(CITIES), rows)],
    }
    saldo = np.round(rng.random(rows) * 50_000, 2)
    saldo[rng.random(rows) < 0.021] = np.nan
    for values in columns.values():  # with saldo, ~10% of rows miss a value
        values[rng.random(rows) < 0.021] = None
    # text columns as read_csv/read_parquet give them (pandas' string dtype); the
    # phones stay the object column of mixed cells a spreadsheet gives
    text = {name: pd.Series(values, dtype="str") for name, values in columns.items()}
    return df.assign(**text, saldo=saldo)


def run_campaign(rows: int) -> dict[str, Any]:
    """The first validate + plan_batches of a fresh process, on the realistic campaign."""
    df = make_campaign(rows)
    start = time.perf_counter()
    cpu = time.process_time()
    from massiva_frames.prepare.batching import plan_batches
    from massiva_frames.prepare.validation import validate

    imported = time.perf_counter()
    validated = validate(df, phone="telefono", template=CAMPAIGN_TEMPLATE, transliterate=True)
    middle = time.perf_counter()
    planned = plan_batches(validated)
    end = time.perf_counter()
    texts = validated["text"][validated["valid"]]
    return {
        "seconds": end - start,
        "cpu": time.process_time() - cpu,
        "import": imported - start,
        "validate": middle - imported,
        "plan": end - middle,
        "ready": int(validated["valid"].sum()),
        "distinct": int(texts.nunique()),
        "longest": int(texts.str.len().max()),
        "requests": int(planned["batch"].max()) + 1,
    }


def run_ours(df: Any) -> dict[str, Any]:
    from massiva_frames.prepare.batching import plan_batches
    from massiva_frames.prepare.lower_bound import minimum_requests
    from massiva_frames.prepare.validation import validate

    start = time.perf_counter()
    cpu = time.process_time()
    validated = validate(df, phone="telefono", template=TEMPLATE)
    middle = time.perf_counter()
    planned = plan_batches(validated)
    end = time.perf_counter()
    requests = int(planned["batch"].max()) + 1
    return {
        "seconds": end - start,
        "cpu": time.process_time() - cpu,
        "validate": middle - start,
        "plan": end - middle,
        "ready": int(planned["valid"].sum()),
        "requests": requests,
        "minimum": minimum_requests(validated),
    }


def run_baseline(df: Any) -> dict[str, Any]:
    import math

    import phonenumbers
    from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType

    start = time.perf_counter()
    cpu = time.process_time()
    phones: list[str | None] = []
    texts: list[str | None] = []
    for tel, nombre, saldo in zip(df["telefono"], df["nombre"], df["saldo"], strict=True):
        phone = None
        if tel is not None and not (isinstance(tel, float) and math.isnan(tel)):
            raw = str(int(tel)) if isinstance(tel, float) else str(tel)
            try:
                number = phonenumbers.parse(raw, "VE")
            except NumberParseException:
                number = None
            if (
                number is not None
                and phonenumbers.is_valid_number(number)
                and phonenumbers.number_type(number) == PhoneNumberType.MOBILE
            ):
                phone = phonenumbers.format_number(number, PhoneNumberFormat.E164)[1:]
        text = None
        if isinstance(nombre, str) and not (isinstance(saldo, float) and math.isnan(saldo)):
            text = TEMPLATE.format(nombre=nombre, saldo=saldo)
        phones.append(phone)
        texts.append(text)
    groups: dict[str, list[int]] = {}
    for i, (phone, text) in enumerate(zip(phones, texts, strict=True)):
        if phone is not None and text is not None:
            groups.setdefault(text, []).append(i)
    batches = [rows[i : i + 500] for rows in groups.values() for i in range(0, len(rows), 500)]
    return {
        "seconds": time.perf_counter() - start,
        "cpu": time.process_time() - cpu,
        "ready": sum(len(b) for b in batches),
        "requests": len(batches),
    }


def worker(kind: str, rows: int, repeat: int) -> None:
    if kind == "campaign":
        result = run_campaign(rows)
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"runs": [result], "peak_mb": peak_kb / 1024}))
        return
    df = make_frame(rows)
    runs = [run_ours(df) if kind == "ours" else run_baseline(df) for _ in range(repeat)]
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"runs": runs, "peak_mb": peak_kb / 1024}))


def spawn(kind: str, rows: int, repeat: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", kind, "--rows", str(rows), "--repeat", str(repeat)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=3600)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline-rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; median shown")
    parser.add_argument(
        "--campaign-runs", type=int, default=3, help="fresh processes of the campaign case"
    )
    parser.add_argument("--only", choices=("simple", "campaign"), help="run one case")
    parser.add_argument(
        "--worker", choices=("ours", "baseline", "campaign"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.rows, args.repeat)
        return

    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    if args.only != "campaign":
        simple(args)
    if args.only != "simple":
        campaign(args)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def campaign(args: argparse.Namespace) -> None:
    """The realistic campaign, each run the first call of a fresh process."""
    done = [spawn("campaign", args.rows, 1) for _ in range(args.campaign_runs)]
    runs = [d["runs"][0] for d in done]
    first = runs[0]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(
        f"\ncampaign: {args.rows:,d} rows, template of {len(CAMPAIGN_TEMPLATE)} characters "
        f"({CAMPAIGN_TEMPLATE!r}), transliterate=True; first call of a fresh process, "
        f"median of {len(runs)} processes"
    )
    print(
        f"validate + plan_batches {med('seconds'):.2f} s (cpu {med('cpu'):.2f} s): import "
        f"{med('import'):.2f} s, validate {med('validate'):.2f} s, plan {med('plan'):.2f} s; "
        f"peak memory {statistics.median(d['peak_mb'] for d in done):.0f} MB (data included)"
    )
    print(
        f"{first['ready']:,d} rows ready, {first['distinct']:,d} distinct texts (longest "
        f"{first['longest']} characters), {first['requests']:,d} requests"
    )


def simple(args: argparse.Namespace) -> None:
    """Today's case against the per-row loop."""
    ours = spawn("ours", args.rows, args.repeat)
    base = spawn("baseline", args.baseline_rows, args.repeat)
    o_sec = statistics.median(r["seconds"] for r in ours["runs"])
    o_cpu = statistics.median(r["cpu"] for r in ours["runs"])
    b_sec = statistics.median(r["seconds"] for r in base["runs"])
    b_cpu = statistics.median(r["cpu"] for r in base["runs"])
    o_rate = args.rows / o_sec
    b_rate = args.baseline_rows / b_sec
    first = ours["runs"][0]
    print(f"\nvalidate + plan_batches, template {TEMPLATE!r}, median of {args.repeat} runs")
    header = f"{'':34s} {'rows':>10s} {'seconds':>9s} {'cpu s':>7s} {'rows/s':>11s} {'peak MB':>8s}"
    print(header)
    print(
        f"{'massiva-frames (vectorised)':34s} {args.rows:>10,d} {o_sec:>9.2f} {o_cpu:>7.2f} "
        f"{o_rate:>11,.0f} {ours['peak_mb']:>8.0f}"
    )
    print(
        f"{'per-row loop (phonenumbers+format)':34s} {args.baseline_rows:>10,d} {b_sec:>9.2f} "
        f"{b_cpu:>7.2f} {b_rate:>11,.0f} {base['peak_mb']:>8.0f}"
    )
    print(
        f"\nratio: {o_rate / b_rate:.1f}x the per-row loop's rows/s "
        f"(loop measured on {args.baseline_rows:,d} rows; at that rate {args.rows:,d} rows "
        f"would take {args.rows / b_rate:.0f} s)"
    )
    print(
        f"split: validate {statistics.median(r['validate'] for r in ours['runs']):.2f} s, "
        f"plan {statistics.median(r['plan'] for r in ours['runs']):.2f} s; "
        f"{first['ready']:,d} rows ready, {first['requests']:,d} requests "
        f"(lower bound {first['minimum']:,d})"
    )
    print(f"peak memory (ru_maxrss of the run, data included): {ours['peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()
