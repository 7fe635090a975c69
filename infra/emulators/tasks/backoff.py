"""Cloud Tasks' retry schedule, as documented for `RetryConfig`."""

from __future__ import annotations


def retry_delay(*, failures: int, min_backoff: float, max_backoff: float, max_doublings: int) -> float:
    """Seconds before the next attempt after `failures` failed attempts (1 for the first failure).

    The interval starts at min_backoff and doubles max_doublings times, then grows linearly by
    min_backoff x 2^max_doublings per retry, never above max_backoff.
    """
    step = failures - 1
    if step < max_doublings:
        delay = min_backoff * 2**step
    else:
        delay = min_backoff * 2**max_doublings * (step - max_doublings + 1)
    return float(min(delay, max_backoff))
