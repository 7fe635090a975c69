"""Cloud Tasks' retry policy, as documented for `RetryConfig`: when to give up (the delay is shared with
Cloud Scheduler, in `infra.emulators.common.retry_delay`)."""

from __future__ import annotations


def retries_exhausted(
    *, attempts: int, max_attempts: int, since_first_attempt_s: float, max_retry_duration_s: float
) -> bool:
    """Whether a task that just failed its `attempts`-th attempt is given up (and deleted).

    Google stops only when both limits are satisfied: `max_attempts` attempts made (-1: no attempt limit)
    and `max_retry_duration` passed since the first attempt (0: no time limit). With -1 and 0 together the
    task is retried for as long as it is retained.
    """
    if max_attempts == -1 and max_retry_duration_s <= 0:
        return False
    enough_attempts = max_attempts == -1 or attempts >= max_attempts
    long_enough = max_retry_duration_s <= 0 or since_first_attempt_s >= max_retry_duration_s
    return enough_attempts and long_enough
