"""`GET /<function>/docs`: Swagger UI over the function's own `openapi.json`, served from the vendored copy
(shared/apidocs, installed from the npm registry by `make venv` with `npm ci`; nothing from a CDN)."""

from __future__ import annotations

import html
from pathlib import Path

import flask

from shared.errors import NotFound, PlatformError

VENDOR_DIR = Path(__file__).resolve().parent / "apidocs" / "node_modules" / "swagger-ui-dist"
ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}
# Relative URLs: the page is /<function>/docs, its assets /<function>/docs/<asset>, the document
# /<function>/openapi.json, wherever the function is mounted.
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="stylesheet" href="docs/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true}});
</script>
</body>
</html>
"""


class DocsNotInstalled(PlatformError):
    """The API documentation's assets are not installed (run `make venv`)."""

    code = "docs_not_installed"
    http_status = 503


def docs_response(*, title: str, asset: str) -> flask.Response:
    if not asset:
        if not (VENDOR_DIR / "swagger-ui-bundle.js").is_file():
            raise DocsNotInstalled()
        # The trailing-slash form would break the page's relative URLs: always serve it as `/docs`.
        return flask.Response(PAGE.format(title=html.escape(title)), mimetype="text/html")
    media_type = ASSETS.get(asset)
    if media_type is None:
        raise NotFound(f"no docs asset {asset[:60]!r}")
    path = VENDOR_DIR / asset
    if not path.is_file():
        raise DocsNotInstalled()
    response = flask.Response(path.read_bytes(), mimetype=media_type)
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
