"""Mergeable usage statistics: per (model, endpoint), counts, sums and a latency histogram.

A usage record carries the statistics of its own events, and rollups (minute, hour, day) are merges of them,
so any window is answered by merging a few dozen of these instead of reading its events. Every figure is a
sum, so merging is exact (and so is subtracting one from another, which a tenant's reset relies on).

Latencies go into logarithmic buckets (DDSketch's mapping): bucket `i` holds values in (g^(i-1), g^i] with
g = (1 + a) / (1 - a), and stands for 2 g^i / (1 + g), within a relative error `a` of every value in it.
With a = 0.5 %, a percentile read from merged buckets is within 0.5 % of the exact nearest-rank value of the
same calls, at any merge depth. Latencies under a day need at most about 1,150 buckets; in practice a
model's latencies fill a few hundred.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from shared.models.usage import UsageEvent

RELATIVE_ACCURACY = 0.005
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)
# Gemini API methods billed at the Batch Mode price (half of the interactive one).
BATCH_MODE_METHODS = frozenset({"batchGenerateContent"})


def bucket_of(latency_ms: float) -> int:
    """The histogram bucket of a latency; 0 ms and below share bucket -1 (no logarithm)."""
    if latency_ms <= 0:
        return -1
    return math.ceil(math.log(latency_ms) / _LOG_GAMMA)


def bucket_value(bucket: int) -> float:
    """The latency a bucket stands for (within RELATIVE_ACCURACY of every value in it)."""
    if bucket == -1:
        return 0.0
    return 2 * _GAMMA**bucket / (1 + _GAMMA)


@dataclass
class Histogram:
    """Counts of latencies by bucket, dense from bucket `offset` on: a JSON list of integers decodes in C,
    and two histograms merge with one `map(add)` over the overlapping range."""

    offset: int = 0
    counts: list[int] = field(default_factory=list)

    def add(self, bucket: int, count: int = 1) -> None:
        if not self.counts:
            self.offset, self.counts = bucket, [count]
            return
        if bucket < self.offset:
            self.counts[:0] = [0] * (self.offset - bucket)
            self.offset = bucket
        position = bucket - self.offset
        if position >= len(self.counts):
            self.counts.extend([0] * (position + 1 - len(self.counts)))
        self.counts[position] += count

    def merge(self, other: Histogram, *, sign: int = 1) -> None:
        if not other.counts:
            return
        if not self.counts:
            self.offset, self.counts = other.offset, [sign * c for c in other.counts]
            return
        if other.offset < self.offset:
            self.counts[:0] = [0] * (self.offset - other.offset)
            self.offset = other.offset
        start = other.offset - self.offset
        end = start + len(other.counts)
        if end > len(self.counts):
            self.counts.extend([0] * (end - len(self.counts)))
        theirs = other.counts if sign == 1 else [-c for c in other.counts]
        self.counts[start:end] = map(operator.add, self.counts[start:end], theirs)
        if sign != 1:  # what is taken away may leave empty buckets at the ends
            while self.counts and not self.counts[-1]:
                self.counts.pop()
            lead = next((i for i, c in enumerate(self.counts) if c), len(self.counts))
            self.counts, self.offset = self.counts[lead:], self.offset + lead

    def total(self) -> int:
        return sum(self.counts)

    def items(self) -> Iterator[tuple[int, int]]:
        return ((self.offset + i, c) for i, c in enumerate(self.counts) if c)

    def to_json(self) -> list[int]:
        return [self.offset, *self.counts]

    @classmethod
    def from_json(cls, data: list[int]) -> Histogram:
        return cls(offset=data[0], counts=data[1:]) if data else cls()


@dataclass
class Cell:
    """The calls of one (model, endpoint) pair: every field is a sum, so cells merge by adding."""

    calls: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    cache_hits: int = 0
    latency_sum_ms: int = 0
    # Failed calls of items that succeeded on a later attempt: failures the retries absorbed.
    absorbed: int = 0
    batch_mode_cost_usd: float = 0.0  # cost of calls billed at the Batch Mode price
    errors: dict[str, int] = field(default_factory=dict)  # outcome -> calls
    latency: Histogram = field(default_factory=Histogram)

    def add_event(self, event: UsageEvent, *, absorbed: bool) -> None:
        self.calls += 1
        self.input_tokens += event.input_tokens
        self.output_tokens += event.output_tokens
        self.cached_tokens += event.cached_tokens
        self.cost_usd += event.cost_usd
        self.cache_hits += 1 if event.cache_hit else 0
        self.latency_sum_ms += event.latency_ms
        if event.method in BATCH_MODE_METHODS:
            self.batch_mode_cost_usd += event.cost_usd
        if event.outcome != "ok":
            self.failed += 1
            self.absorbed += 1 if absorbed else 0
            self.errors[event.outcome] = self.errors.get(event.outcome, 0) + 1
        self.latency.add(bucket_of(event.latency_ms))

    def merge(self, other: Cell, *, sign: int = 1) -> None:
        """Add `other` (sign 1) or take it away (sign -1)."""
        self.calls += sign * other.calls
        self.failed += sign * other.failed
        self.input_tokens += sign * other.input_tokens
        self.output_tokens += sign * other.output_tokens
        self.cached_tokens += sign * other.cached_tokens
        self.cost_usd += sign * other.cost_usd
        self.cache_hits += sign * other.cache_hits
        self.latency_sum_ms += sign * other.latency_sum_ms
        self.absorbed += sign * other.absorbed
        self.batch_mode_cost_usd += sign * other.batch_mode_cost_usd
        _add_counts(self.errors, other.errors, sign)
        self.latency.merge(other.latency, sign=sign)

    @property
    def ok(self) -> int:
        return self.calls - self.failed

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.calls,
            "f": self.failed,
            "i": self.input_tokens,
            "o": self.output_tokens,
            "c": self.cached_tokens,
            "$": self.cost_usd,
            "h": self.cache_hits,
            "l": self.latency_sum_ms,
            "a": self.absorbed,
            "b": self.batch_mode_cost_usd,
            "e": self.errors,
            "q": self.latency.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cell:
        return cls(
            calls=data["n"],
            failed=data["f"],
            input_tokens=data["i"],
            output_tokens=data["o"],
            cached_tokens=data["c"],
            cost_usd=data["$"],
            cache_hits=data["h"],
            latency_sum_ms=data["l"],
            absorbed=data["a"],
            batch_mode_cost_usd=data["b"],
            errors=dict(data["e"]),
            latency=Histogram.from_json(data["q"]),
        )


def _add_counts(into: dict[Any, int], other: dict[Any, int], sign: int) -> None:
    for key, count in other.items():
        total = into.get(key, 0) + sign * count
        if total:
            into[key] = total
        else:
            into.pop(key, None)


@dataclass
class UsageStats:
    """Cells by (model, endpoint)."""

    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)

    def cell(self, model: str, endpoint: str) -> Cell:
        key = (model, endpoint)
        found = self.cells.get(key)
        if found is None:
            found = self.cells[key] = Cell()
        return found

    def merge(self, other: UsageStats, *, sign: int = 1) -> UsageStats:
        for (model, endpoint), cell in other.cells.items():
            self.cell(model, endpoint).merge(cell, sign=sign)
        self.cells = {key: cell for key, cell in self.cells.items() if cell.calls}
        return self

    def select(self, *, model: str | None = None, endpoint: str | None = None) -> UsageStats:
        """The cells of one model and/or endpoint."""
        return UsageStats(
            {
                key: cell
                for key, cell in self.cells.items()
                if (model is None or key[0] == model) and (endpoint is None or key[1] == endpoint)
            }
        )

    def total(self) -> Cell:
        merged = Cell()
        for cell in self.cells.values():
            merged.merge(cell)
        return merged

    def __iter__(self) -> Iterator[tuple[tuple[str, str], Cell]]:
        return iter(self.cells.items())

    def dump(self) -> bytes:
        """As a JSON blob (a Firestore map of maps decodes several times slower in the Python client)."""
        return json.dumps(
            {f"{model}\t{endpoint}": cell.to_json() for (model, endpoint), cell in self.cells.items()},
            separators=(",", ":"),
        ).encode()

    @classmethod
    def load(cls, blob: bytes | None) -> UsageStats:
        if not blob:
            return cls()
        cells: dict[tuple[str, str], Cell] = {}
        for key, data in json.loads(blob).items():
            model, _, endpoint = key.partition("\t")
            cells[(model, endpoint)] = Cell.from_json(data)
        return cls(cells)

    @classmethod
    def merged(cls, many: Iterable[UsageStats]) -> UsageStats:
        out = cls()
        for stats in many:
            out.merge(stats)
        return out


def summarize(events: Iterable[UsageEvent]) -> UsageStats:
    """The statistics of a set of events (one usage record's).

    A failed call counts as absorbed when a later call of the same item (same job, item index) succeeded: an
    item's attempts are recorded together, in one results commit, so the record holds them all.
    """
    events = list(events)
    last_outcome: dict[str, str] = {}
    for event in events:
        last_outcome[_item_of(event)] = event.outcome
    stats = UsageStats()
    for event in events:
        absorbed = event.outcome != "ok" and last_outcome[_item_of(event)] == "ok"
        stats.cell(event.model, event.endpoint).add_event(event, absorbed=absorbed)
    return stats


def _item_of(event: UsageEvent) -> str:
    # event_id is {job}-{item}-{attempt}-{call}: the item is everything before the last two parts.
    return event.event_id.rsplit("-", 2)[0]


def percentile(latency: Histogram, q: float) -> float | None:
    """The nearest-rank q-quantile (0 < q <= 1) of a histogram: the value of rank ceil(q * n)."""
    total = latency.total()
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total - 1e-9))
    seen = 0
    last = latency.offset
    for bucket, count in latency.items():
        seen += count
        last = bucket
        if seen >= rank:
            return bucket_value(bucket)
    return bucket_value(last)
