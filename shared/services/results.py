"""Result lines: the engine's fields around a kind's own, and the results a caller sees (entries).

A result line is one JSON object per item, written once by the lease holder that ran it. Most kinds show one
result per item; a kind whose plan has `entry_starts` shows one per entry, folded from its items' lines.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic_core import to_json

from shared.kinds.base import Kind
from shared.models.batch import BatchDoc, ErrorInfo


def result_line(
    *,
    index: int,
    custom_id: str | None,
    fields: Mapping[str, Any],
    error: ErrorInfo | None,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int,
    processing_ms: int,
    attempts: int,
) -> str:
    """One item's result as a JSON line: the engine's fields with the kind's `fields` after `success`."""
    total = input_tokens + output_tokens
    line: dict[str, Any] = {
        "index": index,
        "customId": custom_id,
        "status": "succeeded" if error is None else "failed",
        "success": error is None,
        **fields,
        "error": None if error is None else error.model_dump(),
        "tokensUsed": total,
        "tokens": {"input": input_tokens, "output": output_tokens, "cached": cached_tokens, "total": total},
        "processingTime": processing_ms,
        "attempts": attempts,
    }
    return to_json(line).decode()


def missing_result(index: int, custom_id: str | None, *, stopped: bool) -> dict[str, Any]:
    """The result of an item that has none: pending while the batch runs, cancelled once it stopped."""
    if stopped:
        return {
            "index": index,
            "customId": custom_id,
            "status": "cancelled",
            "success": False,
            "error": {"code": "cancelled", "message": "the batch stopped before this request ran"},
        }
    return {"index": index, "customId": custom_id, "status": "pending", "success": False}


def entry_items(batch: BatchDoc, start: int, end: int) -> tuple[int, int]:
    """The items [first, last) behind the result entries [start, end)."""
    starts = batch.entry_starts
    if starts is None:
        return start, end
    return starts[start], starts[end] if end < len(starts) else batch.total


def entries(
    *, kind: Kind[Any, Any], batch: BatchDoc, start: int, end: int, items: Mapping[int, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The result entries [start, end) from their items' results (`items` by item index, all present)."""
    starts = batch.entry_starts
    if starts is None:
        return [items[index] for index in range(start, end)]
    folded = []
    for entry in range(start, end):
        first, last = entry_items(batch, entry, entry + 1)
        folded.append(kind.fold(entry, [items[index] for index in range(first, last)], batch.params))
    return folded


def parse(line: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(line)
    return parsed
