"""The chaos run's history checker can fail: on a clean batch it finds nothing, and it finds a result recorded
twice, a usage event counted twice, a model call nobody recorded, and a lost result, written into the ground
truth behind the platform's back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from shared.emulator_config import EmulatorConfig
from tests.chaos import workloads
from tests.chaos.checker import Verdict, check
from tests.chaos.cloud import ChaosCloud, UploadWatch


@pytest.fixture
def cloud(local_cloud: EmulatorConfig) -> Iterator[ChaosCloud]:
    chaos = ChaosCloud()
    yield chaos
    chaos.gemini.close()


def _check(cloud: ChaosCloud, job: workloads.Job, tag: str, *, reruns_allowed: bool = False) -> Verdict:
    verdict = Verdict(scenario="test")
    with UploadWatch(cloud) as watch:
        return check(
            cloud,
            verdict=verdict,
            jobs=[job],
            tag=tag,
            uploads=watch,
            reruns_allowed=reruns_allowed,
            bound_s=60,
        )


def test_the_checker_passes_a_clean_batch_and_counts_what_was_tampered_with(
    cloud: ChaosCloud, api: httpx.Client, unique: str, firestore_db: Any
) -> None:
    tag = f"chk{unique}"
    job = workloads.generate(api, tag, 3)

    clean = _check(cloud, job, tag)

    assert clean.passed and (clean.items, clean.lost, clean.doubled) == (3, 0, 0), clean.problems
    # A model call nobody recorded.
    cloud.gemini.post(
        "/v1beta/models/gemini-2.5-flash:generateContent",
        headers={"x-goog-api-key": "test"},
        json={"contents": [{"parts": [{"text": f"{workloads.marker(tag, 2)} again"}]}]},
    ).raise_for_status()

    unrecorded = _check(cloud, job, tag)

    assert unrecorded.doubled == 1 and not unrecorded.passed
    assert unrecorded.problems == [f"generate {job.batch_id}: item 2: 2 model calls answered, 1 recorded"]
    assert _check(cloud, job, tag, reruns_allowed=True).reruns == 1

    # A page and a usage record written a second time.
    pages = list(firestore_db.collection("batches").document(job.batch_id).collection("pages").stream())
    usage_query = firestore_db.collection("usage_events").where(
        filter=FieldFilter("job_id", "==", job.batch_id)
    )
    firestore_db.collection("batches").document(job.batch_id).collection("pages").add(pages[0].to_dict())
    firestore_db.collection("usage_events").add(next(iter(usage_query.stream())).to_dict())

    tampered = _check(cloud, job, tag, reruns_allowed=True)

    assert tampered.doubled >= 2 and tampered.lost == 0, tampered.problems
    assert any("recorded 2 times" in problem for problem in tampered.problems)

    for page in firestore_db.collection("batches").document(job.batch_id).collection("pages").stream():
        page.reference.delete()

    emptied = _check(cloud, job, tag, reruns_allowed=True)

    assert emptied.lost == 3, emptied.problems
