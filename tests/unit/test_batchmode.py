"""Batch Mode's pure parts: prices, states, the webhook URL check and signature."""

from __future__ import annotations

import asyncio
import hashlib
import hmac

import pytest

from shared.errors import InvalidRequest
from shared.models.batchmode import JobState
from shared.services.batchmode import check_webhook_url, sign, webhook_secret
from shared.services.pricing import BATCH_CREDITS, INTERACTIVE_CREDITS, credits_of, row_price_units
from shared.settings import Settings


def test_batch_prices_are_half_the_interactive_ones() -> None:
    assert INTERACTIVE_CREDITS == {"character": 4, "food": 4, "product": 5, "text": 4}
    assert BATCH_CREDITS == {"character": 2, "food": 2, "product": 2.5, "text": 2}
    assert row_price_units(job_type="product", batch_mode=True) == 250
    assert credits_of(3 * row_price_units(job_type="product", batch_mode=True)) == 7.5


def test_each_state_has_the_seeds_status() -> None:
    assert [state.status for state in JobState] == [
        "pending", "processing", "completed", "failed", "cancelled", "failed"
    ]  # fmt: skip
    assert [state.is_final for state in JobState] == [False, False, True, True, True, True]


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.215.14/hook",  # not https
        "https://127.0.0.1/hook",  # loopback
        "https://10.1.2.3/hook",  # private
        "https://169.254.169.254/computeMetadata/v1/",  # link-local (metadata server)
        "https://[::1]/hook",
        "https://user:pw@93.184.215.14/hook",
        "ftp://93.184.215.14/",
    ],
)
def test_webhook_urls_that_could_reach_the_platform_are_refused_outside_local_mode(url: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        asyncio.run(check_webhook_url(url, local=False))
    assert refused.value.details[0]["field"] == "notify.url"


def test_public_https_webhooks_pass_and_local_mode_takes_loopback() -> None:
    assert asyncio.run(check_webhook_url("https://93.184.215.14/hook", local=False))
    assert asyncio.run(check_webhook_url("http://127.0.0.1:8080/hook", local=True))


def test_the_signature_is_an_hmac_of_the_time_and_the_body_with_the_tenants_secret() -> None:
    settings = Settings(batchmode_webhook_key="k" * 40)
    secret = webhook_secret(settings=settings, tenant="acme")

    header = sign(secret=secret, timestamp=1700000000, body=b'{"id": "x"}')

    assert secret != webhook_secret(settings=settings, tenant="other")
    expected = hmac.new(secret.encode(), b'1700000000.{"id": "x"}', hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
