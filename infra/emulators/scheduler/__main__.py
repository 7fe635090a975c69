"""python -m infra.emulators.scheduler [--port N]"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal

import httpx

from infra.emulators.common import serve_grpc
from infra.emulators.oidc import TokenMinter
from infra.emulators.scheduler.server import handler
from infra.emulators.scheduler.state import SchedulerState
from shared.emulator_config import load_emulator_config

log = logging.getLogger("scheduler-emulator")


async def serve(*, host: str, port: int) -> None:
    # One client for every delivery, on the server's loop; no client-side timeout: attempt_deadline rules.
    async with httpx.AsyncClient(timeout=None) as http:
        state = SchedulerState(http=http, minter=TokenMinter())
        server = await serve_grpc(handler=handler(state), host=host, port=port)
        firing = asyncio.create_task(state.run())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        log.info(json.dumps({"severity": "INFO", "message": f"cloud scheduler emulator on {host}:{port}"}))
        await stop.wait()
        firing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await firing
        await server.stop(grace=1)


def main() -> None:
    endpoint = load_emulator_config().emulators.scheduler
    parser = argparse.ArgumentParser(
        description="Cloud Scheduler v1 emulator (gRPC); jobs are kept in memory."
    )
    parser.add_argument("--port", type=int, default=endpoint.port)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(serve(host=endpoint.host, port=args.port))


if __name__ == "__main__":
    main()
