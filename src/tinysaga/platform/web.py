"""What every service's HTTP side shares: problem+json errors (RFC 9457), JSON with exact money,
the gateway's identity headers, the internal secret, and the health endpoints."""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("tinysaga.web")

PROBLEM = "application/problem+json"
ReadinessCheck = Callable[[], Awaitable[bool]]


def _default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return float(o)
    raise TypeError


class JSON(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=_default)


class Problem(Exception):
    """Raise to answer with problem+json."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        type_: str | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail = status, title, detail or title
        self.errors, self.headers = errors, headers
        self.type = type_ or f"urn:tinysaga:problem:{title.lower().replace(' ', '-')}"
        self.extensions = extensions  # members of the problem's type, beside the standard ones (RFC 9457)


def problem_response(p: Problem) -> Response:
    body: dict[str, Any] = {"type": p.type, "title": p.title, "status": p.status, "detail": p.detail}
    if p.errors is not None:
        body["errors"] = p.errors
    if p.extensions:
        body.update(p.extensions)
    return Response(orjson.dumps(body), status_code=p.status, media_type=PROBLEM, headers=p.headers)


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Identity:
    user_id: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _identity(request: Request) -> Identity:
    uid = request.headers.get("x-user-id")
    if not uid:
        raise Problem(401, "Unauthorized", "a valid access token is required")
    return Identity(uid, request.headers.get("x-user-role") or "user")


async def current_user(request: Request) -> Identity:
    """The user the gateway verified. Only the gateway sets these headers (it strips a client's).
    (The dependencies are `async def`: FastAPI runs a plain `def` one in a thread pool, a thread
    hop on every request.)"""
    return _identity(request)


async def admin_user(request: Request) -> Identity:
    ident = _identity(request)
    if not ident.is_admin:
        raise Problem(403, "Forbidden", "this route needs the admin role")
    return ident


def uuid_in_path(value: str, name: str) -> uuid.UUID:
    """A path parameter that must be a UUID (an internal route's order id): 422 otherwise."""
    try:
        return uuid.UUID(value)
    except ValueError as e:
        raise Problem(
            422,
            "Unprocessable Content",
            f"{name} must be a UUID",
            errors=[{"field": name, "message": "not a UUID", "type": "uuid_parsing"}],
        ) from e


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path", "header")]
        out.append({"field": ".".join(loc) or "body", "message": e.get("msg", "invalid"), "type": e.get("type")})
    return out


def install(app: FastAPI, *, internal_secret: str | None, max_body: int = 65536) -> None:
    """Error handlers and the request guard for a service app."""

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> Response:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        errs = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errs):
            return problem_response(Problem(400, "Bad Request", "the body is not valid JSON"))
        if any(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in errs):
            return problem_response(Problem(400, "Bad Request", "a JSON body is required"))
        return problem_response(
            Problem(422, "Unprocessable Content", "some values are invalid", errors=_field_errors(exc))
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        title = _TITLES.get(exc.status_code, "Error")
        return problem_response(Problem(exc.status_code, title, str(exc.detail) if exc.detail else title))

    @app.exception_handler(asyncpg.DataError)
    async def _unstorable(request: Request, exc: asyncpg.DataError) -> Response:
        # What a client sent and PostgreSQL cannot hold (a NUL character, a number out of range):
        # the client's mistake, not ours.
        log.info("unstorable input on %s %s: %s", request.method, request.url.path, exc)
        return problem_response(
            Problem(
                422,
                "Unprocessable Content",
                "a value cannot be stored (e.g. a NUL character or a number out of range)",
                errors=[{"field": "body", "message": str(exc)[:200], "type": "data_error"}],
            )
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(Problem(500, "Internal Server Error", "an unexpected error; it was logged"))

    app.add_middleware(RequestGuard, internal_secret=internal_secret, max_body=max_body)


class RequestGuard:
    """Plain ASGI middleware (no per-request Request/Response wrapping on the hot path): refuses
    requests that did not come through the gateway, bodies over the limit, and bodies not JSON."""

    def __init__(self, app: Any, internal_secret: str | None, max_body: int) -> None:
        self.app = app
        self.secret = internal_secret.encode() if internal_secret else None
        self.max_body = max_body

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        problem = self.check(scope)
        if problem is not None:
            return await problem_response(problem)(scope, receive, send)
        return await self.app(scope, receive, send)

    def check(self, scope: dict[str, Any]) -> Problem | None:
        path: str = scope["path"]
        headers = dict(scope["headers"])
        if self.secret and not (path.startswith("/health/") or path == "/metrics"):
            if not hmac.compare_digest(headers.get(b"x-internal-secret", b""), self.secret):
                return Problem(403, "Forbidden", "requests must come through the gateway")
        if scope["method"] in ("POST", "PUT", "PATCH"):
            length = headers.get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_body:
                return Problem(413, "Content Too Large", f"bodies are limited to {self.max_body} bytes")
            has_body = (length and length != b"0") or b"transfer-encoding" in headers
            ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if has_body and ctype != b"application/json":
                return Problem(415, "Unsupported Media Type", "send the body as application/json")
        return None


def add_health(
    app: FastAPI, checks: dict[str, ReadinessCheck], before_metrics: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Liveness, readiness (the service's real dependencies) and Prometheus metrics, on the
    internal port only (the gateway answers 404 for these paths); `before_metrics` refreshes the
    figures read at scrape time."""

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if before_metrics is not None:
            await before_metrics()
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(HealthEndpoints, checks=checks)


class HealthEndpoints:
    """`GET /health/live` and `GET /health/ready`, answered ahead of the framework's routing: the
    gateway asks every replica (every 3 s then, every 10 s since ADR 61), and through FastAPI's
    routing each answer cost about 2 ms of CPU, most of what an idle service spent then. Readiness
    runs each check (its real dependencies) and answers 503 when one is down or fails."""

    PATHS = ("/health/live", "/health/ready")

    def __init__(self, app: Any, checks: dict[str, ReadinessCheck]) -> None:
        self.app = app
        self.checks = checks

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in self.PATHS:
            return await self.app(scope, receive, send)
        if scope["method"] != "GET":
            response = problem_response(
                Problem(405, "Method Not Allowed", "only GET is allowed here", headers={"Allow": "GET"})
            )
        elif scope["path"] == "/health/live":
            response = JSON({"status": "up"})
        else:
            response = await self.ready()
        await response(scope, receive, send)

    async def ready(self) -> Response:
        results = {}
        for name, check in self.checks.items():
            try:
                results[name] = "up" if await check() else "down"
            except Exception:
                results[name] = "down"
        ok = all(v == "up" for v in results.values())
        return JSON({"status": "up" if ok else "down", "checks": results}, status_code=200 if ok else 503)
