"""JSON answers that fit a response schema: a Gemini `Schema` (OpenAPI subset) or a JSON Schema.

Resolves `$ref` (to `$defs`, `definitions` or any local pointer), `allOf`, `anyOf`/`oneOf` (the first non-null
branch), and honours `required`, `enum`, `const`, `minimum`/`maximum` (and the exclusive ones),
`minItems`/`maxItems`, `uniqueItems`, `minLength`/`maxLength` and common string formats. google-genai sends
the legacy `responseSchema` with some keys in snake_case (`max_items`) and int64 values as strings: both are
read. Properties the text speaks to (see semantics.py) take their value from it; the rest are filled with
deterministic random words and numbers.
"""

from __future__ import annotations

import math
import random
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.emulators.gemini.analysis import TextFacts, analyse
from infra.emulators.gemini.content import WORDS
from infra.emulators.gemini.semantics import MISSING, Given, kind_of, normalise, semantic_value

# Past this depth optional properties are left out, nullable values are null and arrays are as short as
# allowed, so that a recursive schema (a tree of itself) ends.
DEPTH_LIMIT = 6
_SNAKE = {
    "minItems": "min_items", "maxItems": "max_items", "minLength": "min_length", "maxLength": "max_length",
    "propertyOrdering": "property_ordering", "anyOf": "any_of", "uniqueItems": "unique_items",
}  # fmt: skip
_FORMATS = {
    "date-time": "2024-05-{day:02d}T10:00:00Z", "date": "2024-05-{day:02d}", "time": "10:{day:02d}:00",
    "email": "user{day}@example.com", "uri": "https://example.com/{day}", "url": "https://example.com/{day}",
    "hostname": "host{day}.example.com", "ipv4": "192.0.2.{day}", "ipv6": "2001:db8::{day}",
}  # fmt: skip


@dataclass(frozen=True)
class Scope:
    """What a property reads: the text's facts, and values given by name to the object being filled."""

    facts: TextFacts
    given: Mapping[str, Any] = field(default_factory=dict)


def key(schema: Mapping[str, Any], name: str) -> Any:
    """A schema keyword under its JSON Schema name or the snake_case one google-genai may send."""
    return schema.get(name, schema.get(_SNAKE.get(name, name)))


def number(schema: Mapping[str, Any], name: str) -> float | None:
    value = key(schema, name)
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def bounds(schema: Mapping[str, Any], *, integer: bool) -> tuple[float | None, float | None]:
    """Inclusive (low, high) from minimum/maximum and exclusiveMinimum/exclusiveMaximum (either draft)."""
    step = 1.0 if integer else 0.001
    low, high = number(schema, "minimum"), number(schema, "maximum")
    for name, sign in (("exclusiveMinimum", 1), ("exclusiveMaximum", -1)):
        exclusive = schema.get(name)
        if exclusive is True:
            if sign > 0 and low is not None:
                low += step
            elif sign < 0 and high is not None:
                high -= step
        elif isinstance(exclusive, int | float) and not isinstance(exclusive, bool):
            edge = float(exclusive) + sign * step
            if sign > 0:
                low = edge if low is None else max(low, edge)
            else:
                high = edge if high is None else min(high, edge)
    return low, high


class Resolver:
    """Follows references and combinators of one root schema down to a single concrete schema."""

    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root

    def resolve(self, schema: Any) -> dict[str, Any]:
        current: dict[str, Any] = dict(schema) if isinstance(schema, Mapping) else {}
        for _ in range(64):  # a reference cycle with nothing else in it ends here
            if isinstance(current.get("$ref"), str):
                siblings = {k: v for k, v in current.items() if k != "$ref"}
                current = {**self._pointer(current["$ref"]), **siblings}
            elif isinstance(current.get("allOf"), list):
                current = self._merge(current)
            elif branches := (key(current, "anyOf") or current.get("oneOf")):
                siblings = {k: v for k, v in current.items() if k not in ("anyOf", "any_of", "oneOf")}
                resolved = [self.resolve(branch) for branch in branches]
                chosen = next((b for b in resolved if not is_null(b)), resolved[0])
                current = {**siblings, **chosen}
            else:
                return current
        return current

    def allows_null(self, schema: Any) -> bool:
        if not isinstance(schema, Mapping):
            return False
        declared = schema.get("type")
        branches = key(schema, "anyOf") or schema.get("oneOf") or []
        return (
            schema.get("nullable") is True
            or (isinstance(declared, list) and any(str(t).lower() == "null" for t in declared))
            or any(is_null(self.resolve(branch)) for branch in branches)
        )

    def _pointer(self, reference: str) -> dict[str, Any]:
        target: Any = self.root
        for token in reference.removeprefix("#").strip("/").split("/"):
            if not token:
                continue
            token = token.replace("~1", "/").replace("~0", "~")
            target = target.get(token) if isinstance(target, Mapping) else None
        return dict(target) if isinstance(target, Mapping) else {}

    def _merge(self, schema: dict[str, Any]) -> dict[str, Any]:
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            resolved = self.resolve(part)
            merged["properties"] = {**(resolved.get("properties") or {}), **(merged.get("properties") or {})}
            merged["required"] = list(dict.fromkeys([*(merged.get("required") or []),
                                                     *(resolved.get("required") or [])]))  # fmt: skip
            for name, value in resolved.items():
                merged.setdefault(name, value)
        if not merged["properties"]:
            del merged["properties"]
        return merged


