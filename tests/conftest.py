"""Test fixtures: the local cloud is started once per test session (the role testcontainers would play where
Docker exists) unless it already runs, and stopped at the end only if this session started it."""

from __future__ import annotations

import datetime as dt
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from shared.emulator_config import EmulatorConfig, load_emulator_config

T = TypeVar("T")


@pytest.fixture(scope="session")
def emulator_config() -> EmulatorConfig:
    return load_emulator_config()


@pytest.fixture(scope="session")
def local_cloud(emulator_config: EmulatorConfig) -> Iterator[EmulatorConfig]:
    from infra import localcloud

    started = localcloud.start(emulator_config)
    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator_config.emulators.firestore.address
    os.environ["STORAGE_EMULATOR_HOST"] = emulator_config.emulators.storage.url
    try:
        yield emulator_config
    finally:
        if started:
            localcloud.stop()


@pytest.fixture(scope="session")
def firestore_db(local_cloud: EmulatorConfig) -> Iterator[Any]:
    """The official Firestore client on the local emulator, for tests that read documents directly."""
    from google.cloud import firestore

    client = firestore.Client(project=local_cloud.project_id)
    yield client
    client.close()


@pytest.fixture
def gemini_control(local_cloud: EmulatorConfig) -> Iterator[Any]:
    """The Gemini emulator's control endpoint; its configuration is reset around the test."""
    import httpx

    with httpx.Client(base_url=local_cloud.emulators.gemini.url, timeout=10) as client:
        client.post("/emulator/reset").raise_for_status()
        yield client
        client.post("/emulator/reset").raise_for_status()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for resource names, so tests never collide."""
    return uuid.uuid4().hex[:10]


# Metric tests write whole days of the shared marketplace collections and read them back by day. Each
# claims a span of days no other test has, in any process, while the local cloud lives: the day it is
# handed, the 15 days before and the 12 after (a weekly run's week before, a 14-day backfill of weeks,
# the neighbouring days a daily run looks at).
PAST_DAYS_FROM = dt.date(2001, 1, 1)
DAY_SPAN = 28
DAY_SPANS = (dt.date(2021, 1, 1) - PAST_DAYS_FROM).days // DAY_SPAN


def claim_past_day(db: Any) -> dt.date:
    """A day of 2001-2020 whose span no other test has claimed on this local cloud (`db`, the Firestore
    client): the claim is a document created once, so two tests never get the same span."""
    from google.api_core.exceptions import AlreadyExists

    for span in random.sample(range(DAY_SPANS), DAY_SPANS):
        try:
            db.collection("test_claimed_days").document(str(span)).create({"span": span})
        except AlreadyExists:
            continue
        return PAST_DAYS_FROM + dt.timedelta(days=span * DAY_SPAN + 15)
    raise AssertionError(
        "every span of past days is claimed by earlier test runs: `make down`, then test again"
    )


def wait_for(
    predicate: Callable[[], T | None], *, timeout: float, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `predicate` until it returns a truthy value, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)  # polling interval of a bounded wait, not a wait for work
