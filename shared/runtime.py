"""One asyncio event loop per function instance, on a background thread.

Functions are Flask (WSGI) handlers, while the engine's I/O is asyncio (google-genai's async client,
Firestore's AsyncClient, Cloud Tasks' async client). Async clients are bound to the loop they were created on,
so every instance keeps one loop alive and each request runs its coroutine there: clients are built once and
reused.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# The loop of the public API, and the loop of the internal workers. Deployed, a function uses one of them; in
# the local gateway both live in one process, and separate loops keep a submit from queueing behind the
# callbacks of a chunk in progress.
API_LOOP = "api"
WORK_LOOP = "work"

_lock = threading.Lock()
_loops: dict[str, asyncio.AbstractEventLoop] = {}


def loop(name: str = API_LOOP) -> asyncio.AbstractEventLoop:
    with _lock:
        current = _loops.get(name)
        if current is None or current.is_closed():
            current = asyncio.new_event_loop()
            thread = threading.Thread(target=current.run_forever, name=f"{name}-loop", daemon=True)
            thread.start()
            _loops[name] = current
        return current


def run(coroutine: Coroutine[Any, Any, T], *, loop_name: str = API_LOOP, timeout: float | None = None) -> T:
    """Run `coroutine` on the named loop of this instance and wait for its result (from a request thread)."""
    return asyncio.run_coroutine_threadsafe(coroutine, loop(loop_name)).result(timeout)
