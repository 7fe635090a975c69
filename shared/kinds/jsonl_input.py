"""Requests read from a JSONL object in Cloud Storage (`inputUri`), for batches past what one body carries.

The object is read as a stream, a block at a time, never whole: once to check every line (and count them),
then again, at the same generation, while the engine writes the items into chunks. A bad line is a 400
naming it, and nothing is written.

Who may read what: an `inputUri` names an object of the platform's inputs bucket (RESULTS_BUCKET) under
`inputs/{tenant}/`, the caller's own prefix; the only way to write there is an upload session the tenant
opened (`POST /batch/uploads`), so a tenant reads only what it uploaded. Another bucket is a 400; another
tenant's prefix answers 404 exactly like a missing object.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Generic, TypeVar
from urllib.parse import quote

from pydantic import TypeAdapter, ValidationError

from shared.errors import InvalidRequest, NotFound, PayloadTooLarge
from shared.ports import StreamingBlobs

INPUT_PREFIX = "inputs"
INPUT_PORT = "batch_inputs"  # the StreamingBlobs on the inputs bucket, in Ports.extras
READ_BLOCK_BYTES = 1024 * 1024
MAX_LINE_BYTES = (
    8 * 1024 * 1024
)  # one request's JSON (a prompt past BATCH_INLINE_LIMIT_BYTES goes by reference)
LINES_PER_READ = 2000  # lines handed from the reading thread to the event loop at a time
MAX_PROBLEMS = 20

ItemT = TypeVar("ItemT")


def tenant_prefix(tenant: str) -> str:
    """The tenant's place in the inputs bucket; its name escaped, so no tenant's prefix holds another's."""
    return f"{INPUT_PREFIX}/{quote(tenant, safe='')}/"


def input_object(tenant: str, upload_id: str) -> str:
    return f"{tenant_prefix(tenant)}{upload_id}.jsonl"


def input_uri(bucket_name: str, object_name: str) -> str:
    return f"gs://{bucket_name}/{object_name}"


def object_of(uri: str, *, bucket_name: str, tenant: str) -> str:
    """The object an `inputUri` names, if the tenant may read it (see the module docstring)."""
    bucket, _, object_name = uri.removeprefix("gs://").partition("/")
    if not uri.startswith("gs://") or bucket != bucket_name or not object_name.startswith(f"{INPUT_PREFIX}/"):
        raise InvalidRequest(
            "inputUri is not an input of this platform",
            details=[{"field": "inputUri", "problem": f"gs://{bucket_name}/{INPUT_PREFIX}/<tenant>/..."}],
        )
    if not object_name.startswith(tenant_prefix(tenant)) or "/../" in object_name:
        raise NotFound(f"no input {uri}")
    return object_name


def _lines(stream: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """The stream's lines with their 1-based numbers, read a block at a time."""
    number, rest = 0, b""
    while block := stream.read(READ_BLOCK_BYTES):
        *complete, rest = (rest + block).split(b"\n")
        for line in complete:
            number += 1
            yield number, line
        if len(rest) > MAX_LINE_BYTES:
            raise InvalidRequest(
                "a line of the input is too long",
                details=[
                    {"field": f"inputUri line {number + 1}", "problem": f"at most {MAX_LINE_BYTES} bytes"}
                ],
            )
    if rest:
        yield number + 1, rest


@dataclass(frozen=True)
class JsonlInput(Generic[ItemT]):
    """One generation of a tenant's JSONL object, each non-blank line one item that `adapter` validates."""

    files: StreamingBlobs
    object_name: str
    generation: int
    adapter: TypeAdapter[ItemT]

    @classmethod
    async def open(
        cls,
        *,
        files: StreamingBlobs,
        uri: str,
        bucket_name: str,
        tenant: str,
        max_bytes: int,
        adapter: TypeAdapter[ItemT],
    ) -> JsonlInput[ItemT]:
        object_name = object_of(uri, bucket_name=bucket_name, tenant=tenant)
        info = await files.stat(object_name=object_name)
        if info is None:
            raise NotFound(f"no input {uri}")
        if info.size > max_bytes:
            raise PayloadTooLarge(f"the input has {info.size} bytes; the limit is {max_bytes}")
        return cls(files=files, object_name=object_name, generation=info.generation, adapter=adapter)

    async def check(self, *, max_items: int) -> int:
        """Validate every line (first pass); the number of items. InvalidRequest names the bad lines."""
        return await asyncio.to_thread(self._check, max_items)

    def _check(self, max_items: int) -> int:
        problems: list[dict[str, Any]] = []
        count = 0
        with self.files.open_read(object_name=self.object_name, generation=self.generation) as stream:
            for number, line in _lines(stream):
                if not line.strip():
                    continue
                count += 1
                if count > max_items:
                    raise InvalidRequest(
                        "the input has too many requests",
                        details=[{"field": "inputUri", "problem": f"at most {max_items} requests"}],
                    )
                try:
                    self.adapter.validate_json(line)
                except ValidationError as exc:
                    problems += [
                        {
                            "field": ".".join([f"inputUri line {number}", *(str(p) for p in error["loc"])]),
                            "problem": error["msg"],
                        }
                        for error in exc.errors(include_url=False, include_input=False)
                    ]
                    if len(problems) >= MAX_PROBLEMS:
                        break
        if problems:
            raise InvalidRequest("the input is not valid", details=problems[:MAX_PROBLEMS])
        if not count:
            raise InvalidRequest(
                "the input is empty", details=[{"field": "inputUri", "problem": "no requests"}]
            )
        return count

    async def read(self) -> AsyncIterator[ItemT]:
        """Every item, in order (second pass): a thread reads a few thousand lines at a time."""
        stream = await asyncio.to_thread(
            self.files.open_read, object_name=self.object_name, generation=self.generation
        )
        try:
            lines = _lines(stream)
            while batch := await asyncio.to_thread(list, itertools.islice(lines, LINES_PER_READ)):
                for _, line in batch:
                    if line.strip():
                        yield self.adapter.validate_json(line)
        finally:
            await asyncio.to_thread(stream.close)
