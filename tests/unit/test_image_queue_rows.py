"""The image queue's rows as the seed shows them (types its clients may rely on), and its object names."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from shared.models.articulos import QueueItem, QueueState
from shared.models.articulos_answers import CurrentItem, HistoryRow
from shared.services.image_dispatch import processed_object, processed_objects

STARTED = dt.datetime(2025, 1, 20, 20, 30, tzinfo=dt.UTC)


def _item(*, completed_after: dt.timedelta | None) -> QueueItem:
    return QueueItem(
        id="q1",
        tenant="t",
        articulo_id=12,
        articulo_nombre='Tornillo hexagonal 3/8"',
        estado=QueueState.COMPLETED if completed_after is not None else QueueState.PROCESSING,
        prioridad=0,
        intentos=1,
        max_intentos=3,
        created_at=STARTED - dt.timedelta(minutes=5),
        started_at=STARTED,
        completed_at=STARTED + completed_after if completed_after is not None else None,
        updated_at=STARTED,
    )


def test_the_seeds_history_row_has_duracion_segundos_15() -> None:
    row = _item(completed_after=dt.timedelta(seconds=15)).history_entry()

    assert row["started_at"] == "2025-01-20T20:30:00.000Z"
    assert row["completed_at"] == "2025-01-20T20:30:15.000Z"
    assert json.dumps(row["duracion_segundos"]) == "15"  # an integer, as the seed writes it, not 15.0
    assert HistoryRow.model_validate(row).duracion_segundos == 15


@pytest.mark.parametrize(("elapsed_ms", "seconds"), [(15_400, 15), (15_600, 16), (300, 0), (61_250, 61)])
def test_duracion_segundos_is_rounded_to_whole_seconds(elapsed_ms: int, seconds: int) -> None:
    row = _item(completed_after=dt.timedelta(milliseconds=elapsed_ms)).history_entry()

    assert type(row["duracion_segundos"]) is int and row["duracion_segundos"] == seconds


def test_segundos_procesando_stays_the_seeds_float() -> None:
    current = _item(completed_after=None).current_entry(STARTED + dt.timedelta(milliseconds=15_500))

    assert current["segundos_procesando"] == 15.5
    assert CurrentItem.model_validate(current).segundos_procesando == 15.5


@pytest.mark.parametrize(
    ("mime", "extension"), [("image/png", "png"), ("image/jpeg", "jpg"), ("image/webp", "webp")]
)
def test_the_processed_image_is_named_after_the_type_the_model_answered(mime: str, extension: str) -> None:
    item = _item(completed_after=None).model_copy(update={"tenant": "a b"})

    assert processed_object(item, mime) == f"articulos/a%20b/12/q-q1.{extension}"
    assert processed_object(item, mime) in processed_objects(item)
