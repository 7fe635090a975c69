"""Deliberately wrong JSON answers, for the markers a test puts in the user's text of a JSON-mode request."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from infra.emulators.gemini.semantics import kind_of
from infra.emulators.gemini.structured import Resolver, bounds

INVALID_JSON_MARKER = "EMULATOR_INVALID_JSON"
BREAK_SCHEMA_MARKER = "EMULATOR_BREAK_SCHEMA"
NOT_IN_ENUM = "EMULATOR_NOT_IN_ENUM"
WRONG_TYPE: dict[str, Any] = {
    "string": 12345, "number": "not a number", "integer": "not a number", "boolean": "not a boolean",
    "object": "not an object", "array": "not an array",
}  # fmt: skip


def break_schema(value: Any, schema: Mapping[str, Any]) -> Any:
    """Valid JSON that `schema` rejects. In an object answer: the first enum (or const) property becomes
    "EMULATOR_NOT_IN_ENUM", the first bounded number goes one past its bound (maximum + 1, else minimum - 1),
    the first required property not changed so far is dropped; if none of these applies, the first property
    gets a value of the wrong type, and an object with no property becomes an array. Any other answer
    becomes a value of the wrong type."""
    resolver = Resolver(schema)
    root = resolver.resolve(schema)
    if kind_of(root) != "object" or not isinstance(value, dict):
        return 12345 if kind_of(root) == "string" else NOT_IN_ENUM
    properties = {name: resolver.resolve(sub) for name, sub in (root.get("properties") or {}).items()}
    present = [name for name in properties if name in value]
    broken = dict(value)
    touched: set[str] = set()
    constrained = (n for n in present if properties[n].get("enum") or "const" in properties[n])
    if (name := next(constrained, None)) is not None:
        broken[name] = NOT_IN_ENUM
        touched.add(name)
    for name in present:
        kind = kind_of(properties[name])
        if name not in touched and kind in ("number", "integer"):
            low, high = bounds(properties[name], integer=kind == "integer")
            if low is not None or high is not None:
                edge = high + 1 if high is not None else (low or 0) - 1
                broken[name] = int(edge) if kind == "integer" else edge
                touched.add(name)
                break
    required = [n for n in root.get("required") or [] if n in broken and n not in touched]
    if required:
        del broken[required[0]]
        touched.add(required[0])
    if not touched:
        if not present:
            return [broken]
        broken[present[0]] = WRONG_TYPE.get(kind_of(properties[present[0]]), 12345)
    return broken


def invalid_json(text: str) -> str:
    """`text` (valid JSON) cut in the middle, as an answer truncated mid-object; never valid JSON."""
    cut = text[: len(text) // 2]
    try:
        json.loads(cut)
    except ValueError:
        return cut
    return text + "}"  # a short scalar whose half still parses: trailing junk instead
