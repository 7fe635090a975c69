"""The access-control matrix (issue 17, point 4), generated from the functions' OpenAPI documents so that a
new endpoint cannot be forgotten, plus the internal functions:

no key 401, bad key 401; another tenant's key on each object 404 with the body of a missing object; a user key
on admin endpoints 403; an API key, a forged, a wrong-audience and a stranger's OIDC token on internal
endpoints 401/403; server-owned fields in a body 400 naming the field; a body over the limit 413; the rate
limit 429 with Retry-After.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from infra.emulators.gemini.content import png
from infra.emulators.oidc import TokenMinter
from infra.gateway import function_sources
from shared.api import Access
from shared.openapi import path_param_names
from shared.settings import Settings, get_settings
from tests.e2e.conftest import new_api_key
from tests.fuzz.run import public_apis

APIS = public_apis()

# Functions without a public document: reached only by Cloud Tasks or Cloud Scheduler, with the OIDC token of
# the platform's service accounts, at the function's root URL.
INTERNAL_FUNCTIONS = {
    "batch_worker": ["tasks"],
    "batch_finalizer": ["tasks"],
    "batch_sweeper": ["scheduler", "tasks"],
    "reports_cleanup": ["scheduler", "tasks"],
    "articulos_dispatch": ["scheduler", "tasks"],
    "analytics_rollup": ["scheduler"],
}
# Path parameters that name a tenant's object: each is created for tenant A and requested by tenant B.
OWNED = {
    ("batch", "batch_id"),
    ("batch", "name"),
    ("reports", "job_id"),
    ("articulos", "articulo_id"),
    ("articulos", "queue_id"),
}
# Path parameters that name no tenant's object, and why.
NOT_OWNED = {
    ("batch", "kind"): "the kind of batch, an enum",
    ("reports", "token"): "a download token is its own credential (unknown: 404, guessing rate-limited)",
    ("dashboards", "job_id"): "the platform's metric jobs, the same for every tenant",
    ("dashboards", "run_id"): "the platform's metric runs, the same for every tenant",
}
# Routes that write into the caller's own namespace: another tenant's id there is the caller's own object.
OWN_NAMESPACE = {("articulos", "PUT", "/<articulo_id>")}
SERVER_OWNED_FIELDS = ["status", "owner", "attempts", "cost", "credits"]


@dataclass(frozen=True)
class Op:
    function: str
    method: str
    path: str  # werkzeug syntax, as in the route table
    access: Access
    media_type: str | None
    max_bytes: int | None
    streaming: bool

    def __str__(self) -> str:
        return f"{self.function} {self.method} {self.path}"

    def url(self, values: dict[str, str] | None = None) -> str:
        path = self.path
        for name in path_param_names(self.path):
            value = (values or {}).get(name) or _placeholder(self, name)
            path = path.replace(f"<{name}>", value).replace(f"<path:{name}>", value)
        return f"/{self.function}{path}"


def _placeholder(op: Op, name: str) -> str:
    operation = APIS[op.function].document()["paths"]
    for item in operation.values():
        for spec in item.values():
            for param in spec["parameters"]:
                if param["name"] == name and param["in"] == "path":
                    schema = param["schema"]
                    if "enum" in schema:
                        return str(schema["enum"][0])
                    if schema.get("type") == "integer":
                        return str(10**9 + 7)
    return uuid.uuid4().hex


def operations() -> list[Op]:
    found = []
    for name, api in APIS.items():
        document = api.document()
        for route in api.routes:
            spec = document["paths"][_openapi(route.path)][route.method.lower()]
            body = spec.get("requestBody")
            media_type = next(iter(body["content"])) if body else None
            found.append(
                Op(
                    function=name,
                    method=route.method,
                    path=route.path,
                    access=Access(spec["x-access"]),
                    media_type=media_type,
                    max_bytes=body["x-max-bytes"] if body else None,
                    streaming=route.streaming,
                )
            )
    return found


def _openapi(path: str) -> str:
    from shared.openapi import openapi_path

    return openapi_path(path)


OPS = operations()
CREDENTIALED = [op for op in OPS if op.access is not Access.PUBLIC]
KEYED = [op for op in OPS if op.access in (Access.USER, Access.ADMIN)]
ADMIN = [op for op in OPS if op.access is Access.ADMIN]
WITH_OWNED = [op for op in KEYED if any((op.function, p) in OWNED for p in path_param_names(op.path))]
JSON_BODIES = [op for op in KEYED if op.media_type in ("application/json", "multipart/form-data")]
BODIES = [op for op in KEYED if op.max_bytes is not None]


def _send(client: httpx.Client, op: Op, url: str, **kwargs: Any) -> httpx.Response:
    """One request; a stream's answer is read no further than its status and headers."""
    with client.stream(op.method, url, **kwargs) as response:
        if not op.streaming or response.status_code != 200:
            response.read()
        return response


# --- the matrix covers everything -------------------------------------------------------------------------


