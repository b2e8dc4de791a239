"""One OpenAPI 3.1 document for the public API as the gateway serves it.

Each service describes only itself, at `GET /openapi.json` on its internal port (the request must
carry the internal secret; the gateway never routes that path). `gateway_openapi` fetches those
documents and merges them into what a client of the gateway really sees:

* only the `/api/*` routes (no `/internal/*`, no health or metrics);
* the gateway as the only server;
* a bearer-token security requirement on every operation but the public ones (sign-up, sign-in,
  sign-out and reading the catalogue);
* the errors as they are on the wire: `application/problem+json` (RFC 9457) for every documented
  error status, instead of FastAPI's default 422 `HTTPValidationError`, plus the statuses the
  gateway or any service can answer on any route (400, 401, 403, 404, 409, 413, 415, 429, 503);
* the live order status stream (`GET /api/orders/{order_id}/events`) as `text/event-stream`.

`write_gateway_openapi(settings, path)` writes the document to a file (for the fuzz tests, for
client generators, for a reviewer)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx

from tinysaga.platform.secrets import internal_secret
from tinysaga.platform.settings import Settings

# The services that own public routes (payment has none; web is the storefront's static pages).
PUBLIC_SERVICES = ("auth", "order", "wallet", "inventory", "notification")

# Operations anyone may call without a token (the gateway's `auth_public` and the catalogue reads).
ANONYMOUS = frozenset(
    {
        ("post", "/api/auth/register"),
        ("post", "/api/auth/token"),
        ("post", "/api/auth/logout"),
        ("get", "/api/products"),
        ("get", "/api/products/{product_id}"),
    }
)

# Operations whose success answer is a Server-Sent Events stream, not the JSON FastAPI assumes.
EVENT_STREAMS = frozenset({("get", "/api/orders/{order_id}/events")})

# Error statuses any operation can answer: the gateway answers 400 (unreadable request), 401 (no
# valid token), 413 (body too large), 429 (rate limits) and 503 (no healthy server) on any route
# (Order also answers 503 to a new order beyond the bound on sagas in flight, ADR 50 and 52);
# the services answer 400 (bad JSON), 403, 404, 409 and 415 (body not JSON) through the shared
# error handlers in `tinysaga.platform.web`.
ERROR_STATUSES = {
    400: ("BadRequest", "Bad Request: the request or its JSON body could not be read."),
    401: ("Unauthorized", "Unauthorized: no valid access token (or wrong credentials on sign-in)."),
    403: ("Forbidden", "Forbidden: the route needs a role the caller does not have."),
    404: ("NotFound", "Not Found: no such resource (or route)."),
    409: ("Conflict", "Conflict: the request clashes with the current state."),
    413: ("ContentTooLarge", "Content Too Large: the body is over the gateway's limit."),
    415: ("UnsupportedMediaType", "Unsupported Media Type: send the body as application/json."),
    429: ("TooManyRequests", "Too Many Requests: a rate limit of the gateway was hit."),
    503: (
        "ServiceUnavailable",
        "Service Unavailable: no healthy server behind the gateway, or (a new order) as many sagas in flight"
        " as the shop takes at once, or so many that a new one would wait too long; try again after Retry-After."
        " Then the problem names the limit (`limit`: `bound` or `wait`), the sagas in flight (`inFlight`) and,"
        " for the wait, the seconds a new one would take (`expectedWaitSeconds`).",
    ),
}
VALIDATION_STATUS = 422
PROBLEM = "application/problem+json"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
SECURITY_SCHEME = "bearerAuth"

# FastAPI's own error schemas, replaced by the problem schemas below.
_FASTAPI_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError")


def _problem_schemas() -> dict[str, Any]:
    return {
        "Problem": {
            "title": "Problem",
            "description": "An error, as RFC 9457 problem details (extension members may follow).",
            "type": "object",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"type": "string", "description": "a URN naming the kind of problem"},
                "title": {"type": "string"},
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": {"type": "string"},
                "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}},
            },
        },
        "FieldError": {
            "title": "FieldError",
            "description": "One invalid value of a request.",
            "type": "object",
            "required": ["field", "message", "type"],
            "properties": {
                "field": {"type": "string", "description": "dotted path of the value, or `body`"},
                "message": {"type": "string"},
                "type": {"type": "string", "description": "the kind of error, e.g. `missing`, `value_error`"},
            },
        },
        "ValidationProblem": {
            "title": "ValidationProblem",
            "description": "Some values of the request are invalid; `errors` lists each one.",
            "allOf": [
                {"$ref": "#/components/schemas/Problem"},
                {"type": "object", "required": ["errors"], "properties": {"status": {"const": 422}}},
            ],
        },
    }


def _problem_response(status: int, description: str, schema_ref: str = "Problem") -> dict[str, Any]:
    schema: dict[str, Any] = {"$ref": f"#/components/schemas/{schema_ref}"}
    if schema_ref == "Problem":
        schema = {"allOf": [schema, {"type": "object", "properties": {"status": {"const": status}}}]}
    response: dict[str, Any] = {"description": description, "content": {PROBLEM: {"schema": schema}}}
    if status == 401:
        response["headers"] = {
            "WWW-Authenticate": {
                "description": "`Bearer` when the gateway refused the token",
                "schema": {"type": "string"},
            }
        }
    if status == 429:
        response["headers"] = {
            "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
        }
    return response


def _error_responses() -> dict[str, Any]:
    out = {name: _problem_response(status, text) for status, (name, text) in ERROR_STATUSES.items()}
    out["ValidationFailed"] = _problem_response(
        VALIDATION_STATUS, "Unprocessable Content: some values are invalid (see `errors`).", "ValidationProblem"
    )
    return out


# ---- fetching ------------------------------------------------------------------------------------


def fetch_service_openapi(settings: Settings, service: str, *, client: httpx.Client | None = None) -> dict[str, Any]:
    """A service's own document, from the first replica that answers."""
    headers = {"X-Internal-Secret": internal_secret(settings)}
    own = client is None
    http = client or httpx.Client(timeout=10)
    last: Exception | None = None
    try:
        for replica in range(1, settings.replicas(service) + 1):
            try:
                r = http.get(settings.service_url(service, replica) + "/openapi.json", headers=headers)
                r.raise_for_status()
                return r.json()
            except (httpx.HTTPError, ValueError) as e:
                last = e
        raise RuntimeError(f"no replica of {service} served its OpenAPI document: {last}") from last
    finally:
        if own:
            http.close()


