"""python -m infra.emulators.scheduler [--port N]"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging

import httpx

from infra.emulators.common import serve_grpc
from infra.emulators.oidc import TokenMinter
from infra.emulators.scheduler.server import handler
from infra.emulators.scheduler.state import SchedulerState
from shared.emulator_config import load_emulator_config

log = logging.getLogger("scheduler-emulator")


async def serve(*, host: str, port: int) -> None:
    async with httpx.AsyncClient(timeout=None) as http:
        state = SchedulerState(http=http, minter=TokenMinter())
        server = await serve_grpc(handler=handler(state), host=host, port=port)
        log.info(json.dumps({"severity": "INFO", "message": f"cloud scheduler emulator on {host}:{port}"}))
        await asyncio.gather(state.run(), server.wait_for_termination())


def main() -> None:
    endpoint = load_emulator_config().emulators.scheduler
    parser = argparse.ArgumentParser(description="Cloud Scheduler v1 emulator (gRPC).")
    parser.add_argument("--port", type=int, default=endpoint.port)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(serve(host=endpoint.host, port=args.port))


if __name__ == "__main__":
    main()
