"""Pricing and the reading of Google's RetryInfo (pure)."""

from __future__ import annotations

import pytest

from shared.adapters.gemini import retry_delay_seconds
from shared.services.pricing import estimate_cost_usd


def test_retry_delay_is_read_from_retry_info() -> None:
    body = {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure"},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"},
            ],
        }
    }
    assert retry_delay_seconds(body) == 1.5


@pytest.mark.parametrize(
    "body", [None, "text", {"error": {"details": []}}, {"error": {"details": [{"retryDelay": "x"}]}}]
)
def test_no_retry_delay_without_retry_info(body: object) -> None:
    assert retry_delay_seconds(body) is None


def test_cost_uses_the_price_table_and_discounts_cached_tokens() -> None:
    plain = estimate_cost_usd(model="gemini-2.5-flash", input_tokens=1_000_000, output_tokens=0)
    cached = estimate_cost_usd(
        model="gemini-2.5-flash", input_tokens=1_000_000, output_tokens=0, cached_tokens=1_000_000
    )
    assert plain == pytest.approx(0.30)
    assert cached == pytest.approx(0.075)
    assert estimate_cost_usd(
        model="models/gemini-2.5-pro", input_tokens=0, output_tokens=1_000_000
    ) == pytest.approx(10.0)
