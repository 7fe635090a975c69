"""batchctl against the local cloud: the real console script for submit --watch and results, Click's runner
in-process for the other commands; every command, its errors and exit codes, and --json."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from infra.batchctl.__main__ import cli
from infra.report_data import write_dataset
from shared.emulator_config import REPO_ROOT
from shared.models.auth import Role
from tests.conftest import claim_past_day
from tests.e2e.articulos_client import catalog
from tests.e2e.batch_client import submit as submit_http
from tests.e2e.batch_client import wait_final
from tests.e2e.conftest import new_api_key
from tests.e2e.test_metric_batches import write_day

BATCHCTL = REPO_ROOT / ".venv" / "bin" / "batchctl"
SUBMITTED = re.compile(r"submitted ([0-9a-f]{32})")


@pytest.fixture
def key(local_cloud: Any, unique: str) -> str:
    return new_api_key(f"cli-{unique}")


@pytest.fixture
def api(gateway_url: str, key: str) -> Iterator[httpx.Client]:
    """The HTTP client of the same tenant as `key`, to arrange and check what the CLI did."""
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        yield client


def script(*args: str, key: str, cwd: Path, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it (the local cloud found through emulator.json)."""
    assert BATCHCTL.exists(), "run `make venv`: it installs the batchctl console script"
    env = {**os.environ, "BATCH_API_KEY": key, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("BATCH_URL", None)
    return subprocess.run(
        [str(BATCHCTL), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def invoke(*args: str, key: str | None) -> Result:
    env = {"BATCH_API_KEY": key, "BATCH_URL": None}
    return CliRunner().invoke(cli, list(args), env=env, prog_name="batchctl", catch_exceptions=False)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def chat_line(custom_id: str, content: str) -> str:
    return json.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": content},
                ],
                "max_tokens": 40,
            },
        }
    )


def test_submit_an_openai_file_watch_it_to_the_end_and_stream_its_results_in_order(
    key: str, tmp_path: Path
) -> None:
    ids = [f"req-{i:03d}" for i in range(25)]
    prompts = {custom_id: f"Describe part {custom_id}" for custom_id in ids}
    prompts["req-007"] = "EMULATOR_FAIL_400 a request the model refuses"
    (tmp_path / "requests.jsonl").write_text(
        "".join(chat_line(custom_id, prompts[custom_id]) + "\n" for custom_id in ids), encoding="utf-8"
    )

    watched = script("submit", "requests.jsonl", "--watch", "--concurrency", "3", key=key, cwd=tmp_path)

    assert watched.returncode == 0, watched.stderr
    batch_id = SUBMITTED.search(watched.stdout)
    assert batch_id, watched.stdout
    assert "model gpt-4o-mini is not a Gemini model" in watched.stdout
    assert re.search(r"100%\s+25/25\s+1 failed", watched.stdout), watched.stdout
    assert "status       completed" in watched.stdout

    streamed = script("results", batch_id[1], "-o", "out.jsonl", "--page", "7", key=key, cwd=tmp_path)

    assert streamed.returncode == 0, streamed.stderr
    assert f"25 results of {batch_id[1]} (completed) -> out.jsonl" in streamed.stdout
    lines = json_lines((tmp_path / "out.jsonl").read_text(encoding="utf-8"))
    assert [line["custom_id"] for line in lines] == ids
    assert [line["index"] for line in lines] == list(range(25))
    assert [line["custom_id"] for line in lines if not line["success"]] == ["req-007"]
    assert all(line["response"] for line in lines if line["success"])
    assert not (tmp_path / "out.jsonl.partial").exists()


