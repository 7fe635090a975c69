"""Clients of the Cloud Scheduler emulator: the official client over an insecure gRPC channel."""

from __future__ import annotations

import grpc
from google.cloud import scheduler_v1
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import CloudSchedulerGrpcTransport


def scheduler_client(address: str) -> scheduler_v1.CloudSchedulerClient:
    """The official client for the emulator at `host:port`; in Google Cloud, build it with no arguments."""
    return scheduler_v1.CloudSchedulerClient(
        transport=CloudSchedulerGrpcTransport(channel=grpc.insecure_channel(address))
    )