# ---- merging -------------------------------------------------------------------------------------


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    """Point `$ref`s at renamed component schemas (in place; returns the node)."""
    prefix = "#/components/schemas/"
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(prefix) and ref[len(prefix) :] in renames:
            node["$ref"] = prefix + renames[ref[len(prefix) :]]
        for v in node.values():
            _rewrite_refs(v, renames)
    elif isinstance(node, list):
        for v in node:
            _rewrite_refs(v, renames)
    return node


def _refs(node: Any, found: set[str]) -> set[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            found.add(ref.rsplit("/", 1)[1])
        for v in node.values():
            _refs(v, found)
    elif isinstance(node, list):
        for v in node:
            _refs(v, found)
    return found


def _truthful_responses(method: str, path: str, op: dict[str, Any]) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    if str(VALIDATION_STATUS) in responses:
        responses[str(VALIDATION_STATUS)] = {"$ref": "#/components/responses/ValidationFailed"}
    for status, (name, _) in ERROR_STATUSES.items():
        responses[str(status)] = {"$ref": f"#/components/responses/{name}"}
    if (method, path) in EVENT_STREAMS:
        ok = responses.get("200") or {}
        responses["200"] = {
            "description": ok.get("description") or "A stream of the order's status changes",
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "string",
                        "description": "`event: order-status` messages whose `data` is the order as JSON; "
                        "`id` is the order's version (send it back as `Last-Event-ID`).",
                    }
                }
            },
        }
    op["responses"] = dict(sorted(responses.items()))


