"""Writes a deterministic, realistic spare-parts marketplace into the configured Firestore (the local cloud).

    make seed-data DAYS=30 SOLICITUDES_POR_DIA=2000 [HASTA=2024-01-14] [SEED=7]

50 advisors ("asesores") in six cities, each with its own specialties, speed, skill and prices; requests
("solicitudes") over the local day with morning and afternoon peaks; 0 to 8 offers per request, mostly from
advisors of its city and specialty; at most one winning offer per request; ratings of most winners. The same
arguments always write the same documents (same ids, same values): running it twice changes nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

CITIES = {
    "Bogotá": 0.35,
    "Medellín": 0.2,
    "Cali": 0.15,
    "Barranquilla": 0.12,
    "Cartagena": 0.08,
    "Bucaramanga": 0.1,
}
CATEGORIES = {
    "frenos": 0.2,
    "motor": 0.18,
    "suspension": 0.14,
    "electrico": 0.12,
    "transmision": 0.1,
    "carroceria": 0.1,
    "luces": 0.08,
    "filtros": 0.08,
}
BASE_PRICE = {
    "frenos": 180_000,
    "motor": 900_000,
    "suspension": 350_000,
    "electrico": 250_000,
    "transmision": 1_200_000,
    "carroceria": 600_000,
    "luces": 120_000,
    "filtros": 60_000,
}
# Requests per local hour (relative): quiet nights, peaks at 10:00 and 16:00.
HOURLY = [
    0.2,
    0.1,
    0.1,
    0.1,
    0.2,
    0.4,
    0.8,
    1.5,
    2.4,
    3.0,
    3.2,
    2.9,
    2.2,
    2.4,
    2.8,
    3.0,
    3.1,
    2.7,
    2.0,
    1.5,
    1.1,
    0.8,
    0.5,
    0.3,
]
ADVISORS = 50
MEAN_OFFERS = 6.0  # before duplicates of one advisor are merged: about 5 offers a request


@dataclass(frozen=True)
class Asesor:
    id: str
    nombre: str
    ciudad: str
    activo: bool
    especialidades: tuple[str, ...]
    rapidez_min: float  # mean minutes to answer
    habilidad: float  # how often its offers win
    factor_precio: float


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def advisors(seed: int) -> list[Asesor]:
    rng = random.Random(f"asesores-{seed}")
    first = ["Ana", "Luis", "Carlos", "María", "Jorge", "Lucía", "Andrés", "Paula", "Diego", "Sofía"]
    last = [
        "Gómez",
        "Rodríguez",
        "Martínez",
        "López",
        "García",
        "Pérez",
        "Díaz",
        "Torres",
        "Ramírez",
        "Vargas",
    ]
    result = []
    for n in range(1, ADVISORS + 1):
        specialties = tuple(sorted(rng.sample(list(CATEGORIES), k=rng.choice([1, 2, 2, 3]))))
        result.append(
            Asesor(
                id=f"asesor-{n:02d}",
                nombre=f"{first[n % 10]} {last[(n * 7) % 10]}",
                ciudad=_pick(rng, CITIES),
                activo=rng.random() > 0.06,
                especialidades=specialties,
                rapidez_min=rng.choice([5, 10, 20, 40, 60, 90, 150]) * rng.uniform(0.8, 1.2),
                habilidad=rng.uniform(0.2, 3.0),
                factor_precio=rng.uniform(0.8, 1.3),
            )
        )
    return result


def day_documents(
    day: dt.date, *, per_day: int, seed: int, zone: str, team: list[Asesor]
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(collection, id, document) of one local day's requests, their offers and ratings."""
    rng = random.Random(f"{seed}-{day.isoformat()}")
    tz = ZoneInfo(zone)
    start = dt.datetime.combine(day, dt.time(), tz)
    active = [a for a in team if a.activo]
    hours = rng.choices(range(24), weights=HOURLY, k=per_day)
    for n, hour in enumerate(sorted(hours)):
        created = (start + dt.timedelta(hours=hour, seconds=rng.uniform(0, 3600))).astimezone(dt.UTC)
        ciudad, categoria = _pick(rng, CITIES), _pick(rng, CATEGORIES)
        sol_id = f"sol-{day:%Y%m%d}-{n:06d}"
        yield (
            "solicitudes",
            sol_id,
            {
                "cliente_id": f"cliente-{rng.randrange(1, per_day * 3):06d}",
                "ciudad": ciudad,
                "categoria_repuesto": categoria,
                "creada_en": created,
            },
        )
        weights = [
            (4.0 if a.ciudad == ciudad else 0.6) * (5.0 if categoria in a.especialidades else 1.0)
            for a in active
        ]
        count = min(8, max(0, round(rng.gauss(MEAN_OFFERS, 2.0))))
        chosen = {a.id: a for a in rng.choices(active, weights=weights, k=count)}.values()
        offers = []
        for k, asesor in enumerate(chosen):
            delay = rng.expovariate(1 / asesor.rapidez_min)
            price = BASE_PRICE[categoria] * asesor.factor_precio * rng.uniform(0.85, 1.15)
            offers.append(
                (f"of-{sol_id[4:]}-{k}", asesor, created + dt.timedelta(minutes=delay), round(price, -2))
            )
        winner = None
        if offers and rng.random() < 0.78:
            scores = [a.habilidad / (p / BASE_PRICE[categoria]) ** 2 for _, a, _, p in offers]
            winner = rng.choices(range(len(offers)), weights=scores)[0]
        undecided = not offers or rng.random() < 0.08
        for k, (of_id, asesor, at, price) in enumerate(offers):
            estado = (
                "ganadora" if k == winner else ("pendiente" if undecided and winner is None else "rechazada")
            )
            yield (
                "ofertas",
                of_id,
                {
                    "solicitud_id": sol_id,
                    "asesor_id": asesor.id,
                    "categoria_repuesto": categoria,
                    "ciudad": ciudad,
                    "precio": float(price),
                    "creada_en": at,
                    "estado": estado,
                },
            )
            if k == winner and rng.random() < 0.6:
                mean = 2.5 + min(2.0, asesor.habilidad * 0.8)
                score = max(1, min(5, round(rng.gauss(mean, 0.9))))
                yield (
                    "calificaciones",
                    f"cal-{sol_id[4:]}",
                    {
                        "solicitud_id": sol_id,
                        "asesor_id": asesor.id,
                        "puntaje": score,
                        "creada_en": at + dt.timedelta(hours=rng.uniform(2, 30)),
                    },
                )


