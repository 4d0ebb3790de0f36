"""Rebuild the sample data in this folder, deterministically.

    python data/samples/make_samples.py               # campaign.csv + callbacks + results
    python data/samples/make_samples.py --no-send     # campaign.csv only

``campaign.csv`` is drawn from ``random.Random(seed)`` alone: the same seed gives the
same bytes. The callback sample is produced by the real pieces: a local sandbox sends
the campaign's status and inbound callbacks over HTTP to a real callback receiver, which
writes ``callbacks/`` in its own parquet layout; ``results.parquet`` is what ``send()``
returned. Its rows, message ids and outcomes are reproducible (the sandbox draws them
from its seed, in acceptance order); its timestamps are those of the run.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["TEMPLATE", "build_campaign", "main", "write_campaign"]

HERE = Path(__file__).resolve().parent

#: The campaign's message (its fields are columns of campaign.csv).
TEMPLATE = "Hola {nombre}, tu saldo es {saldo}. Paga antes del {vence} y evita recargos."
COLUMNS = ("cliente", "nombre", "telefono", "saldo", "vence", "ciudad")

FIRST_NAMES = (
    "José", "María", "Luis", "Carmen", "Carlos", "Ana", "Juan", "Rosa", "Pedro", "Yelitza",
    "Jesús", "Luisa", "Miguel", "Daniela", "Rafael", "Gabriela", "Jorge", "Andreína",
    "Francisco", "Mariela", "Antonio", "Yusmary", "Manuel", "Génesis", "Alejandro",
    "Fabiola", "Ramón", "Dayana", "Héctor", "Oriana", "Eduardo", "Nathaly", "Wilmer",
    "Yohana", "Ángel", "Valentina", "Óscar", "Maryuri", "Iván", "Estefanía", "Darwin",
    "Yenny", "Richard", "Ninoska", "Jhonny", "Marbelis", "Néstor", "Zuleima",
)  # fmt: skip
SURNAMES = (
    "González", "Rodríguez", "Pérez", "Hernández", "García", "Martínez", "López",
    "Sánchez", "Ramírez", "Díaz", "Torres", "Rojas", "Castillo", "Morales", "Gutiérrez",
    "Vargas", "Mendoza", "Romero", "Rivas", "Suárez", "Medina", "Contreras", "Peña",
    "Briceño", "Marcano", "Salazar", "Colmenares", "Chacón", "Quintero", "Núñez",
    "Villalobos", "Urdaneta", "Montilla", "Aponte", "Zambrano", "Guerrero", "Parra",
)  # fmt: skip
CITIES = (
    ("Caracas", 30), ("Maracaibo", 15), ("Valencia", 13), ("Barquisimeto", 10),
    ("Maracay", 9), ("Puerto La Cruz", 6), ("Ciudad Guayana", 6), ("San Cristóbal", 5),
    ("Mérida", 4), ("Barcelona", 2),
)  # fmt: skip
#: Operator codes (docs/protocol.md §1) and their rough market shares.
OPERATORS = (("414", 34), ("424", 18), ("412", 22), ("416", 16), ("426", 10))

#: How people and spreadsheets write the same mobile number (op = "414", n = 7 digits).
VALID_FORMATS = (
    ("national", 24),  # 0414 1234567
    ("plain", 16),  # 584141234567
    ("national_compact", 10),  # 04141234567
    ("intl_dotted", 6),  # +58 414-123.45.67
    ("parens", 6),  # (0414) 123-4567
    ("bare", 6),  # 4141234567
    ("dashes", 6),  # 0414-123-45-67
    ("excel_float", 6),  # 584141234567.0
    ("excel_sci", 4),  # 5.84141234567E+11
    ("double_zero", 3),  # 00584141234567
    ("plus_compact", 4),  # +584141234567
    ("nbsp", 4),  # " 0414\u00a01234567 "
    ("apostrophe", 2),  # '04141234567
    ("intl_parens", 3),  # +58 (414) 123 4567
)

#: Invalid rows added on purpose, per validation reason (validate.py's codes).
INVALID_PHONES: dict[str, tuple[str, ...]] = {
    "phone_missing": ("", "", "", "", "  ", "", "", "", "\u00a0", "", "", ""),
    "phone_not_a_number": (
        "no tiene",
        "llamar a la oficina",
        "pendiente",
        "xxxx",
        "sin número",
        "0414-ABC-1234",
        "preguntar",
        "-",
    ),
    "phone_truncated": ("5.84141E+11", "5.8424E+11", "5.84126E+11", "5.841612E+11"),
    "phone_wrong_length": (
        "0414123456",
        "414123456",
        "5841412345",
        "0424 12345",
        "04121234",
        "584241234",
        "0416-123-456",
        "12345",
        "04241234567 8",
        "0426 123 45 678",
    ),
    "phone_unknown_operator": (
        "0415 1234567",
        "0418-5550123",
        "04191234567",
        "584131234567",
        "0411 7654321",
        "0417 2345678",
    ),
    "phone_landline": (
        "0212 5551234",
        "0241-8234567",
        "(0261) 7912345",
        "0251 2334455",
        "02954161234",
        "+58 212 9876543",
        "0243 2468135",
        "582617771234",
    ),
    "phone_too_long": ("+49 1512 3456789", "+49 176 12345678", "+39 347 1234567 8"),
}
#: Numbers abroad: ``phone_international`` for validate() by default; the sample is sent
#: with ``allow_international=True`` so that the provider's refusals (``rejected``) show.
INTERNATIONAL = ("+57 300 1234567", "+1 305 555 0123", "+34 612 345 678")
#: Names the template cannot send as they are (text reasons).
BAD_NAMES: dict[str, tuple[str, ...]] = {
    "text_too_long": (
        "Inversiones y Representaciones Comerciales del Centro Occidente Hermanos "
        "Colmenares y Asociados, Compañía Anónima",
        "Distribuidora de Alimentos, Víveres y Productos de Limpieza La Bendición de "
        "Dios Número Dos, C.A.",
        "Asociación Cooperativa de Transporte Público Rutas Unidas del Sur y del Oeste "
        "de la Gran Caracas R.L.",
    ),
    "text_separator": ("Pedro | Pérez", "Ana María|Rivas"),
    "text_control_chars": ("Luis\tPérez",),
}
MISSING_BALANCES = 12  # text_missing_value: the template needs {saldo}
DUPLICATES = 25  # the same customer twice, the phone typed differently


def _weighted(rng: random.Random, table: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


def format_phone(op: str, n: str, style: str) -> str:
    """Write mobile ``58 op n`` the way ``style`` does (see :data:`VALID_FORMATS`)."""
    return {
        "national": f"0{op} {n}",
        "plain": f"58{op}{n}",
        "national_compact": f"0{op}{n}",
        "intl_dotted": f"+58 {op}-{n[:3]}.{n[3:5]}.{n[5:]}",
        "parens": f"(0{op}) {n[:3]}-{n[3:]}",
        "bare": f"{op}{n}",
        "dashes": f"0{op}-{n[:3]}-{n[3:5]}-{n[5:]}",
        "excel_float": f"58{op}{n}.0",
        "excel_sci": f"5.8{op}{n}E+11",
        "double_zero": f"0058{op}{n}",
        "plus_compact": f"+58{op}{n}",
        "nbsp": f" 0{op}\u00a0{n} ",
        "apostrophe": f"'0{op}{n}",
        "intl_parens": f"+58 ({op}) {n[:3]} {n[3:]}",
    }[style]


def _name(rng: random.Random) -> str:
    first = rng.choice(FIRST_NAMES)
    if rng.random() < 0.2:
        first += " " + rng.choice(FIRST_NAMES)
    name = f"{first} {rng.choice(SURNAMES)}"
    if rng.random() < 0.5:
        name += " " + rng.choice(SURNAMES)
    roll = rng.random()  # spreadsheets are typed by many hands
    if roll < 0.08:
        return name.upper()
    if roll < 0.12:
        return name.lower()
    if roll < 0.16:
        return f" {name}  "
    return name


def build_campaign(rows: int = 1200, *, seed: int = 2024) -> list[dict[str, str]]:
    """The sample campaign's rows, as the strings a CSV export holds.

    Examples
    --------
    >>> len(build_campaign(1200)) == 1200
    True
    """
    rng = random.Random(seed)
    invalid = [(reason, p) for reason, values in INVALID_PHONES.items() for p in values]
    special = len(invalid) + len(INTERNATIONAL) + DUPLICATES
    base = rows - special
    if base < 100:
        raise ValueError(f"rows must be at least {special + 100}")

    customers: list[dict[str, str]] = []
    seen: set[str] = set()
    numbers: list[tuple[str, str]] = []
    while len(numbers) < base:
        op = _weighted(rng, OPERATORS)
        n = f"{rng.randrange(1_000_000, 10_000_000):07d}"
        if op + n not in seen:
            seen.add(op + n)
            numbers.append((op, n))
    for op, n in numbers:
        style = _weighted(rng, VALID_FORMATS)
        if style == "excel_sci" and n.endswith("0"):
            # Excel drops a trailing zero from the mantissa: it would read as truncated
            style = "excel_float"
        balance = rng.lognormvariate(5.5, 0.9)
        customers.append(
            {
                "nombre": _name(rng),
                "telefono": format_phone(op, n, style),
                "saldo": f"{balance:.2f}",
                "vence": f"{rng.randint(3, 28):02d}/06/2024",
                "ciudad": _weighted(rng, CITIES),
                "_op": op,
                "_n": n,
            }
        )
    # text problems and missing balances on some valid-phone rows
    picks = rng.sample(range(len(customers)), MISSING_BALANCES + 6)
    for i in picks[:MISSING_BALANCES]:
        customers[i]["saldo"] = ""
    bad_names = [name for names in BAD_NAMES.values() for name in names]
    for i, name in zip(picks[MISSING_BALANCES:], bad_names, strict=True):
        customers[i]["nombre"] = name

    extra: list[dict[str, str]] = []
    for _, phone in invalid:
        extra.append(_customer_like(rng, phone))
    for phone in INTERNATIONAL:
        extra.append(_customer_like(rng, phone))
    for i in rng.sample(range(len(customers)), DUPLICATES):
        original = customers[i]
        style = rng.choice([s for s, _ in VALID_FORMATS if s != "excel_sci"])
        twin = dict(original, telefono=format_phone(original["_op"], original["_n"], style))
        extra.append(twin)

    out = customers + extra
    rng.shuffle(out)
    return [
        {"cliente": f"C-{k + 1:05d}", **{c: row.get(c, "") for c in COLUMNS[1:]}}
        for k, row in enumerate(out)
    ]


def _customer_like(rng: random.Random, phone: str) -> dict[str, str]:
    return {
        "nombre": _name(rng),
        "telefono": phone,
        "saldo": f"{rng.lognormvariate(5.5, 0.9):.2f}",
        "vence": f"{rng.randint(3, 28):02d}/06/2024",
        "ciudad": _weighted(rng, CITIES),
    }


def write_campaign(path: Path, rows: list[dict[str, str]]) -> None:
    """Write the rows as UTF-8 CSV (every field quoted only when needed)."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def make_callbacks(campaign_csv: Path, out: Path, *, seed: int, timeout: float = 60.0) -> None:
    """Send the campaign through the sandbox; keep the receiver's logs and the results.

    Writes ``out/callbacks/`` (the receiver's parquet layout: status/ and inbound/,
    partitioned by day) and ``out/results.parquet``.
    """
    import pandas as pd

    from massiva_frames.callbacks import compact, read_callbacks, receiver
    from massiva_frames.client import MassivaClient
    from massiva_frames.sandbox import sandbox
    from massiva_frames.sending import send

    campaign = pd.read_csv(campaign_csv, dtype=str, keep_default_na=False)
    with tempfile.TemporaryDirectory() as tmp:
        logdir = Path(tmp) / "callbacks"
        with (
            receiver(logdir) as rc,
            sandbox(
                credits=10_000,
                status_url=rc.url,
                inbound_url=rc.url,
                callback_delay=2.0,  # latencies of a couple of seconds
                fail_ratio=0.08,
                reply_ratio=0.06,
                seed=seed,
            ) as sb,
            MassivaClient(sb.usuario, sb.clave, sb.base_url) as client,
        ):
            results = send(
                campaign,
                client=client,
                phone="telefono",
                template=TEMPLATE,
                campaign="cobranza-junio",
                progress=False,
                concurrency=1,  # one request at a time: ids follow the file's order
                max_phones=100,
                message_rate=100.0,  # ~11 s of sending, so the timeline has a shape
                allow_international=True,  # the numbers abroad reach the provider
            )
            accepted = int((results["state"] == "accepted").sum())
            sb.wait_callbacks(timeout=timeout)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if read_callbacks(logdir, kind="status")["message_id"].nunique() >= accepted:
                    break
                time.sleep(0.2)
            time.sleep(1.0)  # let the last inbound replies land
        # the receiver compacted its journal into parquet when it stopped; merge the
        # day's small files into one, and ship the dataset only (the SQLite journal and
        # the lock are a running receiver's state)
        compact(logdir, max_small_files=1)
        target = out / "callbacks"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(logdir, target, ignore=shutil.ignore_patterns("_journal", "*.lock"))
    # zstd at its highest level: the file is committed, so small beats fast
    results.to_parquet(out / "results.parquet", compression="zstd", compression_level=19)
    status = read_callbacks(target, kind="status")
    inbound = read_callbacks(target, kind="inbound")
    print(
        f"results.parquet: {len(results)} rows; callbacks/: {len(status)} status, "
        f"{len(inbound)} inbound",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    """Command line of the generator."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--no-send", action="store_true", help="only campaign.csv (no sandbox run)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = build_campaign(args.rows, seed=args.seed)
    write_campaign(args.out / "campaign.csv", rows)
    print(f"campaign.csv: {len(rows)} rows", file=sys.stderr)
    if not args.no_send:
        make_callbacks(args.out / "campaign.csv", args.out, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
