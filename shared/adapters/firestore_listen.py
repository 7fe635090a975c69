"""Waiting for a Firestore document to change with a listener (the Listen API, what the client libraries'
`on_snapshot` is built on) instead of polling it: Firestore tells of each commit to the document as it
happens, and a wait is billed one read for the document and one per change, however long it lasts.

The async client library has no listener of its own, so this speaks Listen through the library's generated
client: one target, the document; the answer is its state as of now (a `document_change`, or nothing before
the target is `CURRENT` when it does not exist), then every change.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.api_core import exceptions as gexc
from google.cloud.firestore_v1.services.firestore import FirestoreAsyncClient
from google.cloud.firestore_v1.services.firestore.transports import FirestoreGrpcAsyncIOTransport
from google.cloud.firestore_v1.types import ListenRequest, ListenResponse, Target, TargetChange

from shared.errors import StoreUnavailable

TARGET_ID = 1
# A stream that breaks (the server resets it, a message it sent cannot be decoded) is opened again, from the
# document as it is then, this many times in a row before the wait gives up.
LISTEN_ATTEMPTS = 5
# What breaks a stream without saying anything about the document: listened to again.
BROKEN_STREAM = (gexc.Cancelled, gexc.ServiceUnavailable, gexc.Aborted, gexc.InternalServerError)


class DocumentListener:
    """Listens to single documents of one Firestore database."""

    def __init__(self, api: FirestoreAsyncClient, *, project: str, database: str = "(default)") -> None:
        self._api = api
        self._database = f"projects/{project}/databases/{database}"
        # What the client libraries send with every call: the database it is about. Listen carries it in its
        # first message only, so its routing header is set by hand too (the generated client sets it from the
        # request for other calls).
        self._prefix = [("google-cloud-resource-prefix", self._database)]
        self._listen_metadata = [
            *self._prefix,
            ("x-goog-request-params", f"project_id={project}&database_id={database}"),
        ]

    @classmethod
    def connect(cls, *, project: str, emulator_host: str | None) -> DocumentListener:
        """A listener of `project`'s database: on the emulator at `emulator_host` if given, else on Google's
        endpoint with the default credentials."""
        if emulator_host:
            transport = FirestoreGrpcAsyncIOTransport(channel=grpc.aio.insecure_channel(emulator_host))
            return cls(FirestoreAsyncClient(transport=transport), project=project)
        return cls(FirestoreAsyncClient(), project=project)

    async def until_true(self, path: str, field: str) -> bool:
        """Return True once the boolean `field` of the document at `path` (`collection/id`, ...) is true, at
        once if it is already; False if the document does not exist or is deleted meanwhile. The caller bounds
        the wait (`asyncio.timeout`); the stream is closed however the wait ends."""
        for _ in range(LISTEN_ATTEMPTS):
            told = await self._listen(path, field)
            if told is not None:
                return told
            # The stream broke, so a change may be lost: listen again, from the document as it is now. (The
            # emulator garbles a message now and then when it sends from two threads at once, and resets
            # streams.)
        raise StoreUnavailable(f"the listener of {path} broke {LISTEN_ATTEMPTS} times in a row")

    async def _listen(self, path: str, field: str) -> bool | None:
        """One Listen stream: what `until_true` returns, or None when the stream broke (reset by the server,
        or a message that could not be decoded)."""
        name = f"{self._database}/documents/{path}"
        request = ListenRequest(
            database=self._database,
            add_target=Target(documents=Target.DocumentsTarget(documents=[name]), target_id=TARGET_ID),
        )
        closed = asyncio.Event()

        async def requests() -> AsyncIterator[ListenRequest]:
            yield request
            await closed.wait()  # the stream stays open until the wait ends
            yield ListenRequest(database=self._database, remove_target=TARGET_ID)

        stream: Any = None
        try:
            stream = await self._api.listen(requests=requests(), metadata=self._listen_metadata)
            seen = False
            response: ListenResponse | None
            async for response in stream:
                if response is None:
                    return None
                change = response.document_change
                if change.document.name == name:
                    seen = True
                    value = change.document.fields.get(field)
                    if value is not None and value.boolean_value:
                        return True
                elif response.document_delete.document == name or response.document_remove.document == name:
                    return False
                elif response.target_change.target_change_type == TargetChange.TargetChangeType.CURRENT:
                    if not seen:
                        return False  # the target is current and no document came: there is none
                    # Registered: every later change is told. One read now sees a change that raced the
                    # registration (the emulator does not always tell it).
                    told = await self._read(name, field)
                    if told is not None:
                        return told
                elif response.target_change.target_change_type == TargetChange.TargetChangeType.REMOVE:
                    cause = response.target_change.cause.message
                    raise StoreUnavailable(f"Firestore stopped listening to {path}: {cause}")
            raise StoreUnavailable("the Firestore listener stream ended")
        except BROKEN_STREAM:
            return None
        except (gexc.GoogleAPICallError, grpc.aio.AioRpcError) as exc:
            raise StoreUnavailable(f"cannot listen to {path}: {exc}") from exc
        finally:
            closed.set()
            if stream is not None:
                await _drain(stream)

    async def _read(self, name: str, field: str) -> bool | None:
        """True if the document's `field` is true, False if there is no document, None otherwise."""
        try:
            document = await self._api.get_document(
                request={"name": name, "mask": {"field_paths": [field]}}, metadata=self._prefix
            )
        except gexc.NotFound:
            return False
        value = document.fields.get(field)
        return True if value is not None and value.boolean_value else None


async def _drain(stream: Any) -> None:
    """Close the stream as the server expects: the target removed, the requests ended, then the server's
    end of the stream read. (Cancelling it instead makes the emulator fail commits that race the cancel.) It
    is cancelled only if that fails, takes over a second, or the wait is cancelled meanwhile."""
    drained = False
    try:
        async with asyncio.timeout(1):
            async for _ in stream:
                pass
        drained = True
    except (TimeoutError, gexc.GoogleAPICallError, grpc.aio.AioRpcError):
        pass
    finally:
        if not drained:
            stream.cancel()