def write(
    client: Any, documents: Iterator[tuple[str, str, dict[str, Any]]], *, parallel: int = 8
) -> dict[str, int]:
    """Write in commits of 500 documents, `parallel` commits in flight; counts per collection. (BulkWriter
    ramps from 500 writes/s as production Firestore asks of new traffic, which makes a local seed take
    minutes; a production seed should ramp the same way.)"""
    counts: dict[str, int] = {}
    pending: list[Future[Any]] = []
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        batch = client.batch()
        size = 0
        for collection, doc_id, data in documents:
            batch.set(client.collection(collection).document(doc_id), data)
            counts[collection] = counts.get(collection, 0) + 1
            size += 1
            if size == 500:
                pending.append(pool.submit(batch.commit))
                batch, size = client.batch(), 0
                if len(pending) >= parallel * 2:
                    pending.pop(0).result(120)
        if size:
            pending.append(pool.submit(batch.commit))
        for future in pending:
            future.result(120)
    return counts


def seed(
    client: Any,
    *,
    days: int,
    per_day: int,
    last: dt.date,
    seed_value: int,
    zone: str,
) -> dict[str, int]:
    team = advisors(seed_value)

    def documents() -> Iterator[tuple[str, str, dict[str, Any]]]:
        for asesor in team:
            yield (
                "asesores",
                asesor.id,
                {"nombre": asesor.nombre, "ciudad": asesor.ciudad, "activo": asesor.activo},
            )
        for back in range(days - 1, -1, -1):
            yield from day_documents(
                last - dt.timedelta(days=back), per_day=per_day, seed=seed_value, zone=zone, team=team
            )

    return write(client, documents())


def main() -> int:
    from google.cloud import firestore

    from shared.settings import get_settings

    settings = get_settings()
    zone = settings.metrics_time_zone
    yesterday = dt.datetime.now(ZoneInfo(zone)).date() - dt.timedelta(days=1)
    parser = argparse.ArgumentParser(description="Write the marketplace's dataset into Firestore.")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--solicitudes-por-dia", type=int, default=2000)
    parser.add_argument("--hasta", type=dt.date.fromisoformat, default=yesterday, help="last local day")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if not 1 <= args.days <= 366 or not 1 <= args.solicitudes_por_dia <= 100_000:
        parser.error("DAYS must be 1..366 and SOLICITUDES_POR_DIA 1..100000")
    if settings.is_local:
        import os

        os.environ["FIRESTORE_EMULATOR_HOST"] = settings.firestore_emulator_host
    client = firestore.Client(project=settings.project_id)
    started = time.monotonic()
    counts = seed(
        client,
        days=args.days,
        per_day=args.solicitudes_por_dia,
        last=args.hasta,
        seed_value=args.seed,
        zone=zone,
    )
    elapsed = time.monotonic() - started
    total = sum(counts.values())
    first = args.hasta - dt.timedelta(days=args.days - 1)
    sys.stdout.write(
        f"marketplace {first}..{args.hasta} ({zone}): {counts}; {total} documents in {elapsed:.1f} s"
        f" ({total / max(elapsed, 1e-9):.0f}/s)\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
