"""Cloud Tasks emulator rules that need no emulator: backoff, giving up, the token bucket, retry headers."""

from __future__ import annotations

import email.utils
import time

import pytest

from infra.emulators.common import retry_delay
from infra.emulators.tasks.backoff import retries_exhausted
from infra.emulators.tasks.delivery import retry_after_s
from infra.emulators.tasks.pacing import TokenBucket, burst_size


def test_backoff_follows_googles_documented_example() -> None:
    # RetryConfig.max_doublings: min 10 s, max 300 s, 3 doublings -> 10, 20, 40, 80, 160, 240, 300, 300.
    delays = [retry_delay(failures=n, min_backoff=10, max_backoff=300, max_doublings=3) for n in range(1, 9)]
    assert delays == [10, 20, 40, 80, 160, 240, 300, 300]


def test_backoff_with_no_doublings_grows_linearly() -> None:
    delays = [retry_delay(failures=n, min_backoff=1, max_backoff=3.5, max_doublings=0) for n in range(1, 6)]
    assert delays == [1, 2, 3, 3.5, 3.5]


@pytest.mark.parametrize(
    ("attempts", "max_attempts", "elapsed", "max_duration", "exhausted"),
    [
        (3, 3, 0.0, 0.0, True),  # attempts only
        (2, 3, 0.0, 0.0, False),
        (3, 3, 5.0, 10.0, False),  # both limits must be reached
        (3, 3, 10.0, 10.0, True),
        (50, -1, 10.0, 10.0, True),  # unlimited attempts: the duration decides
        (50, -1, 9.0, 10.0, False),
        (10_000, -1, 1e6, 0.0, False),  # -1 and 0: retried for as long as the task is retained
    ],
)
def test_retries_stop_only_when_both_limits_are_reached(
    attempts: int, max_attempts: int, elapsed: float, max_duration: float, exhausted: bool
) -> None:
    assert (
        retries_exhausted(
            attempts=attempts,
            max_attempts=max_attempts,
            since_first_attempt_s=elapsed,
            max_retry_duration_s=max_duration,
        )
        is exhausted
    )


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=5, burst=burst_size(5), now=100.0)
    assert [bucket.take(100.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.seconds_until_token(100.0) == pytest.approx(0.2)
    assert bucket.take(100.2) and not bucket.take(100.2)


def test_burst_size_is_derived_from_the_rate() -> None:
    assert (burst_size(0.5), burst_size(5), burst_size(500)) == (1, 5, 100)


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert retry_after_s("2") == 2.0
    assert retry_after_s("soon") is None and retry_after_s(None) is None
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert retry_after_s(in_ten) == pytest.approx(10, abs=1.5)
