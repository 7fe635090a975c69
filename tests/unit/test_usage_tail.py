"""The usage tail's layout: which documents a span's minutes are read from, and where a record is filed."""

from __future__ import annotations

import datetime as dt
import uuid

from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

from shared.adapters.usage_tail import USAGE_TAIL, USAGE_TAIL_SHARDS, tail_refs, tail_write
from shared.models.usage import UsageRecord

T0 = dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.UTC)
DB = firestore.AsyncClient(project="unit-usage-tail", credentials=AnonymousCredentials())


def record(*, at: dt.datetime, tenant: str = "acme") -> UsageRecord:
    return UsageRecord(
        job_id="job-x",
        tenant=tenant,
        source="batch:generate",
        calls=0,
        events=[],
        at=at,
        expire_at=at + dt.timedelta(days=30),
    )


def test_a_span_is_read_from_every_shard_of_each_minute_it_meets() -> None:
    spans = [
        (T0 + dt.timedelta(seconds=30), T0 + dt.timedelta(minutes=2)),  # 10:00 and 10:01, not 10:02
        (T0 + dt.timedelta(minutes=5, seconds=59), T0 + dt.timedelta(minutes=6)),  # 10:05
        (T0 + dt.timedelta(minutes=1), T0 + dt.timedelta(minutes=1, seconds=1)),  # 10:01 again: read once
    ]

    refs = tail_refs(db=DB, spans=spans)

    ids = [ref.id for ref in refs]
    minutes = ["202611201000", "202611201001", "202611201005"]
    assert ids == [f"{minute}-{shard:02d}" for minute in minutes for shard in range(USAGE_TAIL_SHARDS)]
    assert {ref.parent.id for ref in refs} == {USAGE_TAIL}


def test_a_record_is_filed_under_its_minute_by_its_id_and_a_minutes_records_spread_over_the_shards() -> None:
    at = T0 + dt.timedelta(minutes=7, seconds=41, microseconds=5)
    mine = record(at=at)

    ref, data = tail_write(db=DB, record_id="rec-1", record=mine, summary=b"{}")
    again, _ = tail_write(db=DB, record_id="rec-1", record=mine, summary=b"{}")

    assert ref.id.startswith("202611201007-") and ref.id == again.id
    assert data["records"] == {"rec-1": {"tenant": "acme", "at": at, "summary": b"{}"}}
    assert data["expire_at"] == T0 + dt.timedelta(days=30, minutes=8)
    assert ref in tail_refs(db=DB, spans=[(at, at + dt.timedelta(microseconds=1))])
    shards = {
        tail_write(db=DB, record_id=uuid.uuid4().hex, record=mine, summary=b"{}")[0].id for _ in range(2000)
    }
    assert len(shards) == USAGE_TAIL_SHARDS