def test_platform_lines_with_json_output_status_ls_and_results_to_stdout(key: str, tmp_path: Path) -> None:
    path = tmp_path / "own.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}", "customId": f"c{i}"}) + "\n" for i in range(6)))

    submitted = invoke("--json", "submit", str(path), "--watch", "--interval", "0.2", key=key)

    assert submitted.exit_code == 0, submitted.output
    events = json_lines(submitted.stdout)
    batch_id = events[0]["batchId"]
    assert events[0]["kind"] == "generate"
    progress = [e for e in events[1:-1]]
    assert [p["done"] for p in progress] == sorted(p["done"] for p in progress)
    assert progress[-1] == {"status": "completed", "done": 6, "failed": 0, "total": 6, "final": True}
    assert events[-1]["batchId"] == batch_id and events[-1]["status"] == "completed"
    assert events[-1]["resultsUrl"]

    status = json.loads(invoke("status", batch_id, "--json", key=key).stdout)
    assert status["progress"]["successful"] == 6 and "results" not in status
    assert "completed" in invoke("status", batch_id, key=key).stdout

    listed = json.loads(invoke("ls", "--kind", "generate", "--json", key=key).stdout)
    assert [job["batchId"] for job in listed["jobs"]] == [batch_id]
    table = invoke("ls", key=key).stdout
    assert batch_id in table and "6/6" in table

    lines = json_lines(invoke("results", batch_id, "--page", "4", key=key).stdout)
    assert [line["custom_id"] for line in lines] == [f"c{i}" for i in range(6)]


def test_cancel_stops_a_running_batch_and_watch_exits_3(key: str, api: httpx.Client) -> None:
    accepted = submit_http(
        api, [f"EMULATOR_SLEEP_150 slow {i}" for i in range(40)], concurrency=1, wait=False
    )
    batch_id = accepted["batchId"]

    cancelled = invoke("cancel", batch_id, "--json", key=key)

    assert cancelled.exit_code == 0, cancelled.output
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    watched = invoke("watch", batch_id, "--interval", "0.2", key=key)
    assert watched.exit_code == 3, watched.output
    assert "cancelled" in watched.stdout
    as_json = invoke("watch", batch_id, "--json", key=key)
    assert as_json.exit_code == 3
    assert json_lines(as_json.stdout)[-1]["status"] == "cancelled"
    again = invoke("cancel", batch_id, key=key)
    assert again.exit_code == 1
    assert again.stderr.startswith("error: ") and "(HTTP 409)" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_errors_are_one_line_with_the_servers_message_and_an_exit_code(
    key: str, gateway_url: str, unique: str, tmp_path: Path
) -> None:
    other_key = new_api_key(f"other-{unique}")
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {other_key}"}) as other:
        foreign = submit_http(other, ["not yours"], wait=False)["batchId"]

    missing = invoke("status", "0" * 32, key=key)
    assert (missing.exit_code, missing.stderr) == (1, f"error: no batch {'0' * 32} (HTTP 404)\n")
    assert invoke("status", foreign, key=key).stderr == f"error: no batch {foreign} (HTTP 404)\n"
    as_json = invoke("--json", "status", foreign, key=key)
    assert as_json.exit_code == 1
    assert json.loads(as_json.stderr) == {
        "error": {"code": "not_found", "message": f"no batch {foreign}", "status": 404}
    }

    no_key = invoke("ls", key=None)
    assert no_key.exit_code == 2
    assert "make -s api-key TENANT=" in no_key.stderr
    bad_key = invoke("ls", key="not-a-key")
    assert bad_key.exit_code == 1 and "(HTTP 401)" in bad_key.stderr

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "fine"}\n{"custom_id": "x", "url": "/v1/images", "body": {}}\n')
    refused = invoke("submit", str(broken), key=key)
    assert refused.exit_code == 2
    assert (
        refused.stderr
        == "error: line 2: url /v1/images is not supported (use /v1/chat/completions or /v1/embeddings)\n"
    )

    too_many = tmp_path / "big.jsonl"
    too_many.write_text("".join(json.dumps({"prompt": "x", "temperature": 9}) + "\n" for _ in range(2)))
    invalid = invoke("submit", str(too_many), key=key)
    assert invalid.exit_code == 1 and "(HTTP 400)" in invalid.stderr and "temperature" in invalid.stderr

    unreachable = invoke("--url", "http://127.0.0.1:9", "ls", key=key)
    assert unreachable.exit_code == 1
    assert unreachable.stderr.startswith("error: cannot reach http://127.0.0.1:9")


