"""Synthetic invoice datasets (the FacturacionMasiva input) of a given size, for tests and the bench.

    python -m infra.report_data --size-mb 50 --out .bench/facturas-50mb.json [--invalid-every 1000]

Deterministic for a seed; written as a stream (constant memory whatever the size). Every `invalid_every`-th
record is invalid (no items), so errores.csv has rows and the totals leave those records out.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

CITIES = ["Bogotá", "Medellín", "Cali", "Barranquilla", "Cartagena", "Bucaramanga", "Pereira", "Manizales"]


def invoices(*, seed: int = 7, invalid_every: int = 0) -> Iterator[dict[str, Any]]:
    """An endless, deterministic stream of invoice records."""
    rng = random.Random(seed)
    number = 0
    while True:
        number += 1
        client = rng.randrange(2000)
        record: dict[str, Any] = {
            "numero": f"FV-{number:08d}",
            "fecha": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "cliente": {
                "nit": f"{900000000 + client}",
                "nombre": f"Cliente {client}",
                "ciudad": CITIES[client % len(CITIES)],
            },
            "items": [
                {
                    "sku": f"SKU-{rng.randrange(500):04d}",
                    "descripcion": "Producto de prueba",
                    "cantidad": rng.randint(1, 20),
                    "precio_unitario": round(rng.uniform(1000, 250000), 2),
                    "iva": rng.choice([0, 0.05, 0.19]),
                }
                for _ in range(rng.randint(1, 4))
            ],
        }
        if invalid_every and number % invalid_every == 0:
            record["items"] = []
        yield record


def write_dataset(out: IO[bytes], *, size_bytes: int, seed: int = 7, invalid_every: int = 0) -> int:
    """Write a JSON array of invoices of about `size_bytes` (never less); returns the records written."""
    out.write(b"[")
    written, count = 1, 0
    for record in invoices(seed=seed, invalid_every=invalid_every):
        line = (b",\n" if count else b"") + json.dumps(record, ensure_ascii=False).encode()
        out.write(line)
        written += len(line)
        count += 1
        if written >= size_bytes - 1:
            break
    out.write(b"]")
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic invoice dataset.")
    parser.add_argument("--size-mb", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--invalid-every", type=int, default=1000)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("wb") as out:
        count = write_dataset(
            out, size_bytes=int(args.size_mb * 1024 * 1024), seed=args.seed, invalid_every=args.invalid_every
        )
    sys.stdout.write(f"{args.out}: {args.out.stat().st_size} bytes, {count} invoices\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
