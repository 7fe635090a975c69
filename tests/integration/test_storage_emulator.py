"""Conformance of the local Cloud Storage (fake-gcs-server) through google-cloud-storage."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Iterator

import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from shared.app import _local_signing_credentials
from shared.emulator_config import EmulatorConfig
from shared.settings import get_settings


@pytest.fixture
def bucket(local_cloud: EmulatorConfig, unique: str) -> Iterator[storage.Bucket]:
    client = storage.Client(
        project=local_cloud.project_id,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": local_cloud.emulators.storage.url},
    )
    created = client.create_bucket(f"conformance-{unique}")
    yield created
    created.delete(force=True)


def test_if_generation_match_zero_refuses_an_existing_object(bucket: storage.Bucket) -> None:
    blob = bucket.blob("once.txt")
    blob.upload_from_string(b"first", if_generation_match=0)
    with pytest.raises(gexc.PreconditionFailed):
        bucket.blob("once.txt").upload_from_string(b"second", if_generation_match=0)
    assert bucket.blob("once.txt").download_as_bytes() == b"first"


def test_generation_precondition_detects_a_concurrent_overwrite(bucket: storage.Bucket) -> None:
    blob = bucket.blob("cas.txt")
    blob.upload_from_string(b"v1")
    blob.reload()
    generation = blob.generation
    bucket.blob("cas.txt").upload_from_string(b"v2")
    with pytest.raises(gexc.PreconditionFailed):
        bucket.blob("cas.txt").upload_from_string(b"v3", if_generation_match=generation)


def test_resumable_upload_of_50_mb(bucket: storage.Bucket) -> None:
    data = os.urandom(50 * 1024 * 1024)
    blob = bucket.blob("big.bin", chunk_size=8 * 1024 * 1024)  # a chunk size makes the upload resumable
    blob.upload_from_string(data, content_type="application/octet-stream")
    blob.reload()
    assert blob.size == len(data)
    downloaded = bucket.blob("big.bin").download_as_bytes()
    assert hashlib.sha256(downloaded).digest() == hashlib.sha256(data).digest()


def test_v4_signed_urls_for_download_and_upload(local_cloud: EmulatorConfig, bucket: storage.Bucket) -> None:
    credentials = _local_signing_credentials(get_settings())
    endpoint = local_cloud.emulators.storage.url
    bucket.blob("report.csv").upload_from_string(b"a,b\n1,2\n", content_type="text/csv")

    get_url = bucket.blob("report.csv").generate_signed_url(
        version="v4", expiration=dt.timedelta(minutes=5), method="GET",
        credentials=credentials, api_access_endpoint=endpoint,
    )  # fmt: skip
    assert "X-Goog-Signature=" in get_url
    response = requests.get(get_url, timeout=10)
    assert response.status_code == 200
    assert response.content == b"a,b\n1,2\n"

    put_url = bucket.blob("upload.bin").generate_signed_url(
        version="v4", expiration=dt.timedelta(minutes=5), method="PUT",
        content_type="application/octet-stream", credentials=credentials, api_access_endpoint=endpoint,
    )  # fmt: skip
    upload = requests.put(
        put_url, data=b"\x00\x01payload", headers={"Content-Type": "application/octet-stream"}, timeout=10
    )
    assert upload.status_code in (200, 201)
    assert bucket.blob("upload.bin").download_as_bytes() == b"\x00\x01payload"
