"""Create a catalog of articles with images for a tenant, through the gateway as a client would; the tenant's
API key is the last line printed.

make seed-data [TENANT=catalogo] [COUNT=300]
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx

from infra.emulators.gemini.content import png
from shared import runtime
from shared.app import platform
from shared.emulator_config import load_emulator_config
from shared.models.auth import Role
from shared.services.auth import create_api_key

PRODUCTS = ("Tornillo hexagonal", "Tuerca", "Arandela", "Bisagra", "Clavo", "Taco", "Abrazadera", "Remache")
UNITS = ("caja x 100", "unidad", "bolsa x 50", "par")


def api_key(tenant: str, *, rate_limit_per_minute: int = 100_000) -> str:
    wired = platform()
    return runtime.run(
        create_api_key(
            keys=wired.keys,
            tenant=tenant,
            role=Role.USER,
            now=wired.engine.clock(),
            rate_limit_per_minute=rate_limit_per_minute,
        )
    )


def seed_catalog(api: httpx.Client, ids: range, *, workers: int = 16) -> None:
    """Articles `ids`, each with its own PNG image (PUT /articulos/{id}, PUT /articulos/{id}/imagen)."""

    def _one(articulo_id: int) -> None:
        product = PRODUCTS[articulo_id % len(PRODUCTS)]
        body = {
            "nombre": f"{product} {articulo_id}",
            "descripcion": f"{product} de acero galvanizado, referencia {articulo_id}",
            "unidad": UNITS[articulo_id % len(UNITS)],
            "categoria_id": articulo_id % len(PRODUCTS) + 1,
            "activo": articulo_id % 10 != 0,
        }
        api.put(f"/articulos/{articulo_id}", json=body).raise_for_status()
        api.put(f"/articulos/{articulo_id}/imagen", content=png(seed=articulo_id, size=24)).raise_for_status()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_one, ids))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenant", default="catalogo")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--base-url", default=None, help="the gateway (default: emulator.json's)")
    args = parser.parse_args()
    if not 1 <= args.count <= 100_000:
        sys.stderr.write("count must be 1 to 100000\n")
        return 2
    base_url = args.base_url or load_emulator_config().emulators.functions.url
    key = api_key(args.tenant)
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as api:
        seed_catalog(api, range(1, args.count + 1))
    sys.stdout.write(f"{args.count} articles with images for tenant {args.tenant}; its API key:\n{key}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
