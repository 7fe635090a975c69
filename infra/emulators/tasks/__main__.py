"""python -m infra.emulators.tasks [--port N] [--dedupe-window-seconds S]"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging

import httpx

from infra.emulators.common import serve_grpc
from infra.emulators.oidc import TokenMinter
from infra.emulators.tasks.server import handler
from infra.emulators.tasks.state import TasksState
from shared.emulator_config import load_emulator_config

log = logging.getLogger("tasks-emulator")


async def serve(*, host: str, port: int, dedupe_window_s: float) -> None:
    limits = httpx.Limits(max_connections=5000, max_keepalive_connections=200)
    async with httpx.AsyncClient(limits=limits, timeout=None) as http:
        state = TasksState(dedupe_window_s=dedupe_window_s, http=http, minter=TokenMinter())
        server = await serve_grpc(handler=handler(state), host=host, port=port)
        log.info(json.dumps({"severity": "INFO", "message": f"cloud tasks emulator on {host}:{port}",
                             "dedupe_window_s": dedupe_window_s}))  # fmt: skip
        await server.wait_for_termination()


def main() -> None:
    endpoint = load_emulator_config().emulators.tasks
    parser = argparse.ArgumentParser(description="Cloud Tasks v2 emulator (gRPC).")
    parser.add_argument("--port", type=int, default=endpoint.port)
    parser.add_argument("--dedupe-window-seconds", type=float, default=3600.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(serve(host=endpoint.host, port=args.port, dedupe_window_s=args.dedupe_window_seconds))


if __name__ == "__main__":
    main()
