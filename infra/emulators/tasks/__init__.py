"""Cloud Tasks v2 emulator: the gRPC API of the official client, with Google's documented dispatch semantics.

Run it with `python -m infra.emulators.tasks [--port N] [--dedupe-window-seconds S]` (host and default port
from emulator.json). Queues and tasks are held in memory only: restarting the emulator loses them (the
local cloud re-applies the platform's queues from `infra/resources.py`).

The recommended client, the official one over an insecure channel (`infra.emulators.tasks.client`):

    import grpc
    from google.cloud import tasks_v2
    from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

    client = tasks_v2.CloudTasksClient(
        transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel("127.0.0.1:9182"))
    )

`client_options={"api_endpoint": ...}` with `AnonymousCredentials()` alone does NOT work: the client then
opens a TLS channel, which the emulator does not speak. The async client takes
`CloudTasksGrpcAsyncIOTransport(channel=grpc.aio.insecure_channel(...))`.
"""
