"""Asynchronous reports through the gateway, as a client would: queue (JSON, multipart, upload session),
status, download by token, the cache, limits, and at most two jobs processing at once."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import (
    storage,  # type: ignore[attr-defined]
    tasks_v2,
)
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

from infra.localcloud import LOG_DIR
from infra.report_data import invoices, write_dataset
from shared.emulator_config import EmulatorConfig
from shared.settings import get_settings
from tests.conftest import wait_for
from tests.e2e.conftest import new_api_key
from tests.e2e.delivery import Gateway, call_internal, free_port, sweep_until

FINAL = {"Completed", "Failed"}


@pytest.fixture(scope="module")
def reports_bucket(local_cloud: EmulatorConfig) -> Iterator[Any]:
    client = storage.Client(
        project=local_cloud.project_id,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": local_cloud.emulators.storage.url},
    )
    yield client.bucket(get_settings().reports_bucket)


def dataset(records: list[dict[str, Any]]) -> str:
    return json.dumps(records, ensure_ascii=False)


def sample(count: int, *, seed: int = 1, invalid_every: int = 0) -> list[dict[str, Any]]:
    stream = invoices(seed=seed, invalid_every=invalid_every)
    return [next(stream) for _ in range(count)]


def queue_json(api: httpx.Client, data: str, report_type: str = "FacturacionMasiva") -> str:
    response = api.post(
        "/reports/queue-json",
        json={
            "reportType": report_type,
            "userName": "ana@empresa.com",
            "jsonData": data,
            "isLargeDataset": False,
        },
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "Queued"
    job_id: str = body["jobId"]
    return job_id


def queue_upload(api: httpx.Client, path: Any, report_type: str = "FacturacionMasiva") -> str:
    """Queue a job over a file sent through an upload session (straight to Cloud Storage)."""
    opened = api.post(
        "/reports/uploads",
        json={"fileName": path.name, "sizeBytes": path.stat().st_size, "reportType": report_type},
    )
    assert opened.status_code == 201, opened.text
    session = opened.json()
    with path.open("rb") as data:
        put = httpx.put(session["uploadUrl"], content=data, timeout=300)
    assert put.status_code in (200, 201), put.text
    queued = api.post(
        "/reports/queue",
        json={"reportType": report_type, "userName": "ana@empresa.com", "uploadId": session["uploadId"]},
    )
    assert queued.status_code == 202, queued.text
    job_id: str = queued.json()["jobId"]
    return job_id


def status(api: httpx.Client, job_id: str) -> dict[str, Any]:
    response = api.get(f"/reports/status/{job_id}")
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    return payload


def wait_final(api: httpx.Client, job_id: str, *, timeout: float = 120) -> dict[str, Any]:
    def _final() -> dict[str, Any] | None:
        current = status(api, job_id)
        return current if current["status"] in FINAL else None

    return wait_for(_final, timeout=timeout, interval=0.1, what=f"report {job_id}")


def download(gateway: httpx.Client, url: str) -> zipfile.ZipFile:
    redirect = gateway.get(url, follow_redirects=False)
    assert redirect.status_code == 302, redirect.text
    signed = httpx.get(redirect.headers["Location"], timeout=60)
    assert signed.status_code == 200
    return zipfile.ZipFile(io.BytesIO(signed.content))


def expected_totals(records: list[dict[str, Any]]) -> tuple[int, float, float]:
    valid = [r for r in records if r["items"]]
    subtotal = iva = 0.0
    for record in valid:
        sub = sum(i["cantidad"] * i["precio_unitario"] for i in record["items"])
        tax = sum(i["cantidad"] * i["precio_unitario"] * i["iva"] for i in record["items"])
        subtotal += round(sub, 2)
        iva += round(tax, 2)
    return len(valid), round(subtotal, 2), round(iva, 2)


def test_queue_json_reports_invalid_records_and_keeps_totals_right(api: httpx.Client) -> None:
    records = sample(300, invalid_every=50)
    records[10] = {"numero": "X-1", "fecha": "2024-13-45", "cliente": {}, "items": []}

    job_id = queue_json(api, dataset(records))
    final = wait_final(api, job_id)

    assert final["status"] == "Completed", final
    assert final["fileName"] == "reporte_facturacion.zip" and final["fileSizeBytes"] > 0
    metrics = final["performanceMetrics"]
    assert metrics["recordsProcessed"] == 300 and metrics["processingTimeMs"] >= 0
    assert metrics["memoryUsageMB"] >= 0 and final["completedAt"] and final["userName"] == "ana@empresa.com"
    archive = download(api, final["downloadUrl"])
    assert sorted(archive.namelist()) == ["errores.csv", "facturas.csv", "facturas.xlsx", "resumen.json"]
    errors = list(csv.DictReader(io.TextIOWrapper(archive.open("errores.csv"), encoding="utf-8")))
    invalid_positions = [i for i, r in enumerate(records) if not r["items"]]
    assert [int(e["posicion"]) for e in errors] == invalid_positions
    assert errors[0]["numero"] == "X-1" and "fecha" in errors[0]["motivo"]
    summary = json.loads(archive.read("resumen.json"))
    valid, subtotal, iva = expected_totals(records)
    assert summary["facturasValidas"] == valid and summary["facturasInvalidas"] == len(invalid_positions)
    assert summary["totales"]["subtotal"] == pytest.approx(subtotal, abs=0.05)
    assert summary["totales"]["iva"] == pytest.approx(iva, abs=0.05)
    rows = list(csv.reader(io.TextIOWrapper(archive.open("facturas.csv"), encoding="utf-8")))
    assert len(rows) == valid + 1 and rows[0][0] == "numero"
    assert archive.read("facturas.xlsx")[:2] == b"PK"


def test_queue_multipart_streams_the_file_and_status_is_the_tenants_own(
    api: httpx.Client, other_api: httpx.Client, reports_bucket: Any
) -> None:
    records = sample(50, seed=3)
    response = api.post(
        "/reports/queue-multipart",
        data={"reportType": "VentasPorCiudad", "userName": "luis@empresa.com", "isLargeDataset": "true"},
        files={"dataFile": ("datos.json", json.dumps({"facturas": records}).encode(), "application/json")},
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["jobId"]

    final = wait_final(api, job_id)

    assert final["status"] == "Completed" and final["reportType"] == "VentasPorCiudad"
    archive = download(api, final["downloadUrl"])
    assert "ventas_por_ciudad.csv" in archive.namelist()
    assert json.loads(archive.read("resumen.json"))["facturasValidas"] == 50
    assert other_api.get(f"/reports/status/{job_id}").status_code == 404
    assert api.get("/reports/status/not-a-job").status_code == 404


def test_malformed_json_fails_the_job_with_its_byte_offset(api: httpx.Client, reports_bucket: Any) -> None:
    good = dataset(sample(20))
    broken = good[:500] + "}}" + good[500:]

    job_id = queue_json(api, broken)
    final = wait_final(api, job_id)

    assert final["status"] == "Failed"
    assert "byte offset" in final["message"], final["message"]
    offset = int(final["message"].split("byte offset ")[1].split(":")[0])
    assert 490 <= offset <= 503
    assert final["downloadUrl"] is None
    assert not [blob.name for blob in reports_bucket.list_blobs(prefix="reports/") if job_id in blob.name]


def test_a_body_over_the_limit_is_refused_before_anything_is_stored(
    api: httpx.Client, reports_bucket: Any
) -> None:
    tenant_prefix = "inputs/"
    before = {blob.name for blob in reports_bucket.list_blobs(prefix=tenant_prefix)}
    big = b"x" * (get_settings().reports_max_request_bytes + 1)

    response = api.post("/reports/queue-json", content=big, headers={"Content-Type": "application/json"})

    assert response.status_code == 413
    assert "upload session" in response.json()["error"]["message"]
    assert {blob.name for blob in reports_bucket.list_blobs(prefix=tenant_prefix)} == before
    assert api.get("/reports/active-jobs").json() == {"jobs": []}


def test_a_body_sent_without_a_length_is_cut_off_at_the_limit_before_anything_is_stored(
    api: httpx.Client, reports_bucket: Any
) -> None:
    before = {blob.name for blob in reports_bucket.list_blobs(prefix="inputs/")}
    limit = get_settings().reports_max_request_bytes
    boundary = "cut-off-boundary"
    form = {"reportType": "FacturacionMasiva", "userName": "ana", "isLargeDataset": "true"}
    fields = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in form.items()
    )
    head = (
        f'{fields}--{boundary}\r\nContent-Disposition: form-data; name="dataFile"; filename="datos.json"\r\n'
        "Content-Type: application/json\r\n\r\n["
    ).encode()

    def chunked() -> Iterator[bytes]:  # an iterator: httpx sends it chunked, with no Content-Length
        yield head
        for _ in range(limit // (1024 * 1024) + 2):
            yield b" " * (1024 * 1024)
        yield f"]\r\n--{boundary}--\r\n".encode()

    response = api.post(
        "/reports/queue-multipart",
        content=chunked(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )

    assert response.status_code == 413
    assert "upload session" in response.json()["error"]["message"]
    assert {blob.name for blob in reports_bucket.list_blobs(prefix="inputs/")} == before
    assert api.get("/reports/active-jobs").json() == {"jobs": []}


@pytest.mark.timeout(420)  # its own waits are longer than the suite's 180 s
def test_an_upload_session_takes_a_100_mb_file_straight_to_storage(api: httpx.Client, tmp_path: Any) -> None:
    path = tmp_path / "facturas.json"
    with path.open("wb") as out:
        count = write_dataset(out, size_bytes=100 * 1024 * 1024, invalid_every=1000)
    size = path.stat().st_size
    opened = api.post(
        "/reports/uploads",
        json={"fileName": "facturas.json", "sizeBytes": size, "reportType": "VentasPorCiudad"},
    )
    assert opened.status_code == 201, opened.text
    session = opened.json()

    with path.open("rb") as data:  # straight to Cloud Storage: the function never sees the bytes
        put = httpx.put(session["uploadUrl"], content=data, timeout=300)
    assert put.status_code in (200, 201), put.text
    queued = api.post(
        "/reports/queue",
        json={
            "reportType": "VentasPorCiudad",
            "userName": "ana@empresa.com",
            "uploadId": session["uploadId"],
        },
    )
    assert queued.status_code == 202, queued.text
    again = api.post(
        "/reports/queue",
        json={
            "reportType": "VentasPorCiudad",
            "userName": "ana@empresa.com",
            "uploadId": session["uploadId"],
        },
    )
    assert again.status_code == 202 and again.json()["jobId"] == queued.json()["jobId"]
    final = wait_final(api, queued.json()["jobId"], timeout=300)

    assert final["status"] == "Completed", final
    assert final["performanceMetrics"]["recordsProcessed"] == count
    assert final["recordsInvalid"] == count // 1000


def test_a_file_bigger_than_announced_is_refused_and_not_queued(api: httpx.Client) -> None:
    opened = api.post(
        "/reports/uploads", json={"fileName": "f.json", "sizeBytes": 100, "reportType": "FacturacionMasiva"}
    ).json()
    httpx.put(opened["uploadUrl"], content=b"[" + b" " * 300 + b"]", timeout=30)

    queued = api.post(
        "/reports/queue",
        json={"reportType": "FacturacionMasiva", "userName": "a", "uploadId": opened["uploadId"]},
    )

    assert queued.status_code == 413
    assert api.get("/reports/active-jobs").json() == {"jobs": []}
    too_big = api.post(
        "/reports/uploads",
        json={"fileName": "f.json", "sizeBytes": 10**12, "reportType": "FacturacionMasiva"},
    )
    assert too_big.status_code == 413


def test_the_same_input_is_served_from_the_cache(api: httpx.Client, reports_bucket: Any) -> None:
    data = dataset(sample(40, seed=9))
    first_id = queue_json(api, data)
    first = wait_final(api, first_id)

    second = wait_final(api, queue_json(api, data))

    assert first["cacheHit"] is False and second["cacheHit"] is True
    assert second["fileSizeBytes"] == first["fileSizeBytes"]
    assert second["completedAt"] > first["completedAt"]
    # The hit has a copy of its own: the first job's report may be cleaned up before the second's.
    for blob in reports_bucket.list_blobs(prefix="reports/"):
        if first_id in blob.name:
            blob.delete()
    assert "facturas.xlsx" in download(api, second["downloadUrl"]).namelist()
    stats = api.get("/reports/cache-stats").json()
    assert stats["hits"] == 1 and stats["misses"] == 1 and stats["hitRate"] == 0.5
    assert stats["entries"] == 1 and stats["bytes"] == first["fileSizeBytes"]


def test_tokens_expire_are_hashed_and_guessing_is_limited(
    api: httpx.Client, gateway_url: str, firestore_db: Any, unique: str
) -> None:
    final = wait_final(api, queue_json(api, dataset(sample(5))))
    token = final["downloadUrl"].rsplit("/", 1)[1]
    assert len(token) >= 22  # at least 128 bits, url-safe base64
    stored = firestore_db.collection("report_tokens").document(hashlib.sha256(token.encode()).hexdigest())
    assert stored.get().exists and not firestore_db.collection("report_tokens").document(token).get().exists

    # A loopback address of this test's own (all of 127/8 is this machine), so no other test's guesses count.
    digest = hashlib.sha256(unique.encode()).digest()
    address = f"127.{1 + digest[0] % 254}.{digest[1]}.{1 + digest[2] % 254}"
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(base_url=gateway_url, transport=transport) as anyone:
        assert anyone.get(f"/reports/download/{token}").status_code == 302
        stored.update({"expire_at": stored.get().get("created_at")})
        assert anyone.get(f"/reports/download/{token}").status_code == 404
        # Guesses that each claim another address in X-Forwarded-For are still counted against the
        # connection's own: the gateway, as Google's front end, appends it, and only that entry is trusted.
        limit = get_settings().reports_token_misses_per_minute
        codes = []
        for n in range(2 * limit + 2):  # a minute may turn (and the count restart) during the loop
            spoofed = {"X-Forwarded-For": f"203.0.113.{n % 250}"}
            codes.append(anyone.get(f"/reports/download/guess{n:040d}", headers=spoofed).status_code)
            if codes[-1] == 429:
                break
    assert codes[-1] == 429 and set(codes[:-1]) == {404} and len(codes) >= limit


@pytest.mark.timeout(420)  # its own waits are longer than the suite's 180 s
def test_at_most_two_jobs_process_at_once(
    api: httpx.Client, local_cloud: EmulatorConfig, tmp_path: Any
) -> None:
    # The three are queued while the reports queue is paused, so all three wait when dispatch starts (a report
    # is fast: otherwise the first could end before the third is queued). Each reads 24 MB, about a second or
    # more, so that the polls below see two processing while the third waits.
    paths = [tmp_path / f"facturas-{seed}.json" for seed in (11, 12, 13)]
    for seed, path in zip((11, 12, 13), paths, strict=True):
        with path.open("wb") as out:
            write_dataset(out, size_bytes=24 * 1024 * 1024, seed=seed)
    settings = get_settings()
    tasks = tasks_v2.CloudTasksClient(
        transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(local_cloud.emulators.tasks.address))
    )
    queue = tasks.queue_path(settings.project_id, settings.region, settings.reports_tasks_queue)
    tasks.pause_queue(name=queue)
    try:
        jobs = [queue_upload(api, path) for path in paths]
    finally:
        tasks.resume_queue(name=queue)
    # Three status reads are not one snapshot: a job read `Processing` may end before the next job is read.
    # A job's state only moves forward, so a state read both before and after an instant held at that
    # instant: each poll reads the three jobs twice, and keeps the states the two passes agree on (the
    # instant between the passes); the others are `moving`.
    seen: list[list[str]] = []

    def _all_final() -> bool:
        before = [status(api, job)["status"] for job in jobs]
        after = [status(api, job)["status"] for job in jobs]
        seen.append(
            [first if first == second else "moving" for first, second in zip(before, after, strict=True)]
        )
        return all(state in FINAL for state in after)

    wait_for(_all_final, timeout=240, interval=0.05, what="three reports")

    most = max(states.count("Processing") for states in seen)
    assert most == 2, seen
    assert any(s.count("Processing") == 2 and "Queued" in s for s in seen), seen
    assert [status(api, job)["status"] for job in jobs] == ["Completed"] * 3
    # The ground truth: the Tasks emulator's log of the three jobs' deliveries, when each was in flight.
    flights = wait_for(lambda: _flights(jobs), timeout=30, what="the three jobs' deliveries logged")
    assert _most_at_once(flights) == 2, flights


def _flights(jobs: list[str]) -> list[tuple[float, float]] | None:
    """(start, end) of every delivery of the jobs' tasks, once each job has a successful one logged."""
    lines = (LOG_DIR / "tasks.log").read_text(encoding="utf-8", errors="replace").splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{") and '"ended_at"' in line]
    ours = [
        record
        for record in records
        if record["message"] == "delivery" and any(record["task"].startswith(f"{job}-") for job in jobs)
    ]
    if not all(any(r["status"] == 200 and r["task"].startswith(f"{job}-") for r in ours) for job in jobs):
        return None
    return [(r["ended_at"] - r["latency_ms"] / 1000, r["ended_at"]) for r in ours]


def _most_at_once(flights: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in flights] + [(end, -1) for _, end in flights])
    most = current = 0
    for _, change in events:  # an end sorts before a start at the same instant
        current += change
        most = max(most, current)
    return most


