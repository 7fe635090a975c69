"""The web dashboard's files: its page (with its configuration and an import map of the vendored libraries),
its own modules and styles, and the libraries `npm ci` vendored into `shared/dashboard/node_modules`.

Only listed library files are served, never the whole vendor tree, and every answer carries a strict
Content-Security-Policy: scripts and styles from this function only (the import map, the one inline script,
by its hash), API calls to the platform's own origin or the configured API base.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from shared.emulator_config import REPO_ROOT
from shared.errors import NotFound, PlatformError

SITE_DIR = REPO_ROOT / "shared" / "dashboard"
STATIC_DIR = SITE_DIR / "static"
VENDOR_DIR = SITE_DIR / "node_modules"

# Bare module names the page imports -> files of the vendored packages (package.json pins their versions).
IMPORTS = {
    "preact": "preact/dist/preact.mjs",
    "preact/hooks": "preact/hooks/dist/hooks.mjs",
    "htm": "htm/dist/htm.mjs",
    "chart.js": "chart.js/dist/chart.js",
    "@kurkle/color": "@kurkle/color/dist/color.esm.js",  # chart.js's own import
}
# Files of the vendor tree the page may load: the modules above and the chunks they import.
VENDOR_PREFIXES = ("preact/dist/", "preact/hooks/dist/", "htm/dist/", "chart.js/dist/", "@kurkle/color/dist/")
CONTENT_TYPES = {
    ".mjs": "text/javascript; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".map": "application/json",
}


class AssetsMissing(PlatformError):
    """The vendored libraries are not installed (`make venv` runs `npm ci` in dashboard/)."""

    code = "dashboard_assets_missing"
    http_status = 503


@dataclass(frozen=True)
class Page:
    body: str
    content_security_policy: str


def import_map(*, base_path: str) -> str:
    imports = {name: f"{base_path}/vendor/{path}" for name, path in IMPORTS.items()}
    return json.dumps({"imports": imports}, indent=1)


def render_page(*, base_path: str, api_base_url: str, poll_ms: int) -> Page:
    """The page for a function mounted at `base_path` (`/dashboard` behind the gateway, `` alone)."""
    if not (VENDOR_DIR / IMPORTS["preact"]).is_file():
        raise AssetsMissing(
            "the dashboard's libraries are not installed: run `make venv` (npm ci in dashboard/)"
        )
    template = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    imports = import_map(base_path=base_path)
    config = json.dumps({"apiBase": api_base_url, "pollMs": poll_ms, "basePath": base_path})
    body = (
        template.replace("{{BASE}}", html.escape(base_path))
        .replace("{{IMPORT_MAP}}", imports)
        .replace("{{CONFIG}}", html.escape(config))
    )
    digest = base64.b64encode(hashlib.sha256(imports.encode()).digest()).decode()
    return Page(body=body, content_security_policy=content_security_policy(api_base_url, digest))


def content_security_policy(api_base_url: str, import_map_sha256: str) -> str:
    connect = "'self'"
    if api_base_url:
        parts = urlsplit(api_base_url)
        connect += f" {parts.scheme}://{parts.netloc}"
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src 'self' 'sha256-{import_map_sha256}'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"connect-src {connect}",
            "font-src 'self'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def _inside(root: Path, relative: str) -> Path:
    pure = PurePosixPath(relative)
    if pure.is_absolute() or any(part in ("", ".", "..") for part in pure.parts):
        raise NotFound("no such file")
    path = root.joinpath(*pure.parts)
    if path.suffix not in CONTENT_TYPES or not path.is_file():
        raise NotFound("no such file")
    return path


def static_file(relative: str) -> Path:
    """One of the dashboard's own files (its modules and styles)."""
    return _inside(STATIC_DIR, relative)


def vendor_file(relative: str) -> Path:
    """A listed file of the vendored libraries."""
    if not relative.startswith(VENDOR_PREFIXES):
        raise NotFound("no such file")
    if not VENDOR_DIR.is_dir():
        raise AssetsMissing(
            "the dashboard's libraries are not installed: run `make venv` (npm ci in dashboard/)"
        )
    return _inside(VENDOR_DIR, relative)


def content_type(path: Path) -> str:
    return CONTENT_TYPES[path.suffix]
