"""Each public function serves the document of its route table and renders it with the vendored Swagger UI;
a short, derandomized schemathesis run (make fuzz's, 50 cases or more per function) finds nothing."""

from __future__ import annotations

import httpx
import pytest

from tests.fuzz import run as fuzz
from tests.fuzz.run import public_apis

APIS = public_apis()


@pytest.mark.parametrize("name", sorted(APIS))
def test_the_served_document_is_the_route_tables(gateway_url: str, name: str) -> None:
    response = httpx.get(f"{gateway_url}/{name}/openapi.json", timeout=30)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == APIS[name].document()


@pytest.mark.parametrize("name", sorted(APIS))
def test_the_docs_page_renders_the_document_with_local_assets(gateway_url: str, name: str) -> None:
    page = httpx.get(f"{gateway_url}/{name}/docs", timeout=30)
    bundle = httpx.get(f"{gateway_url}/{name}/docs/swagger-ui-bundle.js", timeout=30)
    css = httpx.get(f"{gateway_url}/{name}/docs/swagger-ui.css", timeout=30)
    unknown = httpx.get(f"{gateway_url}/{name}/docs/../../etc/passwd", timeout=30)

    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'src="docs/swagger-ui-bundle.js"' in page.text and 'url: "openapi.json"' in page.text
    assert "http" not in page.text.split("<body>")[1], "nothing from a CDN"
    assert bundle.status_code == 200 and "SwaggerUIBundle" in bundle.text
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert unknown.status_code == 404


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_short_fuzz_run_of_every_document_finds_nothing(gateway_url: str) -> None:
    exit_code = fuzz.main(["--max-examples", "5", "--min-cases", "50", "--deterministic"])

    assert exit_code == 0, (fuzz.RESULTS_DIR / "results.json").read_text()
