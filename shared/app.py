"""Composition root: builds the clients once per instance, lazily, and wires adapters into services."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

from shared import runtime
from shared.adapters.oidc_verifier import OidcVerifier
from shared.models.common import utcnow
from shared.ports import KeyStore, MetricsStore, SchedulerJobs, UsageStore
from shared.services.auth import Authenticator, RateLimiter
from shared.services.batchmode import Batchmode
from shared.services.engine import Engine
from shared.services.image_dispatch import ImageQueue
from shared.services.reports import Reports
from shared.services.status import ProgressCache
from shared.settings import Settings, get_settings


@dataclass(frozen=True)
class Platform:
    settings: Settings
    engine: Engine
    authenticator: Authenticator
    rate_limiter: RateLimiter
    keys: KeyStore
    progress: ProgressCache
    reports: Reports
    image_queue: ImageQueue
    usage: UsageStore
    metrics: MetricsStore
    scheduler: SchedulerJobs
    batchmode: Batchmode


def _local_signing_credentials(settings: Settings) -> object:
    """A throwaway service-account key for V4 signed URLs in local mode (AnonymousCredentials cannot sign)."""
    from google.oauth2 import service_account

    key_pem = (Path(settings.storage_signer_key_dir) / "signing-key.pem").read_text()
    return service_account.Credentials.from_service_account_info(
        {
            "type": "service_account",
            "project_id": settings.project_id,
            "private_key": key_pem,
            "client_email": f"storage-signer@{settings.project_id}.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


def _production_signing_credentials(settings: Settings) -> object:
    """Sign through the IAM Credentials API as the function's own service account (no key file)."""
    import google.auth
    from google.auth import impersonated_credentials

    source, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    target = getattr(source, "service_account_email", None) or settings.tasks_service_account
    return impersonated_credentials.Credentials(
        source_credentials=source,
        target_principal=target,
        target_scopes=["https://www.googleapis.com/auth/devstorage.read_only"],
    )


def _clock(offset_seconds: float) -> Callable[[], dt.datetime]:
    """The engine's clock: the true time, or (fault tests only, CLOCK_OFFSET_SECONDS) a clock that runs
    ahead or behind."""
    if not offset_seconds:
        return utcnow
    offset = dt.timedelta(seconds=offset_seconds)
    return lambda: utcnow() + offset


