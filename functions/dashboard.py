"""The web dashboard: one page and its files (GET only, no key needed to load them). The page signs in with
the user's API key, kept in the browser's session storage, and calls the platform's public APIs with it."""

from __future__ import annotations

import flask
import functions_framework
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule

from shared.http import register_error_handlers
from shared.services import dashboard_site as site
from shared.settings import get_settings

register_error_handlers(functions_framework.errorhandler)

ROUTES = Map(
    [
        Rule("/", endpoint="page"),
        # Not /static: functions-framework's Flask app keeps that path for its own static folder.
        Rule("/assets/<path:relative>", endpoint="static"),
        Rule("/vendor/<path:relative>", endpoint="vendor"),
    ]
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@functions_framework.http
def dashboard(request: flask.Request) -> flask.Response:
    if request.method not in ("GET", "HEAD"):
        raise MethodNotAllowed(valid_methods=["GET", "HEAD"])
    endpoint, args = ROUTES.bind("", path_info=request.path, url_scheme="http").match(request.path)
    if endpoint == "page":
        settings = get_settings()
        page = site.render_page(
            base_path=request.script_root,
            api_base_url=settings.dashboard_api_base_url,
            poll_ms=settings.dashboard_poll_ms,
        )
        response = flask.Response(page.body, mimetype="text/html")
        response.headers["Content-Security-Policy"] = page.content_security_policy
        response.headers["Cache-Control"] = "no-store"
    elif endpoint in ("static", "vendor"):
        path = (
            site.static_file(args["relative"]) if endpoint == "static" else site.vendor_file(args["relative"])
        )
        response = flask.send_file(path, mimetype=site.content_type(path), conditional=True, max_age=0)
        # Vendored files are pinned; the page's own files change with a deploy: revalidate both (ETag).
        response.headers["Cache-Control"] = "no-cache"
    else:  # pragma: no cover - the route map has no other endpoint
        raise NotFound()
    response.headers.update(SECURITY_HEADERS)
    return response
