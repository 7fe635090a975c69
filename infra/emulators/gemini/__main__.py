"""python -m infra.emulators.gemini [--port N]"""

from __future__ import annotations

import argparse
import logging

import uvicorn

from infra.emulators.gemini.app import build_app
from shared.emulator_config import load_emulator_config


def main() -> None:
    endpoint = load_emulator_config().emulators.gemini
    parser = argparse.ArgumentParser(description="Gemini API emulator.")
    parser.add_argument("--port", type=int, default=endpoint.port)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    uvicorn.run(build_app(), host=endpoint.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
