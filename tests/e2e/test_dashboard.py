"""The web dashboard in a real browser (Playwright driving Debian's chromium), as a person would use it:
sign in, submit a batch from the page, watch its bar reach 100 %, open its results, cancel another batch,
read the jobs list with its filters, and see the analytics charts drawn with data. Screenshots go to
.artifacts/dashboard/."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Response, expect, sync_playwright

from infra.report_data import invoices
from shared.emulator_config import REPO_ROOT
from shared.models.auth import Role
from tests.conftest import claim_past_day, wait_for
from tests.e2e.articulos_client import catalog
from tests.e2e.batch_client import status, submit, wait_final
from tests.e2e.conftest import new_api_key
from tests.e2e.test_metric_batches import wait_run, write_day

CHROMIUM = os.environ.get("DASHBOARD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO_ROOT / ".artifacts" / "dashboard"
TIMEOUT_MS = 60_000
PROMPTS = [
    "Summarise: brake pads for a 2014 Golf",
    "Translate to German: oil filter",
    "EMULATOR_FAIL_400 broken",
]
CHART_HAS_DATA = """label => Number(
    document.querySelector(`canvas[aria-label^="${label}"]`)?.dataset.total) > 0"""
JOB_PERCENT_ABOVE_ZERO = """() => Number(
    document.querySelector('[aria-label="job progress"]').getAttribute('aria-valuenow')) > 0"""

pytestmark = pytest.mark.slow
expect.set_options(timeout=TIMEOUT_MS)  # the machine may be busy: every wait is bounded, none is short


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make check-browser)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def key(unique: str) -> str:
    return new_api_key(f"dash-{unique}")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("console", lambda m: _console_problem(m, problems))
    opened.on("response", lambda r: _response_problem(r, problems))
    opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    opened.set_default_timeout(TIMEOUT_MS)
    yield opened
    context.close()
    assert problems == [], problems


def _console_problem(message: ConsoleMessage, problems: list[str]) -> None:
    # A refused API call logs "Failed to load resource"; responses are judged below, with their URL.
    if message.type == "error" and not message.text.startswith("Failed to load resource"):
        problems.append(f"console: {message.text}")


def _response_problem(response: Response, problems: list[str]) -> None:
    """Any 5xx, and any failure to load one of the dashboard's own files; API 4xx are the tests' to check."""
    if response.status >= 500 or (response.status >= 400 and "/dashboard/" in response.url):
        problems.append(f"{response.status} {response.url}")


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _sign_in(page: Page, gateway_url: str, key: str) -> None:
    page.goto(f"{gateway_url}/dashboard/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()


def _tab(page: Page, name: str) -> None:
    page.get_by_role("navigation", name="Sections").get_by_role("link", name=name, exact=True).click()


def _api(gateway_url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def test_a_wrong_key_is_refused_and_the_key_lives_in_session_storage_only(
    page: Page, gateway_url: str, key: str
) -> None:
    page.goto(f"{gateway_url}/dashboard/")
    expect(page.get_by_role("heading", name="Batch platform")).to_be_visible()
    page.get_by_label("API key").fill("not-a-key")
    with page.expect_response(re.compile(r"/batch/jobs")) as refused:
        page.get_by_role("button", name="Sign in").click()
    assert refused.value.status == 401
    expect(page.get_by_role("alert")).to_contain_text("not accepted")

    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    assert page.evaluate("Object.values(sessionStorage)") == [key]
    assert page.evaluate("Object.values(localStorage)") == []
    assert key not in page.url

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_submit_watch_results_cancel_filter_and_analytics(page: Page, gateway_url: str, key: str) -> None:
    _sign_in(page, gateway_url, key)

    # Submit a batch from the page: three prompts, one of which the model refuses for good.
    _tab(page, "New batch")
    page.get_by_label("Prompts, one per line").fill("\n".join(PROMPTS))
    expect(page.get_by_text("3 prompts")).to_be_visible()
    _shot(page, "01-submit")
    page.get_by_role("button", name="Submit batch").click()
    page.wait_for_url(re.compile(r"#/jobs/[^/]+$"))
    batch_id = page.url.rsplit("/", 1)[1]

    # Its bar reaches 100 % and its results show, the failed request with its error.
    bar = page.get_by_role("progressbar", name="job progress")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(page.locator(".panel-head .badge")).to_have_text("completed")
    rows = page.locator("table tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(2)).to_contain_text("failed")
    expect(rows.nth(0)).to_contain_text("succeeded")
    expect(page.get_by_role("link", name="Download results (JSONL)")).to_be_visible()
    page.get_by_label("Only errors on this page").check()
    expect(rows).to_have_count(1)
    _shot(page, "02-job-completed")
    with _api(gateway_url, key) as api:
        assert status(api, batch_id)["progress"]["finished"] == 3

        # Cancel another batch from its page while it runs (slow prompts, one at a time).
        slow = submit(api, [f"EMULATOR_SLEEP_1500 part {i}" for i in range(20)], concurrency=1, wait=False)
        slow_id = slow["batchId"]
        page.goto(f"{gateway_url}/dashboard/#/jobs/{slow_id}")
        cancel = page.get_by_role("button", name="Cancel job")
        expect(cancel).to_be_visible()
        # No layout jump while the page polls: what is below the progress stays where it was.
        results_top = page.get_by_role("heading", name="Results").bounding_box()
        page.wait_for_function(JOB_PERCENT_ABOVE_ZERO)
        expect(page.locator("tbody tr").first).to_contain_text("succeeded")
        assert page.get_by_role("heading", name="Results").bounding_box() == results_top
        page.once("dialog", lambda dialog: dialog.accept())
        cancel.click()
        expect(page.locator(".panel-head .badge")).to_have_text("cancelled")
        expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
        # The page reads on until the fan-in: requests that never ran show as cancelled, the file is there.
        expect(page.get_by_role("link", name="Download results (JSONL)")).to_be_visible()
        expect(page.locator("tbody tr").last).to_contain_text("cancelled")
        _shot(page, "03-job-cancelled")
        assert wait_final(api, slow_id)["status"] == "cancelled"

    # The jobs list shows both, and filters by status and kind.
    _tab(page, "Jobs")
    listed = page.locator("tbody tr[data-batch-id]")
    expect(listed).to_have_count(2)
    expect(page.locator(f'tr[data-batch-id="{batch_id}"]')).to_contain_text("completed")
    expect(page.locator(f'tr[data-batch-id="{batch_id}"] [role=progressbar]')).to_have_attribute(
        "aria-valuenow", "100"
    )
    page.get_by_label("Status").select_option("cancelled")
    expect(listed).to_have_count(1)
    expect(page.locator(f'tr[data-batch-id="{slow_id}"]')).to_be_visible()
    page.get_by_label("Status").select_option("")
    page.get_by_label("Kind").select_option("analyze")
    expect(page.get_by_text("No jobs match.")).to_be_visible()
    page.get_by_label("Kind").select_option("")
    expect(listed).to_have_count(2)
    _shot(page, "04-jobs")

    # Analytics: the charts are drawn with this tenant's calls, and the live stream connects.
    _tab(page, "Analytics")
    for chart in ("Calls by model over time", "Latency percentiles over time", "Tokens by model over time"):
        canvas = page.locator(f'canvas[aria-label^="{chart}"]')
        expect(canvas).to_be_visible()
        page.wait_for_function(CHART_HAS_DATA, arg=chart)
    assert (
        float(page.locator('canvas[aria-label^="Cost by model over time"]').get_attribute("data-total") or 0)
        > 0
    )
    expect(page.get_by_text("connected to the stream")).to_be_visible()
    expect(page.get_by_role("heading", name="Insights")).to_be_visible()
    expect(page.locator(".insight").first).to_contain_text("Performance")
    _shot(page, "05-analytics")


def test_the_image_queue_reports_and_metrics_views_work_with_the_tenants_data(
    page: Page, gateway_url: str, key: str, firestore_db: Any, unique: str
) -> None:
    with _api(gateway_url, key) as api:
        catalog(api, [1, 2])
    # A marketplace day no other test has, with unique ids, and its daily run, started by an admin.
    day = claim_past_day(firestore_db)
    write_day(firestore_db, day, unique)
    with _api(gateway_url, new_api_key(f"dash-admin-{unique}", Role.ADMIN)) as admin:
        started = admin.post("/dashboards/batch-jobs/daily", params={"fecha": day.isoformat()})
        assert started.status_code == 202, started.text
        assert wait_run(admin, f"daily_metrics_batch/{day.isoformat()}")["status"] == "completed"
    _sign_in(page, gateway_url, key)

    # Image queue: add two articles from the page; the history shows them completed.
    _tab(page, "Image queue")
    page.get_by_label("Article ids").fill("1, 2, 99")
    page.get_by_label("Priority").fill("5")
    page.get_by_role("button", name="Add to queue").click()
    expect(page.get_by_text("Added 2, skipped 1")).to_be_visible()
    history = page.get_by_role("table", name="Queue history, newest first").locator("tbody tr")
    expect(history).to_have_count(2)
    expect(history.filter(has_text="completed")).to_have_count(2)
    expect(page.locator(".card", has_text="Completed")).to_contain_text("2")
    _shot(page, "06-image-queue")

    # Reports: queue one from JSON on the page, then get its download link once it is completed.
    _tab(page, "Reports")
    page.get_by_label("User name").fill("ana@empresa.com")
    stream = invoices(seed=3)
    page.get_by_label("Invoices").fill(json.dumps([next(stream) for _ in range(20)]))
    page.get_by_role("button", name="Queue report").click()
    expect(page.get_by_role("status")).to_contain_text("Queued report")
    rows = page.get_by_role("table", name="Report jobs, newest first, with download links").locator(
        "tbody tr"
    )
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("completed")
    rows.first.get_by_role("button", name=re.compile("Get the download link")).click()
    link = page.get_by_role("link", name=re.compile(r"reporte_facturacion\.zip"))
    expect(link).to_be_visible()
    with httpx.Client(timeout=30) as plain:  # the link's token is the credential: no API key
        assert plain.get(link.get_attribute("href") or "").status_code == 302
    _shot(page, "07-reports")

    # Metrics: the scheduled jobs from Cloud Scheduler; starting a run needs an admin key, and says so.
    _tab(page, "Metrics")
    runs = page.get_by_role("table", name="Scheduled metric jobs and their last run")
    for job_id in ("daily_metrics_batch", "weekly_metrics_batch", "cleanup_metrics"):
        expect(runs).to_contain_text(job_id)
    page.get_by_role("button", name="Run daily_metrics_batch now").click()
    expect(page.get_by_role("alert")).to_contain_text("admin")
    # The latest calculated values of a metric, as a chart and a table.
    page.get_by_label("Metric", exact=True).select_option("ranking_asesores_diario")
    page.wait_for_function(CHART_HAS_DATA, arg="ranking_asesores_diario by dimension")
    values = page.get_by_role("table", name="ranking_asesores_diario of the latest period").locator(
        "tbody tr"
    )
    expect(values.first).to_be_visible()
    _shot(page, "08-metrics")


def test_every_view_renders_and_reads_well_on_a_phone(browser: Browser, gateway_url: str, key: str) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(TIMEOUT_MS)
    try:
        with _api(gateway_url, key) as api:
            batch_id = submit(api, ["hello from a phone"], wait=False)["batchId"]
            wait_final(api, batch_id)
        _sign_in(page, gateway_url, key)
        page.get_by_role("link", name=re.compile(batch_id[:8])).click()
        expect(page.get_by_role("progressbar", name="job progress")).to_have_attribute("aria-valuenow", "100")
        expect(page.locator("tbody tr").first).to_contain_text("succeeded")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        _shot(page, "phone-job")
        views = {
            "Jobs": "Jobs",
            "Image queue": "Image queue",
            "Metrics": "Metrics",
            "Reports": "Reports",
            "Analytics": "Analytics",
            "Batch Mode": "Batch Mode",
        }
        for link, heading in views.items():
            _tab(page, link)
            expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
            # Nothing wider than the screen: wide tables scroll inside their own box.
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), link
            _shot(page, "phone-" + link.lower().replace(" ", "-"))
        batch_mode = page.get_by_text("Credit balance").or_(
            page.get_by_text("not available on this deployment")
        )
        expect(batch_mode).to_be_visible()
    finally:
        context.close()
    assert errors == []


def test_the_batch_mode_tab_shows_the_credits_and_a_finished_job_with_its_images(
    page: Page, gateway_url: str, key: str, unique: str
) -> None:
    admin_key = new_api_key(f"admin-{unique}", Role.ADMIN)
    with _api(gateway_url, admin_key) as admin:
        granted = admin.post(
            "/batch/credits/grant", json={"tenant": f"dash-{unique}", "amount": 10, "reason": "dashboard"}
        )
        assert granted.status_code == 200, granted.text
    with _api(gateway_url, key) as api:
        created = api.post(
            "/batch/create",
            json={"type": "food", "requests": [{"prompt": "paella"}, {"prompt": "EMULATOR_FAIL_400 soup"}]},
        )
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]

        def _finished() -> dict[str, Any] | None:
            shown: dict[str, Any] = api.get(f"/batch/status/{job_id}").json()
            return shown if shown.get("finishedAt") else None

        final = wait_for(_finished, timeout=90, interval=0.2, what="the Batch Mode job")
    assert final["state"] == "JOB_STATE_SUCCEEDED" and final["creditsRefunded"] == 2

    _sign_in(page, gateway_url, key)
    _tab(page, "Batch Mode")

    # 10 granted, 2 rows at 2 credits debited, the failed row's 2 refunded.
    expect(page.locator(".card", has_text="Credit balance")).to_contain_text("8")
    row = page.get_by_role("row").filter(has_text="batch-food")
    expect(row).to_be_visible()
    row.get_by_role("button", name="Details").click()
    expect(page.get_by_text("JOB_STATE_SUCCEEDED")).to_be_visible()
    expect(page.get_by_role("link", name="image 1")).to_be_visible()
    expect(page.get_by_text("no image")).to_be_visible()
    _shot(page, "batch-mode")
