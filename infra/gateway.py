"""Local functions gateway: every function in functions/ behind one port, as the Firebase emulator does.

`http://HOST:PORT/<function_name>/<sub-path>` reaches the function `<function_name>` defined in
`functions/<function_name>.py` with the path `/<sub-path>`. Each function gets functions-framework's own app
(`create_app`), so it behaves here exactly as when deployed alone or started with
`functions-framework --target <name> --source functions/<name>.py`. `GET /health` answers 200.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import functions_framework
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.wrappers import Request, Response

from shared.emulator_config import REPO_ROOT, load_emulator_config

FUNCTIONS_DIR = REPO_ROOT / "functions"


def function_sources(directory: Path = FUNCTIONS_DIR) -> dict[str, Path]:
    """Function name -> source file; a function is named after its file."""
    return {path.stem: path for path in sorted(directory.glob("*.py")) if not path.stem.startswith("_")}


def _health_app(names: Iterable[str]) -> Any:
    body = json.dumps({"status": "ok", "functions": sorted(names)})

    @Request.application
    def app(request: Request) -> Response:
        if request.path in ("/", "/health"):
            return Response(body, mimetype="application/json")
        return Response(
            json.dumps({"error": {"code": "not_found", "message": "no such function"}}),
            status=404,
            mimetype="application/json",
        )

    return app


class _FunctionRoot(DispatcherMiddleware):
    """Dispatch `/<function>/<path>` to the function's app with path `/<path>`.

    A deployed function's root URL (`https://.../batch_worker`, no trailing slash) reaches it with path `/`;
    werkzeug's dispatcher would pass an empty path, which Flask answers with a redirect.
    The peer is appended to `X-Forwarded-For`, as Google's front end appends it (see FORWARDED_HOPS).
    """

    def __call__(self, environ: Any, start_response: Any) -> Iterable[bytes]:
        # As Google's front end does: the peer the connection came from is appended to X-Forwarded-For.
        peer = environ.get("REMOTE_ADDR") or "unknown"
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        environ["HTTP_X_FORWARDED_FOR"] = f"{forwarded}, {peer}" if forwarded else peer
        path = environ.get("PATH_INFO", "")
        if path in self.mounts:
            environ["PATH_INFO"] = path + "/"
        return super().__call__(environ, start_response)


def create_gateway(directory: Path = FUNCTIONS_DIR) -> Any:
    sources = function_sources(directory)
    mounts = {
        name: functions_framework.create_app(target=name, source=str(path)) for name, path in sources.items()
    }
    return _FunctionRoot(_health_app(sources), {f"/{name}": app for name, app in mounts.items()})


def main() -> None:
    from gunicorn.app.base import BaseApplication

    endpoint = load_emulator_config().emulators.functions
    parser = argparse.ArgumentParser(description="Serve every function in functions/ on one port.")
    parser.add_argument("--port", type=int, default=endpoint.port)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("GATEWAY_THREADS", "128")))
    # Several worker processes stand for several instances of the functions, as Cloud Run would run them.
    parser.add_argument("--workers", type=int, default=int(os.environ.get("GATEWAY_WORKERS", "2")))
    args = parser.parse_args()
    gateway = create_gateway()

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{endpoint.host}:{args.port}")
            self.cfg.set("workers", args.workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", args.threads)
            # Long enough for a worker chunk; Cloud Run functions allow up to 60 min per request.
            self.cfg.set("timeout", 0)
            self.cfg.set("accesslog", None)
            self.cfg.set("loglevel", "warning")

        def load(self) -> Any:
            return gateway

    Server().run()


if __name__ == "__main__":
    main()