def is_null(schema: Mapping[str, Any]) -> bool:
    declared = schema.get("type")
    if isinstance(declared, list):
        return bool(declared) and all(str(t).lower() == "null" for t in declared)
    return str(declared).lower() == "null"


class Filler:
    """Builds a value for a root schema; the same (schema, rng seed, text) always gives the same value."""

    def __init__(self, root: Mapping[str, Any], rng: random.Random) -> None:
        self.resolver = Resolver(root)
        self.rng = rng

    def fill(self, schema: Any, scope: Scope, depth: int = 0) -> Any:
        if depth > DEPTH_LIMIT and self.resolver.allows_null(schema):
            return None
        resolved = self.resolver.resolve(schema)
        if "const" in resolved:
            return resolved["const"]
        if resolved.get("enum"):
            return self.rng.choice(list(resolved["enum"]))
        kind = kind_of(resolved)
        if kind == "object":
            return self._object(resolved, scope, depth)
        if kind == "array":
            return self._array(resolved, scope, depth)
        if kind in ("integer", "number"):
            return self._number(resolved, integer=kind == "integer")
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self._string(resolved)

    def _object(self, schema: Mapping[str, Any], scope: Scope, depth: int) -> dict[str, Any]:
        properties: Mapping[str, Any] = schema.get("properties") or {}
        required = [name for name in schema.get("required") or [] if isinstance(name, str)]
        ordering = [name for name in key(schema, "propertyOrdering") or [] if name in properties]
        value: dict[str, Any] = {}
        for name in [*ordering, *(n for n in properties if n not in ordering)]:
            if depth < DEPTH_LIMIT or name in required:
                value[name] = self._property(name, properties[name], scope, depth + 1)
        extra = schema.get("additionalProperties")
        for name in required:
            if name not in value:
                value[name] = self._property(
                    name, extra if isinstance(extra, Mapping) else {}, scope, depth + 1
                )
        return value

    def _property(self, name: str, schema: Any, scope: Scope, depth: int) -> Any:
        if depth > DEPTH_LIMIT and self.resolver.allows_null(schema):
            return None
        resolved = self.resolver.resolve(schema)
        wanted = normalise(name)
        if wanted in scope.given:
            given = self.fit(scope.given[wanted], resolved, scope, depth)
            if given is not MISSING:
                return given
        items = self.resolver.resolve(resolved.get("items")) if kind_of(resolved) == "array" else {}
        proposed = semantic_value(wanted, resolved, scope.facts, items)
        fitted = self.fit(proposed, resolved, scope, depth)
        return fitted if fitted is not MISSING else self.fill(resolved, Scope(scope.facts), depth)

    def fit(self, value: Any, schema: Mapping[str, Any], scope: Scope, depth: int) -> Any:
        """`value` made to fit `schema` (resolved) - clipped, cut, padded - or MISSING if it cannot."""
        if value is MISSING or value is None:
            return MISSING
        kind = kind_of(schema)
        if isinstance(value, Given) and kind == "object":
            return self._object(schema, Scope(value.facts or scope.facts, value.values), depth)
        if isinstance(value, Given):
            value = value.text
        if "const" in schema:
            return schema["const"] if value == schema["const"] else MISSING
        if schema.get("enum"):
            return enum_match(value, list(schema["enum"]))
        if kind == "string":
            return self._fit_string(value, schema)
        if kind in ("number", "integer"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                return MISSING
            return clip(value, schema, integer=kind == "integer")
        if kind == "boolean":
            return value if isinstance(value, bool) else MISSING
        if kind == "array" and isinstance(value, list):
            return self._fit_array(value, schema, scope, depth)
        return MISSING

    def _fit_string(self, value: Any, schema: Mapping[str, Any]) -> Any:
        if not isinstance(value, str) or schema.get("format") in _FORMATS:
            return MISSING
        longest = number(schema, "maxLength")
        if longest is not None:
            value = value[: int(longest)]
        shortest = number(schema, "minLength")
        if shortest is not None and len(value) < shortest:
            return MISSING
        return value if _matches(schema.get("pattern"), value) else MISSING

    def _fit_array(self, values: list[Any], schema: Mapping[str, Any], scope: Scope, depth: int) -> Any:
        item_schema = self.resolver.resolve(schema.get("items"))
        declared_low, declared_high = _item_counts(schema)
        low, high = declared_low or 0, declared_high if declared_high is not None else len(values)
        unique = key(schema, "uniqueItems") is True
        fitted: list[Any] = []
        for item in values:
            if len(fitted) >= high:
                break
            value = self.fit(item, item_schema, scope, depth + 1)
            if value is not MISSING and not (unique and value in fitted):
                fitted.append(value)
        if values and not fitted:
            return MISSING  # nothing the text gave fits these items: random ones instead
        return self._pad(fitted, schema.get("items"), low, unique, Scope(scope.facts), depth)

    def _array(self, schema: Mapping[str, Any], scope: Scope, depth: int) -> list[Any]:
        """One to three items (as few as allowed past the depth limit), within minItems/maxItems."""
        prefix = [self.fill(item, scope, depth + 1) for item in schema.get("prefixItems") or []]
        declared_low, declared_high = _item_counts(schema)
        low = declared_low if declared_low is not None else (0 if declared_high == 0 else 1)
        high = max(low, min(3, declared_high if declared_high is not None else 3))
        count = max(len(prefix), low if depth >= DEPTH_LIMIT else self.rng.randint(low, high))
        items = schema.get("items")
        if schema.get("prefixItems") and not isinstance(items, Mapping):
            return prefix
        return self._pad(prefix, items, count, key(schema, "uniqueItems") is True, scope, depth)

    def _pad(
        self, values: list[Any], items: Any, count: int, unique: bool, scope: Scope, depth: int
    ) -> list[Any]:
        """`values` grown to `count` items of schema `items`, distinct if `unique` (as far as possible)."""
        values = list(values)
        for _ in range(10 * count + 10):
            if len(values) >= count:
                break
            value = self.fill(items if isinstance(items, Mapping) else {}, scope, depth + 1)
            if not (unique and value in values):
                values.append(value)
        return values

    def _number(self, schema: Mapping[str, Any], *, integer: bool) -> float | int:
        """Within the schema's bounds; 0..100 (integers) or 0..1 (numbers) when it sets none."""
        low, high = bounds(schema, integer=integer)
        span = 100.0 if integer else 1.0
        if low is None:
            low = 0.0 if high is None or high >= 0 else high - span
        if high is None:
            high = span if low < span else low + span
        if integer:
            return self.rng.randint(math.ceil(low), max(math.ceil(low), math.floor(high)))
        return clip(round(self.rng.uniform(low, max(low, high)), 4), schema, integer=False)

    def _string(self, schema: Mapping[str, Any]) -> str:
        day = self.rng.randint(1, 28)
        if schema.get("format") == "uuid":
            return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        if (template := _FORMATS.get(str(schema.get("format")))) is not None:
            return template.format(day=day)
        words = [self.rng.choice(WORDS) for _ in range(self.rng.randint(1, 4))]
        shortest, longest = number(schema, "minLength"), number(schema, "maxLength")
        while shortest is not None and len(" ".join(words)) < shortest:
            words.append(self.rng.choice(WORDS))
        text = " ".join(words)
        return text[: int(longest)] if longest is not None else text


def _matches(pattern: Any, value: str) -> bool:
    """JSON Schema patterns are unanchored searches; one Python cannot compile matches nothing."""
    if not isinstance(pattern, str):
        return True
    try:
        return re.search(pattern, value) is not None
    except re.error:
        return False


def _item_counts(schema: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """The declared minItems and maxItems."""
    low, high = number(schema, "minItems"), number(schema, "maxItems")
    return (None if low is None else int(low)), (None if high is None else int(high))


def clip(value: float, schema: Mapping[str, Any], *, integer: bool) -> float | int:
    low, high = bounds(schema, integer=integer)
    if low is not None:
        value = max(value, low)
    if high is not None:
        value = min(value, high)
    return int(round(value)) if integer else float(value)


def enum_match(value: Any, enum: list[Any]) -> Any:
    """The enum member equal to `value`, else equal ignoring case, else one a prefix of the other
    (PER ~ PERSON); MISSING when none."""
    for member in enum:
        if value == member and type(value) is type(member):
            return member
    if not isinstance(value, str):
        return MISSING
    lowered = value.lower()
    for member in enum:
        if str(member).lower() == lowered:
            return member
    for member in enum:
        text = str(member).lower()
        if len(text) >= 3 and len(lowered) >= 3 and (text.startswith(lowered) or lowered.startswith(text)):
            return member
    return MISSING


def value_for_schema(schema: Mapping[str, Any], rng: random.Random, *, text: str = "") -> Any:
    """A value that validates against `schema`; properties the user's `text` speaks to are read from it."""
    return Filler(schema, rng).fill(schema, Scope(analyse(text)))
