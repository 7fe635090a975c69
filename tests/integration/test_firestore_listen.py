"""The Firestore listener adapter (the Listen API through the official client) against the official emulator:
a wait ends once the watched field is true, at once when it already is, with False for a missing or deleted
document, and never while the field stays false."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.cloud import firestore
from google.cloud.firestore_v1.services.firestore import FirestoreAsyncClient
from google.cloud.firestore_v1.services.firestore.transports import FirestoreGrpcAsyncIOTransport

from shared.adapters.firestore_listen import DocumentListener
from shared.emulator_config import EmulatorConfig


def _with(
    local_cloud: EmulatorConfig, unique: str, work: Callable[[Any, DocumentListener], Awaitable[Any]]
) -> Any:
    """Run `work` with a client and a listener of a Firestore project of the test's own."""
    project = f"{local_cloud.project_id}-{unique}"

    async def _run() -> Any:
        client = firestore.AsyncClient(project=project)
        listener = DocumentListener.connect(
            project=project, emulator_host=local_cloud.emulators.firestore.address
        )
        try:
            return await work(client, listener)
        finally:
            client.close()

    return asyncio.run(_run())


def test_the_wait_ends_once_the_field_is_true(local_cloud: EmulatorConfig, unique: str) -> None:
    async def work(client: Any, listener: DocumentListener) -> tuple[bool, dict[str, Any]]:
        doc = client.collection("batches").document("b1")
        await doc.set({"finalized": False, "n": 0})
        waiting = asyncio.create_task(listener.until_true("batches/b1", "finalized"))
        for n in range(1, 4):  # changes that leave the field false do not end the wait
            await doc.update({"n": n})
        await doc.update({"finalized": True})
        return await waiting, (await doc.get()).to_dict()

    ended, doc = _with(local_cloud, unique, work)

    assert ended is True and doc == {"finalized": True, "n": 3}


def test_a_field_that_stays_false_holds_the_wait_until_its_bound(
    local_cloud: EmulatorConfig, unique: str
) -> None:
    async def work(client: Any, listener: DocumentListener) -> None:
        doc = client.collection("batches").document("b1")
        await doc.set({"finalized": False})
        async with asyncio.timeout(0.5):
            await listener.until_true("batches/b1", "finalized")

    with pytest.raises(TimeoutError):
        _with(local_cloud, unique, work)


def test_a_field_already_true_ends_the_wait_at_once(local_cloud: EmulatorConfig, unique: str) -> None:
    async def work(client: Any, listener: DocumentListener) -> bool:
        await client.collection("batches").document("b1").set({"finalized": True})
        return await listener.until_true("batches/b1", "finalized")

    assert _with(local_cloud, unique, work) is True


def test_a_missing_or_deleted_document_ends_the_wait_with_false(
    local_cloud: EmulatorConfig, unique: str
) -> None:
    async def work(client: Any, listener: DocumentListener) -> tuple[bool, bool]:
        missing = await listener.until_true("batches/none", "finalized")
        doc = client.collection("batches").document("b1")
        await doc.set({"finalized": False})
        waiting = asyncio.create_task(listener.until_true("batches/b1", "finalized"))
        await doc.delete()
        return missing, await waiting

    assert _with(local_cloud, unique, work) == (False, False)


def test_waits_that_end_never_fail_writes_made_meanwhile(local_cloud: EmulatorConfig, unique: str) -> None:
    """A listener is closed as the server expects (its target removed, then its end read): the emulator fails
    a commit that races a cancelled listener with CANCELLED, which a batch's fan-in must never meet."""

    async def work(client: Any, listener: DocumentListener) -> None:
        for round_number in range(100):
            doc = client.collection("batches").document(f"b{round_number}")
            await doc.set({"finalized": False})
            waits = [
                asyncio.create_task(listener.until_true(f"batches/b{round_number}", "finalized"))
                for _ in range(3)
            ]
            await doc.update({"finalized": True})
            for n in range(3):  # written while the waits end; one that failed would raise here
                await doc.update({"n": n})
            assert await asyncio.gather(*waits) == [True] * 3

    _with(local_cloud, unique, work)


class GarblingOnce:
    """The real Listen client, except that the first stream's first message arrives undecodable: the gRPC
    client hands over None for a message it cannot parse (the emulator garbles a few when it sends from two
    threads at once)."""

    def __init__(self, api: Any) -> None:
        self._api = api
        self.streams = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    async def listen(self, **kwargs: Any) -> Any:
        stream = await self._api.listen(**kwargs)
        self.streams += 1
        return _Garbled(stream) if self.streams == 1 else stream


class _Garbled:
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> Any:
        yield None
        async for response in self._stream:
            yield response

    def cancel(self) -> bool:
        return bool(self._stream.cancel())


def test_an_undecodable_message_makes_the_wait_listen_again(local_cloud: EmulatorConfig, unique: str) -> None:
    """A change in a message the client could not decode would be lost: the wait listens again, from the
    document as it is then, and sees the field true."""

    async def work(client: Any, _: DocumentListener) -> tuple[bool, int]:
        channel = grpc.aio.insecure_channel(local_cloud.emulators.firestore.address)
        garbling = GarblingOnce(
            FirestoreAsyncClient(transport=FirestoreGrpcAsyncIOTransport(channel=channel))
        )
        listener = DocumentListener(garbling, project=client.project)  # type: ignore[arg-type]
        await client.collection("batches").document("b1").set({"finalized": True})
        return await listener.until_true("batches/b1", "finalized"), garbling.streams

    assert _with(local_cloud, unique, work) == (True, 2)


def test_a_change_that_races_the_listener_registration_is_not_lost(
    local_cloud: EmulatorConfig, unique: str
) -> None:
    """The field turns true as the listener registers: the emulator does not always tell such a change (5
    waits of 300 were never told), so the listener reads the document once it is registered."""

    async def work(client: Any, listener: DocumentListener) -> list[bool]:
        told = []
        for round_number in range(150):
            doc = client.collection("batches").document(f"b{round_number}")
            await doc.set({"finalized": False})
            waiting = asyncio.create_task(listener.until_true(f"batches/b{round_number}", "finalized"))
            if round_number % 2:
                await asyncio.sleep(0)  # the listen started, or not yet, as the change commits
            await doc.update({"finalized": True})
            async with asyncio.timeout(10):  # a change never told would hold the wait
                told.append(await waiting)
        return told

    assert _with(local_cloud, unique, work) == [True] * 150