# Functions that serve files and hold no data: no key, no document (tests/unit/test_dashboard_site.py).
STATIC_FUNCTIONS = {"dashboard": "the dashboard's page and its vendored libraries (GET and HEAD only)"}


def test_every_function_is_public_with_a_document_or_internal() -> None:
    assert set(function_sources()) == set(APIS) | set(INTERNAL_FUNCTIONS) | set(STATIC_FUNCTIONS)


def test_every_path_parameter_is_an_object_of_the_matrix_or_explained() -> None:
    params = {(op.function, name) for op in OPS for name in path_param_names(op.path)}
    assert params <= OWNED | set(NOT_OWNED), params - OWNED - set(NOT_OWNED)


# --- credentials ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", CREDENTIALED, ids=str)
def test_no_key_and_a_bad_key_are_401(gateway_url: str, op: Op) -> None:
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        missing = _send(client, op, op.url())
        bad = _send(client, op, op.url(), headers={"Authorization": "Bearer bp_not-a-real-key"})
        not_bearer = _send(client, op, op.url(), headers={"Authorization": "Basic dXNlcjpwYXNz"})

    assert missing.status_code == bad.status_code == not_bearer.status_code == 401, op
    assert missing.json()["error"]["code"] == bad.json()["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize("op", ADMIN, ids=str)
def test_a_user_key_on_an_admin_endpoint_is_403(gateway_url: str, unique: str, op: Op) -> None:
    key = new_api_key(f"user-{unique}")
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        response = _send(client, op, op.url())

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def _internal_targets() -> list[tuple[str, str, list[str]]]:
    """(name, url path, service accounts) of every internal endpoint: internal functions and internal
    routes of public functions."""
    targets = [(name, f"/{name}", accounts) for name, accounts in INTERNAL_FUNCTIONS.items()]
    for op in OPS:
        if op.access is Access.INTERNAL:
            targets.append((str(op), op.url(), ["scheduler"]))
    return targets


def _account(settings: Settings, role: str) -> str:
    return settings.tasks_service_account if role == "tasks" else settings.scheduler_service_account


@pytest.mark.parametrize(("name", "path", "accounts"), _internal_targets(), ids=lambda v: str(v))
def test_internal_endpoints_refuse_api_keys_and_foreign_or_forged_tokens(
    gateway_url: str, unique: str, name: str, path: str, accounts: list[str]
) -> None:
    settings = get_settings()
    function_url = settings.function_url(path.strip("/").split("/")[0])
    minter = TokenMinter()
    account = _account(settings, accounts[0])
    headers = {
        "api key": f"Bearer {new_api_key(f'intruder-{unique}')}",
        "forged": "Bearer eyJhbGciOiJub25lIn0.e30.",
        "wrong audience": "Bearer "
        + minter.mint(service_account_email=account, audience=settings.function_url("someone_else")),
        "stranger": "Bearer "
        + minter.mint(
            service_account_email="intruder@example.iam.gserviceaccount.com", audience=function_url
        ),
    }
    codes = {}
    for label, value in headers.items():
        response = httpx.post(f"{gateway_url}{path}", json={}, headers={"Authorization": value}, timeout=30)
        codes[label] = response.status_code

    assert codes == {"api key": 401, "forged": 401, "wrong audience": 401, "stranger": 403}


# --- another tenant's objects ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def owner_and_objects(gateway_url: str) -> Iterator[tuple[httpx.Client, dict[tuple[str, str], str]]]:
    """Tenant A and one object of each kind it owns."""
    suffix = uuid.uuid4().hex[:10]
    key = new_api_key(f"owner-{suffix}")
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as api:
        batch = api.post(
            "/batch/generate", json={"requests": [{"prompt": "mine"}], "options": {"wait": False}}
        )
        assert batch.status_code == 202, batch.text
        collection = f"kb_{suffix}"
        indexed = api.post(
            "/batch/embeddings",
            json={
                "operations": [{"type": "index", "name": collection, "documents": [{"text": "brake disc"}]}],
                "options": {"wait": True},
            },
        )
        assert indexed.status_code == 200 and indexed.json()["status"] == "completed", indexed.text
        job = api.post(
            "/reports/queue-json",
            json={"reportType": "FacturacionMasiva", "userName": "ana", "jsonData": "[]"},
        )
        assert job.status_code == 202, job.text
        articulo_id = 4242
        put = api.put(f"/articulos/{articulo_id}", json={"nombre": "mío"})
        assert put.status_code == 200, put.text
        image = api.put(f"/articulos/{articulo_id}/imagen", content=png(seed=7))
        assert image.status_code == 200, image.text
        added = api.post("/articulos/batch-process-images", json={"articuloIds": [articulo_id]})
        assert added.status_code == 200, added.text
        queue_id = added.json()["data"]["detalles"]["agregados"][0]["queueId"]
        yield (
            api,
            {
                ("batch", "batch_id"): batch.json()["batchId"],
                ("batch", "name"): collection,
                ("reports", "job_id"): job.json()["jobId"],
                ("articulos", "articulo_id"): str(articulo_id),
                ("articulos", "queue_id"): queue_id,
            },
        )


def _body_for(op: Op) -> dict[str, Any]:
    if op.media_type == "application/octet-stream":
        return {"content": png(seed=8)}
    if op.media_type == "application/json":
        return {"json": {"nombre": "ajeno"}}
    return {}


def _missing_like(value: str) -> str:
    if value.isdigit():
        return str(int(value) + 1_000_003)
    if value.startswith("kb_"):
        return f"kb_{uuid.uuid4().hex[:10]}"
    return uuid.uuid4().hex[: len(value)]


@pytest.mark.parametrize("op", WITH_OWNED, ids=str)
def test_another_tenants_object_is_404_with_the_body_of_a_missing_one(
    gateway_url: str,
    unique: str,
    owner_and_objects: tuple[httpx.Client, dict[tuple[str, str], str]],
    op: Op,
) -> None:
    owner, objects = owner_and_objects
    names = [name for name in path_param_names(op.path) if (op.function, name) in OWNED]
    theirs = {name: objects[(op.function, name)] for name in names}
    missing = {name: _missing_like(value) for name, value in theirs.items()}
    key = new_api_key(f"other-{unique}")
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as other:
        foreign = _send(other, op, op.url(theirs), **_body_for(op))
        absent = _send(other, op, op.url(missing), **_body_for(op))

    if (op.function, op.method, op.path) in OWN_NAMESPACE:
        # The other tenant wrote its own article of that id; the owner's is untouched.
        assert foreign.status_code == 200
        mine = owner.get(op.url(theirs)).json()["data"]
        assert mine["nombre"] == "mío"
        return
    assert foreign.status_code == absent.status_code == 404, (foreign.text, absent.text)
    masked_foreign, masked_absent = foreign.text, absent.text
    for name in names:
        masked_foreign = masked_foreign.replace(theirs[name], "ID")
        masked_absent = masked_absent.replace(missing[name], "ID")
    assert masked_foreign == masked_absent


def test_the_owners_objects_survive_the_other_tenants_attempts(
    owner_and_objects: tuple[httpx.Client, dict[tuple[str, str], str]],
) -> None:
    owner, objects = owner_and_objects

    assert owner.get(f"/batch/status/{objects[('batch', 'batch_id')]}").status_code == 200
    names = [c["name"] for c in owner.get("/batch/collections").json()["collections"]]
    assert objects[("batch", "name")] in names
    assert owner.get(f"/reports/status/{objects[('reports', 'job_id')]}").status_code == 200
    assert owner.get(f"/articulos/{objects[('articulos', 'articulo_id')]}").status_code == 200


def test_a_download_token_nobody_was_given_is_404(gateway_url: str) -> None:
    response = httpx.get(f"{gateway_url}/reports/download/{uuid.uuid4().hex}", timeout=30)
    assert response.status_code == 404


# --- what clients send ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field", SERVER_OWNED_FIELDS)
@pytest.mark.parametrize("op", JSON_BODIES, ids=str)
def test_a_server_owned_field_in_a_body_is_400_naming_it(api: httpx.Client, op: Op, field: str) -> None:
    if op.media_type == "multipart/form-data":
        response = _send(api, op, op.url(), data={field: "x"}, files={"dataFile": ("d.json", b"[]")})
    else:
        response = _send(api, op, op.url(), json={field: "completed"})

    if op.access is Access.ADMIN:
        assert response.status_code == 403  # a user key gets no further
        return
    assert response.status_code == 400, response.text
    assert field in [detail["field"] for detail in response.json()["error"]["details"]]


@pytest.mark.parametrize("op", BODIES, ids=str)
def test_a_body_over_the_limit_is_413(api: httpx.Client, op: Op) -> None:
    assert op.max_bytes is not None
    content = b" " * (op.max_bytes + 1)

    response = _send(api, op, op.url(), content=content, headers={"Content-Type": op.media_type or ""})

    assert response.status_code == (403 if op.access is Access.ADMIN else 413), response.text[:300]


@pytest.mark.parametrize("op", KEYED, ids=str)
def test_the_rate_limit_is_429_with_retry_after(gateway_url: str, unique: str, op: Op) -> None:
    key = new_api_key(f"limited-{unique}", rate_limit_per_minute=2)
    # The limit counts per clock minute: start clear of a minute's end, so the requests fall in one window.
    seconds_left = 60 - time.time() % 60
    if seconds_left < 3:
        time.sleep(seconds_left)  # waits for the clock, not for work
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        limited = None
        # Each of the gateway's two processes may let the limit through before they sync: never more.
        for _ in range(12):
            response = _send(client, op, op.url())
            if response.status_code == 429:
                limited = response
                break

    assert limited is not None, op
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json()["error"]["code"] == "rate_limited"
