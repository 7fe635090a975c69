"""python -m infra.emulators.tasks [--port N] [--dedupe-window-seconds S] [--min-dispatch-deadline-seconds S]
[--duplicate-deliveries]

The last two options exist for tests only (Google's minimum is 15 s; Google delivers a task twice rarely, this
delivers every attempt twice).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging

import httpx

from infra.emulators.common import serve_grpc
from infra.emulators.oidc import TokenMinter
from infra.emulators.tasks.delivery import Deliverer
from infra.emulators.tasks.server import handler
from infra.emulators.tasks.state import TasksState
from infra.emulators.tasks.validation import MIN_DISPATCH_DEADLINE_S
from shared.emulator_config import load_emulator_config

log = logging.getLogger("tasks-emulator")

DEDUPE_WINDOW_S = 3600.0  # Google reserves a task name for about an hour after it ran or was deleted


async def serve(
    *,
    host: str,
    port: int,
    dedupe_window_s: float,
    min_dispatch_deadline_s: float,
    duplicate_deliveries: bool = False,
) -> None:
    # Up to 5,000 concurrent dispatches per queue; no client-side timeout, the dispatch deadline rules.
    # Each attempt opens its own connection: Google's front end routes every request to an instance anew,
    # so a kept-alive connection must not pin deliveries to one gateway worker process (one "instance").
    limits = httpx.Limits(max_connections=5000, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=None) as http:
        state = TasksState(
            deliverer=Deliverer(http=http, minter=TokenMinter()),
            dedupe_window_s=dedupe_window_s,
            min_dispatch_deadline_s=min_dispatch_deadline_s,
            duplicate_deliveries=duplicate_deliveries,
        )
        server = await serve_grpc(handler=handler(state), host=host, port=port)
        log.info(
            json.dumps(
                {
                    "severity": "INFO",
                    "message": f"cloud tasks emulator on {host}:{port}",
                    "dedupe_window_s": dedupe_window_s,
                    "min_dispatch_deadline_s": min_dispatch_deadline_s,
                    "duplicate_deliveries": duplicate_deliveries,
                }
            )
        )
        await server.wait_for_termination()


def main() -> None:
    endpoint = load_emulator_config().emulators.tasks
    parser = argparse.ArgumentParser(description="Cloud Tasks v2 emulator (gRPC).")
    parser.add_argument("--port", type=int, default=endpoint.port)
    parser.add_argument(
        "--dedupe-window-seconds",
        type=float,
        default=DEDUPE_WINDOW_S,
        help="how long a task name stays taken after the task ran or was deleted (Google: about 1 hour)",
    )
    parser.add_argument(
        "--min-dispatch-deadline-seconds",
        type=float,
        default=MIN_DISPATCH_DEADLINE_S,
        help="shortest dispatch_deadline accepted (Google: 15 s); lowered only so deadline tests run fast",
    )
    parser.add_argument(
        "--duplicate-deliveries",
        action="store_true",
        help="deliver every attempt twice at once (a fault for tests; the second response is ignored)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the way to stop it in the foreground
        asyncio.run(
            serve(
                host=endpoint.host,
                port=args.port,
                dedupe_window_s=args.dedupe_window_seconds,
                min_dispatch_deadline_s=args.min_dispatch_deadline_seconds,
                duplicate_deliveries=args.duplicate_deliveries,
            )
        )


if __name__ == "__main__":
    main()