def test_embed_index_then_search_with_a_filter(key: str, tmp_path: Path) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "\n".join(
            [
                json.dumps(
                    {"text": "Front brake pads for a 2014 Golf", "metadata": {"id": "d1", "cat": "brakes"}}
                ),
                json.dumps(
                    {"text": "Oil filter for diesel engines", "metadata": {"id": "d2", "cat": "engine"}}
                ),
                json.dumps("Rear brake discs"),
            ]
        )
    )

    indexed = invoke("embed", "index", "kb", str(docs), "--interval", "0.2", key=key)

    assert indexed.exit_code == 0, indexed.output
    assert "indexed 3 documents into kb" in indexed.stdout
    found = invoke("embed", "search", "kb", "brake pads Golf", "--json", key=key)
    matches = json.loads(found.stdout)["matches"]
    assert [m["id"] for m in matches][0] == "d1" and len(matches) == 3
    filtered = invoke("embed", "search", "kb", "brake", "--filter", "cat=engine", key=key)
    assert filtered.exit_code == 0 and "1 matches in kb" in filtered.stdout and "d2" in filtered.stdout
    unknown = invoke("embed", "search", "nothing-here", "x", key=key)
    assert unknown.exit_code == 1 and "no collection nothing-here" in unknown.stderr


def test_analyze_a_text_file_by_sentiment(key: str, tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("Este es un texto muy positivo y alegre\n\nThe part arrived broken\n", encoding="utf-8")

    shown = invoke("analyze", str(texts), "--type", "sentiment", "--interval", "0.2", key=key)
    as_json = invoke("analyze", str(texts), "--type", "sentiment", "--confidence", "--json", key=key)

    assert shown.exit_code == 0, shown.output
    assert (
        "sentiment of 2 texts" in shown.stdout and "positive" in shown.stdout and "negative" in shown.stdout
    )
    page = json_lines(as_json.stdout)[-1]
    assert [r["analysis"]["label"] for r in page["results"]] == ["positive", "negative"]
    assert all("confidence" in r["analysis"] for r in page["results"])


def test_images_add_with_priority_and_watch_the_queue_empty(key: str, api: httpx.Client) -> None:
    catalog(api, [1, 2, 3])

    added = invoke("images", "add", "1", "2", "3", "99", "--priority", "10", "--json", key=key)

    assert added.exit_code == 0, added.output
    data = json.loads(added.stdout)["data"]
    assert (data["agregados"], data["omitidos"]) == (3, 1)
    watched = invoke("images", "status", "--watch", "--interval", "0.2", key=key)
    assert watched.exit_code == 0, watched.output
    assert re.search(r"completados\s+3", watched.stdout), watched.stdout
    status = json.loads(invoke("images", "status", "--json", key=key).stdout)["data"]["stats"]
    assert (status["pendientes"], status["procesando"], status["completados"]) == (0, 0, 3)
    again = invoke("images", "add", "1", key=key)
    assert "1 queued" in again.stdout


def test_reports_upload_in_chunks_watch_and_download(key: str, tmp_path: Path) -> None:
    data = tmp_path / "facturas.json"
    with data.open("wb") as out:
        count = write_dataset(out, size_bytes=2_500_000)

    uploaded = invoke(
        "reports", "upload", str(data), "--type", "FacturacionMasiva", "--chunk-mb", "1",
        "--watch", "--download", "-o", str(tmp_path / "r.zip"), "--interval", "0.2", key=key,
    )  # fmt: skip

    assert uploaded.exit_code == 0, uploaded.output
    assert "upload facturas.json" in uploaded.stdout and "Completed" in uploaded.stdout
    assert re.search(rf"records\s+{count}\b", uploaded.stdout), uploaded.stdout
    with (tmp_path / "r.zip").open("rb") as zipped:
        assert zipped.read(2) == b"PK"
    listed = json.loads(invoke("ls", "--kind", "report", "--json", key=key).stdout)["jobs"]
    assert len(listed) == 1
    job = json.loads(invoke("reports", "status", listed[0]["batchId"], "--json", key=key).stdout)
    assert job["status"] == "Completed" and job["performanceMetrics"]["recordsProcessed"] == count
    unknown = invoke("reports", "upload", str(data), "--type", "NoSuchReport", key=key)
    assert unknown.exit_code == 1 and "(HTTP 400)" in unknown.stderr


def test_metrics_trigger_a_day_watch_the_run_and_show_the_ranking(
    key: str, unique: str, firestore_db: Any
) -> None:
    day = claim_past_day(firestore_db)
    write_day(firestore_db, day, unique)
    admin = new_api_key(f"cli-admin-{unique}", Role.ADMIN)

    refused = invoke("metrics", "trigger", "daily_metrics_batch", "--fecha", day.isoformat(), key=key)
    run = invoke(
        "metrics", "trigger", "daily_metrics_batch", "--fecha", day.isoformat(), "--watch",
        "--interval", "0.2", key=admin,
    )  # fmt: skip

    assert refused.exit_code == 1 and "(HTTP 403)" in refused.stderr
    assert run.exit_code == 0, run.output
    assert re.search(r"ranking_asesores_diario\s+.\s*completed", run.stdout), run.stdout
    shown = invoke(
        "metrics", "show", "ranking_asesores_diario", "--desde", day.isoformat(), "--hasta", day.isoformat(),
        "--json", key=key,
    )  # fmt: skip
    ranked = {m["dimensiones"]["asesor_id"] for m in json.loads(shown.stdout)["metricas"]}
    assert {f"{unique}-a1", f"{unique}-a3"} <= ranked
    table = invoke("metrics", "show", "ranking_asesores_diario", "--desde", day.isoformat(), key=key).stdout
    assert f"{unique}-a3" in table
    assert invoke("metrics", "trigger", "cleanup_metrics", "--fecha", "2024-01-15", key=admin).exit_code == 2


def test_analytics_is_one_screen_of_the_tenants_calls(key: str, api: httpx.Client) -> None:
    wait_final(api, submit_http(api, ["one", "two", "three"], wait=False)["batchId"])

    summary = invoke("analytics", "--json", key=key)
    screen = invoke("analytics", key=key)

    assert summary.exit_code == 0, summary.output
    body = json.loads(summary.stdout)
    assert body["metrics"]["requests"]["total"] == 3
    assert body["insights"]["performance"]["status"] in ("good", "degraded", "critical")
    assert "calls       3 (3 ok" in screen.stdout and "latency ms" in screen.stdout
    assert len(screen.stdout.splitlines()) <= 40  # one screen


def test_credits_status_and_ls_show_a_batch_mode_job_and_its_ledger(
    key: str, api: httpx.Client, gateway_url: str, unique: str
) -> None:
    tenant = "cli-" + unique
    admin_key = new_api_key(f"admin-{unique}", Role.ADMIN)
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {admin_key}"}) as admin:
        granted = admin.post("/batch/credits/grant", json={"tenant": tenant, "amount": 10, "reason": "trial"})
    assert granted.status_code == 200, granted.text
    created = api.post("/batch/create", json={"type": "product", "requests": [{"prompt": "a red brake pad"}]})
    assert created.status_code == 202, created.text

    shown = invoke("credits", "--json", key=key)
    screen = invoke("credits", key=key)

    assert shown.exit_code == 0, shown.output
    body = json.loads(shown.stdout)
    assert body["balance"] == 7.5  # 10 granted, 2.5 debited for one product row
    assert [entry["kind"] for entry in body["entries"]] == ["debit", "grant"]
    assert "7.5 credits" in screen.stdout and "debit" in screen.stdout
    job_id = created.json()["id"]
    shown_job = invoke("status", job_id, "--json", key=key)
    assert shown_job.exit_code == 0, shown_job.output
    assert json.loads(shown_job.stdout)["type"] == "batch-product"
    listed = invoke("ls", "--json", key=key)
    assert listed.exit_code == 0, listed.output
    assert job_id in listed.stdout and "batchmode" in listed.stdout
