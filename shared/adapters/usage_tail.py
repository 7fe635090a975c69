"""The usage tail: each usage record's summary also filed under its minute, in documents found by id.

  usage_tail/{yyyymmddHHMM}-{shard}   records.{recordId} = {tenant, at, summary}; tenants; expire_at

A results commit writes its usage record and this entry together (same commit, no extra round trip), so an
entry exists exactly when its record does. The shard comes from the record's random id: a minute's commits
spread over USAGE_TAIL_SHARDS documents, so none is hot. A reader of a few recent minutes (the analytics'
tail after the roller's watermark, a window's partial first minute, the realtime figures) gets those
minutes' documents by id: it costs what it returns, in the emulator (which runs every query by scanning the
whole collection) as in production. The record keeps the events, for export and the naive scan.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Iterator
from typing import Any

from google.cloud import firestore

from shared.models.usage import UsageRecord

USAGE_TAIL = "usage_tail"
# A constant, not a setting: readers find a minute's documents by these ids, so every writer and reader of a
# deployment must agree on it. 32 documents a minute keep each under Firestore's sustained write rate of
# about one a second per document up to about 30 commits a second, and under 1 MiB (an entry is 1-5 KB).
USAGE_TAIL_SHARDS = 32
_MINUTE = dt.timedelta(minutes=1)


def _minute_of(at: dt.datetime) -> dt.datetime:
    return at.replace(second=0, microsecond=0)


def tail_id(*, minute: dt.datetime, shard: int) -> str:
    return f"{minute:%Y%m%d%H%M}-{shard:02d}"


def tail_write(
    *, db: firestore.AsyncClient | firestore.Client, record_id: str, record: UsageRecord, summary: bytes
) -> tuple[Any, dict[str, Any]]:
    """The document and merge data filing a record's summary under its minute (for `set(..., merge=True)`:
    a repeat writes the same entry)."""
    shard = zlib.crc32(record_id.encode()) % USAGE_TAIL_SHARDS
    ref = db.collection(USAGE_TAIL).document(tail_id(minute=_minute_of(record.at), shard=shard))
    data = {
        "records": {record_id: {"tenant": record.tenant, "at": record.at, "summary": summary}},
        "tenants": firestore.ArrayUnion([record.tenant]),
        # One value for the whole document: the latest expiry of a record of its minute.
        "expire_at": _minute_of(record.expire_at) + _MINUTE,
    }
    return ref, data


def tail_refs(*, db: firestore.AsyncClient, spans: list[tuple[dt.datetime, dt.datetime]]) -> list[Any]:
    """The tail documents of every minute that meets one of the [start, end) spans."""
    collection = db.collection(USAGE_TAIL)
    minutes = sorted({minute for start, end in spans for minute in _minutes(start, end)})
    return [
        collection.document(tail_id(minute=minute, shard=shard))
        for minute in minutes
        for shard in range(USAGE_TAIL_SHARDS)
    ]


def _minutes(start: dt.datetime, end: dt.datetime) -> Iterator[dt.datetime]:
    minute = _minute_of(start)
    while minute < end:
        yield minute
        minute += _MINUTE
