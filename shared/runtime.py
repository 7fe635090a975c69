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

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            new_loop = asyncio.new_event_loop()
            thread = threading.Thread(target=new_loop.run_forever, name="platform-loop", daemon=True)
            thread.start()
            _loop = new_loop
        return _loop


def run(coroutine: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
    """Run `coroutine` on the instance's loop and wait for its result (from a request thread)."""
    return asyncio.run_coroutine_threadsafe(coroutine, loop()).result(timeout)