def merge_openapi(documents: dict[str, dict[str, Any]], settings: Settings) -> dict[str, Any]:
    """Merge the services' documents (by service name) into the gateway's document."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    owner: dict[str, str] = {}  # component schema name -> service that defined it
    operation_ids: dict[str, str] = {}
    version = "0.1.0"
    for service, raw in documents.items():
        doc = copy.deepcopy(raw)
        version = doc.get("info", {}).get("version") or version
        theirs = {
            k: v for k, v in doc.get("components", {}).get("schemas", {}).items() if k not in _FASTAPI_ERROR_SCHEMAS
        }
        renames = {}
        for name, schema in theirs.items():
            if name in schemas and schemas[name] != schema:
                renames[name] = f"{service.capitalize()}{name}"
        _rewrite_refs(doc, renames)
        for name, schema in theirs.items():
            final = renames.get(name, name)
            if final in schemas and schemas[final] != _rewrite_refs(schema, renames):
                raise ValueError(f"component schema {final!r} of {service} clashes with {owner[final]}'s")
            schemas[final] = _rewrite_refs(schema, renames)
            owner.setdefault(final, service)
        for path, item in doc.get("paths", {}).items():
            if not path.startswith("/api/"):
                continue
            merged = paths.setdefault(path, {})
            for method, op in item.items():
                if method not in HTTP_METHODS:  # path-level parameters, summary, ...
                    merged.setdefault(method, op)
                    continue
                if method in merged:
                    raise ValueError(f"{method.upper()} {path} is declared by two services")
                oid = op.get("operationId")
                if oid:
                    if oid in operation_ids:
                        raise ValueError(f"operationId {oid!r} of {service} is already used by {operation_ids[oid]}")
                    operation_ids[oid] = service
                op["tags"] = [service]
                op["security"] = [] if (method, path) in ANONYMOUS else [{SECURITY_SCHEME: []}]
                _truthful_responses(method, path, op)
                merged[method] = op

    problem = _problem_schemas()
    for name in problem:
        if name in schemas:
            raise ValueError(f"a service defines a schema named {name!r}, which the gateway document uses")
    schemas.update(problem)
    # Keep only what is referenced (FastAPI's error schemas are gone; internal routes' bodies too).
    responses = _error_responses()
    used: set[str] = set()
    frontier = _refs([paths, responses], set())
    while frontier:
        used |= frontier
        frontier = _refs([schemas[n] for n in frontier if n in schemas], set()) - used
    missing = used - schemas.keys()
    if missing:
        raise ValueError(f"the merged document refers to undefined schemas: {sorted(missing)}")

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tiny-Saga API (through the gateway)",
            "version": version,
            "description": "The public API of Tiny-Saga as served by its gateway. Send the access token from "
            "`POST /api/auth/token` as `Authorization: Bearer <token>` (browsers may use the "
            "`access_token` cookie instead). Every error is `application/problem+json`.",
        },
        "servers": [{"url": f"http://127.0.0.1:{settings.gateway_port}", "description": "the gateway"}],
        "tags": [{"name": s} for s in documents],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted((k, v) for k, v in schemas.items() if k in used)),
            "responses": responses,
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "RS256 access token from `POST /api/auth/token`, verified by the gateway.",
                },
            },
        },
    }


def gateway_openapi(settings: Settings) -> dict[str, Any]:
    """Fetch every public service's document (through the internal ports) and merge them."""
    with httpx.Client(timeout=10) as http:
        documents = {s: fetch_service_openapi(settings, s, client=http) for s in PUBLIC_SERVICES}
    return merge_openapi(documents, settings)


def write_gateway_openapi(settings: Settings, path: str | Path) -> Path:
    """Write the gateway's document as JSON to `path` (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(gateway_openapi(settings), indent=2) + "\n")
    return path
