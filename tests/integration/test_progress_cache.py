"""Status polls share reads of the claimed chunks' progress for a bounded time, against the Firestore
emulator."""

from __future__ import annotations

import dataclasses

import pytest

from shared import runtime
from shared.app import platform
from shared.emulator_config import EmulatorConfig
from shared.services import status
from shared.services.engine import Engine
from tests.integration.engine_harness import RecordingQueue, submit


@pytest.fixture
def engine(local_cloud: EmulatorConfig) -> Engine:
    # Nothing is delivered: the chunks change only when the test changes them.
    return dataclasses.replace(platform().engine, queue=RecordingQueue())  # type: ignore[arg-type]


def _change_chunk(engine: Engine, batch_id: str, **changes: object) -> None:
    snapshot = runtime.run(engine.store.get_chunk(batch_id, 0))
    assert snapshot is not None
    changed = runtime.run(
        engine.store.update_chunk_if_unchanged(batch_id, 0, version=snapshot.version, changes=changes)
    )
    assert changed is not None


def test_reads_within_the_age_share_one_query_and_later_reads_see_changes(
    engine: Engine, unique: str
) -> None:
    batch_id = submit(engine, f"progress-{unique}", [{"prompt": "p"}, {"prompt": "q"}])
    _change_chunk(engine, batch_id, claims=1, progress={"finished": 1})
    now = [100.0]
    cache = status.ProgressCache(engine.store, max_age_s=0.5, timer=lambda: now[0])

    first = runtime.run(cache.read(batch_id))
    _change_chunk(engine, batch_id, progress={"finished": 2})
    now[0] += 0.4
    shared = runtime.run(cache.read(batch_id))
    now[0] += 0.2
    fresh = runtime.run(cache.read(batch_id))

    assert [c.progress.finished for c in first] == [1]
    assert [c.progress.finished for c in shared] == [1]
    assert [c.progress.finished for c in fresh] == [2]


def test_until_a_first_result_shows_every_read_queries(engine: Engine, unique: str) -> None:
    batch_id = submit(engine, f"progress-{unique}", [{"prompt": "p"}])
    cache = status.ProgressCache(engine.store, max_age_s=0.5, timer=lambda: 100.0)

    before = runtime.run(cache.read(batch_id))
    _change_chunk(engine, batch_id, claims=1)
    claimed = runtime.run(cache.read(batch_id))
    _change_chunk(engine, batch_id, progress={"finished": 1})
    first_result = runtime.run(cache.read(batch_id))

    assert before == [], "a chunk never claimed has no progress: it is not read"
    assert [c.claims for c in claimed] == [1]
    assert [c.progress.finished for c in first_result] == [1]


def test_an_age_of_zero_reads_every_time(engine: Engine, unique: str) -> None:
    batch_id = submit(engine, f"progress-{unique}", [{"prompt": "p"}])
    _change_chunk(engine, batch_id, claims=1, progress={"finished": 1})
    cache = status.ProgressCache(engine.store, max_age_s=0, timer=lambda: 0.0)

    before = runtime.run(cache.read(batch_id))
    _change_chunk(engine, batch_id, claims=2)
    after = runtime.run(cache.read(batch_id))

    assert ([c.claims for c in before], [c.claims for c in after]) == ([1], [2])


def test_no_progress_is_read_ahead_for_a_batch_seen_fanned_in(engine: Engine, unique: str) -> None:
    batch_id = submit(engine, f"progress-{unique}", [{"prompt": "p"}])
    _change_chunk(engine, batch_id, claims=1)
    cache = status.ProgressCache(engine.store, max_age_s=0.5, timer=lambda: 100.0)

    before = runtime.run(cache.read_ahead(batch_id))
    cache.seen_fanned_in(batch_id)
    after = runtime.run(cache.read_ahead(batch_id))

    assert before is not None and [c.index for c in before] == [0]
    assert after is None
