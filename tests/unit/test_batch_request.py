"""Parsing and validation of batch requests (pure, no emulator)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError
from pydantic_core import to_json

from shared.errors import InvalidRequest, PayloadTooLarge
from shared.kinds.generate import Generate
from shared.models.batch import FinalizeMessage, WorkMessage
from shared.services import batches
from shared.services.batches import resolve_options
from shared.services.chunking import lane_concurrency, plan_lanes
from shared.settings import Settings


@pytest.fixture
def settings() -> Settings:
    return Settings(batch_max_requests=5, batch_max_body_bytes=4096)


def body(**payload: object) -> bytes:
    return json.dumps(payload).encode()


def parse_request(raw: bytes, *, settings: Settings) -> Any:
    return batches.parse_request(raw, kind=Generate(), settings=settings)


def test_defaults_come_from_settings(settings: Settings) -> None:
    request = parse_request(body(requests=[{"prompt": "hi"}]), settings=settings)
    options = resolve_options(request, settings=settings)
    assert (options.concurrency, options.timeout_ms, options.max_retries) == (5, 30_000, 3)
    assert options.fail_fast is False


def test_camel_case_fields_are_read(settings: Settings) -> None:
    request = parse_request(
        body(
            requests=[{"prompt": "hi", "maxTokens": 10, "customId": "a", "systemInstruction": "be brief"}],
            options={"failFast": True, "retryPolicy": {"maxRetries": 1, "baseDelay": 5}},
        ),
        settings=settings,
    )
    item = request.requests[0]
    assert (item["maxTokens"], item["customId"], item["systemInstruction"]) == (10, "a", "be brief")
    options = resolve_options(request, settings=settings)
    assert (options.fail_fast, options.max_retries, options.base_delay_ms) == (True, 1, 5)


@pytest.mark.parametrize(
    "payload,field",
    [
        ({"requests": [{"prompt": "x"}], "owner": "me"}, "owner"),
        ({"requests": [{"prompt": "x", "status": "done"}]}, "requests.0.status"),
        ({"requests": [{"prompt": "x"}] * 6}, "requests"),
        ({"requests": [{"prompt": "x", "model": "../../etc"}]}, "requests.0.model"),
        ({"requests": [{"prompt": "x"}], "options": {"concurrency": 0}}, "options.concurrency"),
    ],
)
def test_invalid_requests_name_the_field(settings: Settings, payload: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(body(**payload), settings=settings)
    assert field in [d["field"] for d in caught.value.details]


def test_body_over_the_limit_is_refused_before_parsing(settings: Settings) -> None:
    with pytest.raises(PayloadTooLarge):
        parse_request(b" " * 4097, settings=settings)


@pytest.mark.parametrize(
    "total,concurrency,expected",
    [
        (1000, 50, (2, 500)),
        (100, 50, (2, 50)),
        (30, 50, (1, 30)),
        (5000, 5, (1, 500)),
        (10_000, 100, (4, 500)),
    ],
)
def test_lanes_split_concurrency_and_size_chunks(
    total: int, concurrency: int, expected: tuple[int, int]
) -> None:
    assert plan_lanes(total=total, concurrency=concurrency, settings=Settings()) == expected


def test_lanes_share_the_concurrency_exactly() -> None:
    shares = [lane_concurrency(chunk=i, lanes=3, concurrency=50) for i in range(6)]
    assert shares == [17, 17, 16, 17, 17, 16]
    assert sum(shares[:3]) == 50


def test_chunks_store_requests_as_validated_and_read_back_old_and_new_keys(settings: Settings) -> None:
    request = parse_request(
        body(requests=[{"prompt": "hi", "maxTokens": 10, "systemInstruction": "be brief", "customId": "a"}]),
        settings=settings,
    )
    stored = to_json(request.requests)
    written_before = b'[{"prompt":"hi","max_tokens":10,"system_instruction":"be brief","custom_id":"a"}]'

    read = [Generate.item_adapter.validate_json(items)[0] for items in (stored, written_before)]

    assert stored == b'[{"prompt":"hi","maxTokens":10,"customId":"a","systemInstruction":"be brief"}]'
    assert [(p.prompt, p.max_tokens, p.system_instruction) for p in read] == [("hi", 10, "be brief")] * 2


def test_task_bodies_ignore_fields_a_newer_version_adds() -> None:
    """A task enqueued by a newer instance during a rolling deploy runs on an older one."""
    work = WorkMessage.model_validate({"batch_id": "b1", "chunk": 2, "added_later": {"x": 1}})
    final = FinalizeMessage.model_validate({"batch_id": "b1", "added_later": True})

    assert (work.batch_id, work.chunk, work.segment, work.version) == ("b1", 2, 0, None)
    assert final.batch_id == "b1"
    with pytest.raises(ValidationError):
        WorkMessage.model_validate({"batch_id": "b1", "chunk": -1})
