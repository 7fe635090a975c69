"""The token bucket Cloud Tasks paces each queue's dispatches with (`RateLimits`)."""

from __future__ import annotations

import math

# Google picks max_burst_size from the rate; queues created with the defaults (500/s) report 100.
MAX_DERIVED_BURST = 100


def burst_size(max_dispatches_per_second: float) -> int:
    """The output-only `max_burst_size` for a rate: one second's worth of tokens, at most 100."""
    return max(1, min(MAX_DERIVED_BURST, math.ceil(max_dispatches_per_second)))


class TokenBucket:
    """Holds up to `burst` tokens, refilled continuously at `rate` per second; a dispatch takes one."""

    def __init__(self, *, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._refilled_at = now

    def configure(self, *, rate: float, burst: int, now: float) -> None:
        self._refill(now)
        self.rate, self.burst = rate, burst
        self._tokens = min(self._tokens, float(burst))

    def take(self, now: float) -> bool:
        self._refill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def seconds_until_token(self, now: float) -> float:
        self._refill(now)
        return max(0.0, (1 - self._tokens) / self.rate)

    def _refill(self, now: float) -> None:
        self._tokens = min(float(self.burst), self._tokens + (now - self._refilled_at) * self.rate)
        self._refilled_at = now
