"""A real HTTP handler on loopback for delivery tests: records each arrival and answers as told."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Reply:
    status: int = 200
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Arrival:
    path: str
    method: str
    headers: dict[str, str]
    body: bytes
    started: float  # time.time() when the request arrived
    finished: float
    client_port: int  # the sender's port: one per connection


class _Server(ThreadingHTTPServer):
    # socketserver's listen backlog is 5: a burst of deliveries past it would wait for the kernel's SYN
    # retransmission, and arrive late for reasons of the recorder, not of the sender.
    request_queue_size = 128


class Recorder:
    """Records arrivals per path; `plan(path, [Reply, ...])` scripts the answers (then 200)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plans: dict[str, list[Reply]] = {}
        self.arrivals: list[Arrival] = []
        self.in_flight = 0
        self.max_in_flight = 0
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                started = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with recorder._lock:
                    plan = recorder._plans.get(self.path) or []
                    reply = plan.pop(0) if plan else Reply()
                    recorder.in_flight += 1
                    recorder.max_in_flight = max(recorder.max_in_flight, recorder.in_flight)
                try:
                    if reply.delay_s:
                        time.sleep(reply.delay_s)  # the handler's own work time, not a wait for work
                finally:
                    # Out of flight before the answer is written: its caller may start the next request as
                    # soon as it reads the answer, before this thread would get the lock back.
                    with recorder._lock:
                        recorder.in_flight -= 1
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with recorder._lock:
                        recorder.arrivals.append(
                            Arrival(
                                self.path,
                                self.command,
                                dict(self.headers.items()),
                                body,
                                started,
                                time.time(),
                                self.client_address[1],
                            )
                        )

            do_GET = do_POST = do_PUT = do_DELETE = _handle  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def plan(self, path: str, replies: list[Reply]) -> None:
        with self._lock:
            self._plans[path] = list(replies)

    def at(self, path: str) -> list[Arrival]:
        with self._lock:
            return sorted((a for a in self.arrivals if a.path == path), key=lambda a: a.started)

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
