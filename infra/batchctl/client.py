"""The platform's HTTP API as the CLI sees it: where it is, the key, its error envelope as one exception."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

import httpx

from shared.emulator_config import EMULATOR_JSON, load_emulator_config

HTTP_TIMEOUT_SECONDS = 120.0
RATE_LIMIT_RETRIES = 3  # a watch polls for minutes: a 429 on the way waits its Retry-After instead of failing
MAX_RETRY_AFTER_SECONDS = 30.0
NO_KEY = "no API key: pass --api-key or set BATCH_API_KEY"
LOCAL_KEY_HELP = (
    "; on the local cloud make one with: export BATCH_API_KEY=$(make -s api-key TENANT=me | tail -n 1)"
)


class CliError(Exception):
    """A failure the CLI reports as one line and an exit code (1: the server or network, 2: usage)."""

    def __init__(
        self, message: str, *, exit_code: int = 1, status: int | None = None, code: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.status = status
        self.code = code

    def line(self) -> str:
        return f"{self.message} (HTTP {self.status})" if self.status else self.message

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code or "cli_error", "message": self.message, "status": self.status}}


def local_gateway_url() -> str:
    """The functions gateway of the local cloud, from `emulator.json`."""
    if not EMULATOR_JSON.exists():
        raise CliError(
            f"{EMULATOR_JSON} not found: pass --url (or BATCH_URL) for a deployed platform", exit_code=2
        )
    return load_emulator_config().emulators.functions.url


def retry_after_seconds(response: httpx.Response) -> float:
    try:
        return min(max(float(response.headers.get("Retry-After", "1")), 0.1), MAX_RETRY_AFTER_SECONDS)
    except ValueError:
        return 1.0


def error_message(response: httpx.Response) -> tuple[str, str]:
    """The server's message and code from the platform's error envelope (or the seed's `message`)."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip().splitlines()
        return (text[0][:300] if text else response.reason_phrase), ""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = str(error.get("message") or body.get("message") or response.reason_phrase)
            details = error.get("details") or []
            fields = [f"{d.get('field')}: {d.get('problem')}" for d in details if isinstance(d, dict)]
            if fields and not all(f.split(":")[0] in message for f in fields):
                message = f"{message} ({'; '.join(fields)})"
            return message, str(error.get("code") or "")
        if "message" in body:
            return str(body["message"]), ""
    return response.reason_phrase, ""


@dataclass(frozen=True, kw_only=True)
class Api:
    """A client of one platform: `<base_url>/<function>/<path>`, as the gateway and Cloud Functions serve."""

    base_url: str
    api_key: str
    http: httpx.Client
    local: bool = False  # the local cloud's gateway, found through emulator.json

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        expect: tuple[int, ...] = (200, 201, 202),
    ) -> dict[str, Any]:
        """One call; the JSON answer, or CliError with the server's message."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            try:
                response = self.http.request(
                    method,
                    f"{self.base_url}{path}",
                    params=query,
                    json=json_body,
                    headers={"Authorization": f"Bearer {self.api_key}", **(headers or {})},
                )
            except httpx.TransportError as exc:
                hint = "; is the local cloud up? (make up)" if self.local else ""
                raise CliError(f"cannot reach {self.base_url} ({exc}){hint}", code="unreachable") from exc
            # A 429 is refused before any work is done, so asking again is safe even for a submit.
            if response.status_code != 429 or attempt == RATE_LIMIT_RETRIES:
                break
            time.sleep(retry_after_seconds(response))  # the server's Retry-After, bounded
        if response.status_code not in expect:
            message, code = error_message(response)
            raise CliError(message, status=response.status_code, code=code)
        try:
            body: dict[str, Any] = response.json()
        except ValueError as exc:
            raise CliError(f"the server answered {response.status_code} without JSON") from exc
        return body

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, **params: Any) -> dict[str, Any]:
        return self.request("POST", path, params=params, json_body=body)

    def delete(self, path: str, **params: Any) -> dict[str, Any]:
        return self.request("DELETE", path, params=params)

    def put_chunk(self, url: str, *, data: bytes, start: int, total: int) -> int:
        """One chunk of a Cloud Storage resumable upload session; the HTTP status (308 until the last)."""
        end = start + len(data) - 1
        try:
            response = self.http.put(
                url, content=data, headers={"Content-Range": f"bytes {start}-{end}/{total}"}
            )
        except httpx.TransportError as exc:
            raise CliError(f"upload to Cloud Storage failed: {exc}") from exc
        if response.status_code not in (200, 201, 308):
            message, code = error_message(response)
            raise CliError(
                f"upload refused: {message} (HTTP {response.status_code})", status=response.status_code
            )
        return response.status_code

    def download(self, url: str, *, out: IO[bytes]) -> Iterator[int]:
        """Stream `url` (following the download's redirect to a signed URL) into `out`; yields byte counts."""
        try:
            with self.http.stream("GET", url, follow_redirects=True) as response:
                if response.status_code != 200:
                    response.read()
                    message, _ = error_message(response)
                    raise CliError(f"download failed: {message} (HTTP {response.status_code})")
                for block in response.iter_bytes(1 << 20):
                    out.write(block)
                    yield len(block)
        except httpx.TransportError as exc:
            raise CliError(f"download failed: {exc}") from exc


def open_api(*, url: str | None, api_key: str | None) -> Api:
    base_url = (url or local_gateway_url()).rstrip("/")
    if not api_key:
        raise CliError(NO_KEY + ("" if url else LOCAL_KEY_HELP), exit_code=2, code="no_api_key")
    return Api(
        base_url=base_url, api_key=api_key, http=httpx.Client(timeout=HTTP_TIMEOUT_SECONDS), local=url is None
    )


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