async def _build(settings: Settings) -> Platform:
    """Runs on the instance's event loop, so the async clients bind to it."""
    import grpc
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore, scheduler_v1, storage, tasks_v2  # type: ignore[attr-defined]
    from google.cloud.scheduler_v1.services.cloud_scheduler.transports import (
        CloudSchedulerGrpcAsyncIOTransport,
    )
    from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcAsyncIOTransport

    from shared.adapters.batchmode_store import FirestoreBatchmodeJobs, FirestoreCredits
    from shared.adapters.blob_store import GcsBlobStore
    from shared.adapters.catalog_store import FirestoreCatalogStore
    from shared.adapters.firestore_listen import DocumentListener
    from shared.adapters.firestore_store import FirestoreStore
    from shared.adapters.gemini import GeminiEmbeddingModel, GeminiTextModel, gemini_client, model_session
    from shared.adapters.gemini_batches import GeminiBatchJobs
    from shared.adapters.gemini_images import GeminiImageModel
    from shared.adapters.image_objects import GcsImageObjects
    from shared.adapters.metrics_store import FirestoreMetricsStore
    from shared.adapters.report_store import FirestoreReportStore
    from shared.adapters.scheduler_jobs import CloudSchedulerJobs
    from shared.adapters.streaming_blobs import GcsStreamingBlobs
    from shared.adapters.tasks_queue import CloudTasksQueue
    from shared.adapters.usage_store import FirestoreUsageStore
    from shared.adapters.vector_store import FirestoreVectorStore
    from shared.kinds.jsonl_input import INPUT_PORT
    from shared.kinds.registry import KINDS

    if settings.is_local:
        # The Firestore client finds its emulator only through this variable.
        os.environ["FIRESTORE_EMULATOR_HOST"] = settings.firestore_emulator_host
        db = firestore.AsyncClient(project=settings.project_id)
        storage_client = storage.Client(
            project=settings.project_id,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": settings.storage_emulator_host},
        )
        signing = _local_signing_credentials(settings)
        tasks_client = tasks_v2.CloudTasksAsyncClient(
            transport=CloudTasksGrpcAsyncIOTransport(
                channel=grpc.aio.insecure_channel(settings.tasks_emulator_host)
            )
        )
        genai_client = gemini_client(
            api_key=settings.gemini_api_key.get_secret_value(),
            base_url=settings.gemini_base_url,
            session=model_session(),
        )
        access_endpoint: str | None = settings.storage_emulator_host
        scheduler_client = scheduler_v1.CloudSchedulerAsyncClient(
            transport=CloudSchedulerGrpcAsyncIOTransport(
                channel=grpc.aio.insecure_channel(settings.scheduler_emulator_host)
            )
        )
    else:
        db = firestore.AsyncClient(project=settings.project_id)
        storage_client = storage.Client(project=settings.project_id)
        signing = _production_signing_credentials(settings)
        tasks_client = tasks_v2.CloudTasksAsyncClient()
        genai_client = gemini_client(
            api_key=settings.gemini_api_key.get_secret_value(), base_url=None, session=model_session()
        )
        access_endpoint = None
        scheduler_client = scheduler_v1.CloudSchedulerAsyncClient()
    listener = DocumentListener.connect(
        project=settings.project_id,
        emulator_host=settings.firestore_emulator_host if settings.is_local else None,
    )
    store = FirestoreStore(db, listener=listener)
    image_queue = ImageQueue(
        store=FirestoreCatalogStore(db),
        objects=GcsImageObjects(
            storage_client,
            bucket_name=settings.results_bucket,
            signing_credentials=signing,  # type: ignore[arg-type]
            api_access_endpoint=access_endpoint,
        ),
        settings=settings,
    )
    report_store = FirestoreReportStore(db)
    report_files = GcsStreamingBlobs(
        storage_client,
        bucket_name=settings.reports_bucket,
        signing_credentials=signing,  # type: ignore[arg-type]
        api_access_endpoint=access_endpoint,
    )
    metrics = FirestoreMetricsStore(db)
    queue_path = tasks_v2.CloudTasksAsyncClient.queue_path(
        settings.project_id, settings.region, settings.tasks_queue
    )
    tasks_queue = CloudTasksQueue(
        tasks_client,
        queue_path=queue_path,
        functions_base_url=settings.functions_base_url,
        dispatch_deadline=dt.timedelta(seconds=settings.batch_dispatch_deadline_seconds),
        queue_dispatch_deadlines={
            settings.reports_tasks_queue: dt.timedelta(seconds=settings.reports_dispatch_deadline_seconds)
        },
    )
    batchmode = Batchmode(
        credits=FirestoreCredits(db),
        jobs=FirestoreBatchmodeJobs(db),
        gemini=GeminiBatchJobs(genai_client),
        objects=GcsImageObjects(
            storage_client,
            bucket_name=settings.results_bucket,
            signing_credentials=signing,  # type: ignore[arg-type]
            api_access_endpoint=access_endpoint,
        ),
        webhooks=tasks_queue,
        trees=report_store,
        settings=settings,
    )
    engine = Engine(
        store=store,
        queue=tasks_queue,
        blobs=GcsBlobStore(
            storage_client,
            bucket_name=settings.results_bucket,
            signing_credentials=signing,  # type: ignore[arg-type]
            api_access_endpoint=access_endpoint,
        ),
        model=GeminiTextModel(genai_client),
        embedder=GeminiEmbeddingModel(genai_client),
        vectors=FirestoreVectorStore(db),
        settings=settings,
        kinds=KINDS,
        records=report_store,
        files=report_files,
        images=GeminiImageModel(genai_client),
        extras={
            "image_queue": image_queue,
            "batchmode": batchmode,
            # Batch inputs past one body (inputUri), in the engine's bucket under each tenant's prefix.
            INPUT_PORT: GcsStreamingBlobs(
                storage_client,
                bucket_name=settings.results_bucket,
                signing_credentials=signing,  # type: ignore[arg-type]
                api_access_endpoint=access_endpoint,
            ),
        },
        metrics=metrics,
        clock=_clock(settings.clock_offset_seconds),
    )
    image_queue.attach(engine)
    batchmode.attach(engine)
    authenticator = Authenticator(keys=store, cache_seconds=settings.api_key_cache_seconds)
    rate_limiter = RateLimiter(
        keys=store,
        limit_per_minute=settings.rate_limit_per_minute,
        sync_interval_s=settings.rate_limit_sync_seconds,
    )
    await asyncio.sleep(0)
    return Platform(
        settings=settings,
        engine=engine,
        authenticator=authenticator,
        rate_limiter=rate_limiter,
        keys=store,
        progress=ProgressCache(store, max_age_s=settings.batch_progress_cache_seconds),
        reports=Reports(engine=engine, store=report_store, files=report_files),
        image_queue=image_queue,
        usage=FirestoreUsageStore(db),
        metrics=metrics,
        scheduler=CloudSchedulerJobs(
            scheduler_client, parent=f"projects/{settings.project_id}/locations/{settings.region}"
        ),
        batchmode=batchmode,
    )


def platform(loop_name: str = runtime.API_LOOP) -> Platform:
    """The instance's wired platform for one of its loops, built on first use (lazy globals, as Cloud
    Functions recommends): async clients belong to the loop they were built on."""
    # Cached by the loop's name, however the call is spelled (`platform()`, `platform(API_LOOP)`,
    # `platform(loop_name=...)`): a cache keyed by the call's form held three entries in two slots, evicted
    # one and rebuilt it, from inside the API loop when `analytics` streamed, blocking that loop for good.
    return _platform_for(loop_name)


@cache
def _platform_for(loop_name: str) -> Platform:
    wired = runtime.run(_build(get_settings()), loop_name=loop_name)
    # The modules, schemas and clients built so far live as long as the instance: keep them out of the
    # collector's full passes, which otherwise pause every thread for up to 150 ms on a busy instance.
    gc.freeze()
    return wired


@lru_cache(maxsize=1)
def oidc_verifier() -> OidcVerifier:
    return OidcVerifier(certs_url=get_settings().oidc_certs_url or None)


# Settings are checked when an instance loads its function, so a bad value stops the start (with the setting's
# name) instead of failing every request.
get_settings()
