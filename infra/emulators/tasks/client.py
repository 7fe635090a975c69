"""Clients of the Cloud Tasks emulator: the official client over an insecure gRPC channel."""

from __future__ import annotations

import grpc
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport


def tasks_client(address: str) -> tasks_v2.CloudTasksClient:
    """The official client for the emulator at `host:port`; in Google Cloud, build it with no arguments."""
    return tasks_v2.CloudTasksClient(
        transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(address))
    )
