"""Estimated cost of a model call from a price table (USD per million tokens, interactive tier).

Estimates, not invoices: prices follow the published Gemini API list prices for paid tiers with prompts up to
200k tokens (source: the Gemini API pricing page, ai.google.dev/gemini-api/docs/pricing; the table dates from
2026-11-22, when it was written, and has not been checked against the page since: the build machines have no
internet); cached input tokens are billed at a quarter of the input price. Unknown models use the default
model's price. Batch Mode is half of these (BATCH_MODE_FACTOR).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    input_per_million: float
    output_per_million: float


PRICES: dict[str, Price] = {
    "gemini-2.5-pro": Price(1.25, 10.00),
    "gemini-2.5-flash": Price(0.30, 2.50),
    "gemini-2.5-flash-lite": Price(0.10, 0.40),
    "gemini-2.0-flash": Price(0.10, 0.40),
    "gemini-2.0-flash-lite": Price(0.075, 0.30),
    "gemini-2.5-flash-image": Price(0.30, 30.00),
    "gemini-embedding-001": Price(0.15, 0.0),
    "text-embedding-004": Price(0.0, 0.0),
}
DEFAULT_PRICE = PRICES["gemini-2.5-flash"]
CACHED_INPUT_FACTOR = 0.25


def estimate_cost_usd(*, model: str, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
    price = PRICES.get(model.removeprefix("models/"), DEFAULT_PRICE)
    uncached = max(input_tokens - cached_tokens, 0)
    cost = (
        uncached * price.input_per_million
        + cached_tokens * price.input_per_million * CACHED_INPUT_FACTOR
        + output_tokens * price.output_per_million
    ) / 1_000_000
    return round(cost, 10)


BATCH_MODE_FACTOR = 0.5


def cache_savings_usd(*, model: str, cached_tokens: int) -> float:
    """What cached input tokens saved against the same tokens billed at the full input price."""
    price = PRICES.get(model.removeprefix("models/"), DEFAULT_PRICE)
    return cached_tokens * price.input_per_million * (1 - CACHED_INPUT_FACTOR) / 1_000_000


def batch_mode_savings_usd(*, batch_mode_cost_usd: float) -> float:
    """What calls billed at the Batch Mode price saved against the interactive price."""
    return batch_mode_cost_usd * (1 / BATCH_MODE_FACTOR - 1)


def input_price_per_million(model: str) -> float:
    return PRICES.get(model.removeprefix("models/"), DEFAULT_PRICE).input_per_million


# --- credits: what a tenant pays for Gemini Batch Mode jobs (`POST /batch/create`), per row ---------------
# The seed's price list: one image of each type costs these credits when generated interactively, and half in
# Batch Mode. Amounts are kept in hundredths of a credit (CREDIT_UNITS) so that halves and grants add up
# exactly in the ledger.
CREDIT_UNITS = 100
INTERACTIVE_CREDITS: dict[str, float] = {"character": 4, "food": 4, "product": 5, "text": 4}
BATCH_CREDITS: dict[str, float] = {
    job_type: credits * BATCH_MODE_FACTOR for job_type, credits in INTERACTIVE_CREDITS.items()
}


def row_price_units(*, job_type: str, batch_mode: bool) -> int:
    """Hundredths of a credit for one row of `job_type`, at the Batch Mode or the interactive price."""
    table = BATCH_CREDITS if batch_mode else INTERACTIVE_CREDITS
    return round(table[job_type] * CREDIT_UNITS)


def credits_of(units: int) -> float:
    """Hundredths of a credit as credits (2.5, 20.0)."""
    return units / CREDIT_UNITS