@pytest.mark.timeout(420)  # its own waits are longer than the suite's 180 s
def test_a_job_whose_worker_dies_is_taken_again_and_reported_once(
    own_queue: str, unique: str, tmp_path: Any
) -> None:
    gateway = Gateway(port=free_port(), queue=own_queue, lease_seconds=2)
    gateway.env["REPORTS_TASKS_QUEUE"] = own_queue
    gateway.start()
    api = httpx.Client(
        base_url=gateway.url, headers={"Authorization": f"Bearer {new_api_key(f'kill-{unique}')}"}, timeout=60
    )
    try:
        # Large enough to read for a few seconds: progress shows first after a second, and the kill must
        # come while the job still reads (a 12 MB job now ends within that second).
        path = tmp_path / "facturas.json"
        with path.open("wb") as out:
            count = write_dataset(out, size_bytes=64 * 1024 * 1024, seed=5)
        job_id = queue_upload(api, path)

        def _reading() -> bool:
            current = status(api, job_id)
            return current["status"] == "Processing" and (current["progress"] or {}).get("recordsRead", 0) > 0

        wait_for(_reading, timeout=60, what="the job to be reading")
        gateway.kill()
        gateway.start()
        # Once the dead worker's lease has expired, the sweeper hands the job out again.
        sweep_until(gateway.url, lambda: status(api, job_id)["status"] in FINAL)
        final = wait_final(api, job_id, timeout=180)

        assert final["status"] == "Completed", final
        assert final["performanceMetrics"]["recordsProcessed"] == count
        late = call_internal(gateway.url, "batch_worker", {"batch_id": job_id, "chunk": 0, "segment": 0})
        assert late.status_code == 200 and late.json()["outcome"] in ("batch completed", "chunk already done")
        again = status(api, job_id)
        assert again["performanceMetrics"] == final["performanceMetrics"], "one report, recorded once"
        archive = download(api, again["downloadUrl"])
        assert json.loads(archive.read("resumen.json"))["registros"] == count
    finally:
        api.close()
        gateway.kill()


