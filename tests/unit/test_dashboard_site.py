"""The dashboard function in-process: its page, the import map the CSP allows by hash, the vendored files
it serves (and the ones it does not), and its settings."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from pydantic import ValidationError

from shared.emulator_config import REPO_ROOT
from shared.services import dashboard_site as site
from shared.settings import Settings

pytestmark = pytest.mark.skipif(
    not (site.VENDOR_DIR / site.IMPORTS["preact"]).is_file(), reason="run make venv: npm ci in dashboard/"
)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    app = functions_framework.create_app(target="dashboard", source=str(REPO_ROOT / "functions/dashboard.py"))
    yield app.test_client()


def _import_map(body: str) -> str:
    found = re.search(r'<script type="importmap">(.*?)</script>', body, re.S)
    assert found is not None
    return found.group(1)


def test_the_page_carries_its_config_and_a_csp_that_allows_only_its_own_import_map(client: Any) -> None:
    response = client.get("/")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    body = response.get_data(as_text=True)
    script = _import_map(body)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = response.headers["Content-Security-Policy"]
    assert f"script-src 'self' 'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    meta = re.search(r'<meta name="dashboard-config" content="([^"]*)">', body)
    assert meta is not None
    config = json.loads(meta.group(1).replace("&quot;", '"'))
    assert config == {"apiBase": "", "pollMs": 1000, "basePath": ""}


def test_every_module_of_the_import_map_is_served_as_javascript(client: Any) -> None:
    imports = json.loads(_import_map(client.get("/").get_data(as_text=True)))["imports"]

    assert set(imports) == {"preact", "preact/hooks", "htm", "chart.js", "@kurkle/color"}
    for url in [*imports.values(), "/assets/js/app.js", "/vendor/chart.js/dist/chunks/index.js"]:
        with client.get(url) as response:  # a streamed file: closed here
            assert response.status_code == 200, url
            assert response.mimetype == "text/javascript", url
    with client.get("/assets/app.css") as response:
        assert response.mimetype == "text/css"


@pytest.mark.parametrize(
    "path",
    [
        "/vendor/preact/package.json",  # not a listed file type
        "/vendor/preact/src/index.js",  # not a listed directory
        "/vendor/chart.js/dist/../../../../shared/settings.py",
        "/vendor/chart.js/dist/%2e%2e/%2e%2e/htm/dist/htm.mjs",
        "/assets/../index.html",
        "/assets/js/missing.js",
        "/assets/index.html",  # the template is served only as the page
        "/static/app.css",
        "/anything",
    ],
)
def test_nothing_outside_the_listed_files_is_served(client: Any, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 404, path
    assert response.get_json()["error"]["code"] == "not_found"


def test_only_get_and_head(client: Any) -> None:
    assert client.post("/").status_code == 405
    assert client.delete("/assets/app.css").status_code == 405
    assert client.head("/").status_code == 200
    with client.head("/assets/app.css") as response:
        assert response.status_code == 200


def test_without_the_vendored_libraries_the_page_says_how_to_install_them(
    client: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(site, "VENDOR_DIR", tmp_path / "node_modules")

    response = client.get("/")

    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "dashboard_assets_missing"
    assert "make venv" in response.get_json()["error"]["message"]


def test_an_api_base_on_another_origin_is_allowed_by_the_csp() -> None:
    page = site.render_page(base_path="/dashboard", api_base_url="https://api.example.com/v1", poll_ms=2000)

    assert "connect-src 'self' https://api.example.com;" in page.content_security_policy
    assert '"/dashboard/vendor/preact/dist/preact.mjs"' in page.body


def test_the_poll_interval_is_never_under_a_second() -> None:
    with pytest.raises(ValidationError, match="dashboard_poll_ms"):
        Settings(dashboard_poll_ms=500)
