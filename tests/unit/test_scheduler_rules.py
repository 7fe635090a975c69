"""Cloud Scheduler emulator rules that need no running emulator: cron grammar, time zones, retries, masks."""

from __future__ import annotations

import datetime as dt

import pytest
from google.cloud import scheduler_v1

from infra.emulators.common import EmulatorError
from infra.emulators.scheduler.cron import InvalidSchedule, check_schedule, next_run, time_zone
from infra.emulators.scheduler.delivery import next_retry_delay
from infra.emulators.scheduler.jobs import apply_update, new_job

UTC = dt.UTC


@pytest.mark.parametrize(
    "schedule",
    ["* * * * *", "*/5 0-6 1,15 JAN-MAR MON-FRI", "0 0 * * 7", "0 9 * * sun", "5/10 * * * *", "0 0 1 1 0-7"],
)
def test_unix_cron_schedules_google_accepts(schedule: str) -> None:
    check_schedule(schedule)


@pytest.mark.parametrize(
    "schedule",
    [
        "@daily",
        "* * * * * *",
        "* * * *",
        "0 0 L * *",
        "0 0 * * 1#2",
        "0 0 ? * *",
        "60 * * * *",
        "0 24 * * *",
        "0 0 0 * *",
        "0 0 * 13 *",
        "0 0 * * 8",
        "*/0 * * * *",
        "5-1 * * * *",
        "0 0 * FOO *",
        "every 5 minutes",
    ],
)
def test_schedules_google_refuses(schedule: str) -> None:
    with pytest.raises(InvalidSchedule):
        check_schedule(schedule)


def test_time_zones_are_iana_names_and_empty_means_utc() -> None:
    assert time_zone("").key == "Etc/UTC"
    assert time_zone("America/New_York").key == "America/New_York"
    for name in ("Mars/Olympus", "localtime", "../etc/passwd", "Europe"):
        with pytest.raises(InvalidSchedule):
            time_zone(name)


def test_next_run_is_read_in_the_time_zone_across_daylight_saving() -> None:
    winter = next_run(
        schedule="0 3 * * *", time_zone_name="Europe/Berlin", after=dt.datetime(2025, 1, 10, tzinfo=UTC)
    )
    summer = next_run(
        schedule="0 3 * * *", time_zone_name="Europe/Berlin", after=dt.datetime(2025, 7, 10, tzinfo=UTC)
    )
    assert winter == dt.datetime(2025, 1, 10, 2, 0, tzinfo=UTC)  # 03:00 CET
    assert summer == dt.datetime(2025, 7, 10, 1, 0, tzinfo=UTC)  # 03:00 CEST


def test_next_run_is_strictly_after_the_current_minute() -> None:
    noon = dt.datetime(2025, 1, 10, 12, 0, tzinfo=UTC)
    for after in (noon, noon + dt.timedelta(seconds=30), noon + dt.timedelta(seconds=59.9)):
        assert next_run(schedule="* * * * *", time_zone_name="", after=after) == noon + dt.timedelta(
            minutes=1
        )


def _retry(**fields: object) -> scheduler_v1.RetryConfig:
    job = new_job(scheduler_v1.Job(retry_config=scheduler_v1.RetryConfig(**fields)))
    return job.retry_config


def test_backoff_follows_googles_documented_example() -> None:
    # min 10 s, max 300 s, 3 doublings: "10s, 20s, 40s, 80s, 160s, 240s, 300s, 300s".
    retry = _retry(
        retry_count=5,
        min_backoff_duration=dt.timedelta(seconds=10),
        max_backoff_duration=dt.timedelta(seconds=300),
        max_doublings=3,
    )
    delays = [next_retry_delay(retry=retry, failures=n, elapsed_s=0) for n in range(1, 7)]
    assert delays == [10, 20, 40, 80, 160, None]


def test_retries_end_when_both_retry_count_and_max_retry_duration_are_reached() -> None:
    assert next_retry_delay(retry=_retry(), failures=1, elapsed_s=0) is None, "defaults: no retry"
    by_duration = _retry(max_retry_duration=dt.timedelta(seconds=60))  # retry_count 0, min backoff 5 s
    assert next_retry_delay(retry=by_duration, failures=1, elapsed_s=0) == 5
    assert next_retry_delay(retry=by_duration, failures=4, elapsed_s=15) == 40
    assert next_retry_delay(retry=by_duration, failures=4, elapsed_s=21) is None, "would start after 60 s"
    both = _retry(retry_count=3, max_retry_duration=dt.timedelta(seconds=1))
    assert next_retry_delay(retry=both, failures=3, elapsed_s=100) == 20, "retry_count not yet reached"


def test_update_masks_replace_only_the_named_fields() -> None:
    stored = new_job(
        scheduler_v1.Job(
            name="projects/p/locations/l/jobs/j",
            schedule="0 3 * * *",
            http_target=scheduler_v1.HttpTarget(uri="http://a.example/x", headers={"A": "1"}),
            retry_config=scheduler_v1.RetryConfig(
                retry_count=2, min_backoff_duration=dt.timedelta(seconds=7)
            ),
        )
    )
    update = scheduler_v1.Job(
        http_target=scheduler_v1.HttpTarget(uri="http://b.example/y"),
        retry_config=scheduler_v1.RetryConfig(retry_count=4),
    )

    nested = apply_update(stored=stored, update=update, paths=["retry_config.retry_count", "http_target.uri"])
    assert nested.retry_config.retry_count == 4
    assert nested.retry_config.min_backoff_duration == dt.timedelta(seconds=7)
    assert nested.http_target.uri == "http://b.example/y" and dict(nested.http_target.headers) == {"A": "1"}
    whole = apply_update(stored=stored, update=update, paths=["retry_config"])
    assert whole.retry_config.min_backoff_duration == dt.timedelta(seconds=5), "replaced, then defaulted"
    assert stored.retry_config.retry_count == 2, "the stored job is not modified"

    with pytest.raises(EmulatorError) as refused:
        apply_update(stored=stored, update=update, paths=["user_update_time"])
    assert refused.value.code == "INVALID_ARGUMENT"
    with pytest.raises(EmulatorError) as unemulated:
        apply_update(stored=stored, update=update, paths=["pubsub_target"])
    assert unemulated.value.code == "UNIMPLEMENTED"
