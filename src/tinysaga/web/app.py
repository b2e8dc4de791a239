"""The storefront: static pages that use the public API through the same origin (cookie auth); the
API's documentation: the merged OpenAPI document of every service as the gateway serves it
(`/api/openapi.json`) and Swagger UI over it (`/api/docs`, its assets installed with the Python
packages, no CDN); and the figures of the Operations page (`/api/admin/operations`, the admin only),
read from every service as `./tiny-saga top` reads them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import fastapi_offline
import httpx
from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from tinysaga.platform import operations, web
from tinysaga.platform.logging import setup_logging
from tinysaga.platform.openapi import gateway_openapi
from tinysaga.platform.secrets import internal_secret
from tinysaga.platform.settings import Settings, get_settings

STATIC = Path(__file__).parent / "static"
SWAGGER_ASSETS = Path(fastapi_offline.__file__).parent / "static"
OPENAPI_TTL = 30.0  # seconds a merged document is served before it is built again
OPERATIONS_TTL = 1.0  # seconds a snapshot of the operations figures is served to every admin asking


class OpenApiDocument:
    """The gateway's OpenAPI document, merged from the services' own (fetched over loopback), kept
    for OPENAPI_TTL seconds; built once at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.doc: dict[str, Any] | None = None
        self.built_at = 0.0
        self.lock = asyncio.Lock()

    async def get(self) -> dict[str, Any]:
        async with self.lock:
            if self.doc is None or time.monotonic() - self.built_at > OPENAPI_TTL:
                self.doc = await asyncio.to_thread(gateway_openapi, self.settings)
                self.built_at = time.monotonic()
            return self.doc


class OperationsFigures:
    """The operations view's figures (`platform.operations`), read at most once a OPERATIONS_TTL
    however many admins watch the page, and once at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.http: httpx.AsyncClient | None = None
        self.snapshot: dict[str, Any] | None = None
        self.read_at = 0.0
        self.lock = asyncio.Lock()

    async def get(self, admin_id: str) -> dict[str, Any]:
        async with self.lock:
            if self.snapshot is None or time.monotonic() - self.read_at > OPERATIONS_TTL:
                assert self.http is not None, "the app's lifespan opens the client"
                self.snapshot = (await operations.collect(self.settings, self.http, admin_id)).to_json()
                self.read_at = time.monotonic()
            return self.snapshot


async def _always() -> bool:
    return True


async def page(page: str) -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    setup_logging("web", settings.log_level)
    figures = OperationsFigures(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient() as http:
            figures.http = http
            yield

    app = FastAPI(title="Tiny-Saga storefront", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    web.install(app, internal_secret=internal_secret(settings), max_body=settings.max_body_bytes)
    web.add_health(app, {"static": _always})
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/api/docs/assets", StaticFiles(directory=SWAGGER_ASSETS), name="docs-assets")
    document = OpenApiDocument(settings)

    async def openapi_json() -> web.JSON:
        return web.JSON(await document.get(), headers={"Cache-Control": "no-cache"})

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/api/openapi.json",
            title="Tiny-Saga API",
            swagger_js_url="/api/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/api/docs/assets/swagger-ui.css",
            swagger_favicon_url="/api/docs/assets/favicon.png",
        )

    async def operations_figures(admin: web.Identity = Depends(web.admin_user)) -> web.JSON:
        """The Operations page's figures (what `./tiny-saga top` shows), for the admin only."""
        return web.JSON(await figures.get(admin.user_id), headers={"Cache-Control": "no-store"})

    app.add_api_route("/api/admin/operations", operations_figures, methods=["GET"], include_in_schema=False)
    app.add_api_route("/api/openapi.json", openapi_json, methods=["GET"], include_in_schema=False)
    app.add_api_route("/api/docs", docs, methods=["GET"], include_in_schema=False)
    app.add_api_route("/{page:path}", page, methods=["GET"], include_in_schema=False)
    return app