def test_a_report_job_cannot_be_submitted_as_a_batch(api: httpx.Client) -> None:
    body = {
        "reportType": "FacturacionMasiva",
        "userName": "x",
        "inputObject": "inputs/someone-else/abc.json",
        "inputGeneration": 1,
        "inputBytes": 10,
        "cacheKey": "k",
    }

    response = api.post("/batch/report", json=body)

    assert response.status_code == 404
    assert api.get("/reports/active-jobs").json() == {"jobs": []}


def test_the_clean_up_deletes_old_jobs_inputs_reports_and_tokens_and_runs_twice(
    api: httpx.Client, gateway_url: str, firestore_db: Any, reports_bucket: Any
) -> None:
    final = wait_final(api, queue_json(api, dataset(sample(7, seed=21))))
    job_id = final["jobId"]
    job = firestore_db.collection("reports").document(job_id)
    input_object = job.get().get("input_object")
    output_object = f"reports/{job.get().get('owner')}/{job_id}/reporte_facturacion.zip"
    assert reports_bucket.blob(input_object).exists() and reports_bucket.blob(output_object).exists()
    long_ago = job.get().get("created_at") - dt.timedelta(hours=get_settings().reports_retention_hours + 1)
    job.update({"created_at": long_ago})
    cache = firestore_db.collection("report_cache").document(job.get().get("cache_key"))
    cache.update({"created_at": long_ago})
    token = hashlib.sha256(final["downloadUrl"].rsplit("/", 1)[1].encode()).hexdigest()
    firestore_db.collection("report_tokens").document(token).update({"expire_at": long_ago})

    first = call_internal(gateway_url, "reports_cleanup", {})
    second = call_internal(gateway_url, "reports_cleanup", {})

    assert first.status_code == 200 and first.json()["jobs"] >= 1, first.text
    assert second.status_code == 200 and second.json()["jobs"] == 0
    assert not reports_bucket.blob(input_object).exists() and not reports_bucket.blob(output_object).exists()
    assert not job.get().exists and not cache.get().exists
    assert not firestore_db.collection("report_tokens").document(token).get().exists
    assert not firestore_db.collection("batches").document(job_id).get().exists
    assert api.get(f"/reports/status/{job_id}").status_code == 404
