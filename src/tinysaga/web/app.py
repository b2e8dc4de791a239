"""The storefront: static pages that use the public API through the same origin (cookie auth); and
the API's documentation: the merged OpenAPI document of every service as the gateway serves it
(`/api/openapi.json`) and Swagger UI over it (`/api/docs`, its assets installed with the Python
packages, no CDN)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from tinysaga.platform import web
from tinysaga.platform.logging import setup_logging
from tinysaga.platform.openapi import gateway_openapi
from tinysaga.platform.secrets import internal_secret
from tinysaga.platform.settings import Settings, get_settings

STATIC = Path(__file__).parent / "static"
SWAGGER_ASSETS = Path(fastapi_offline.__file__).parent / "static"
OPENAPI_TTL = 30.0  # seconds a merged document is served before it is built again


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


async def _always() -> bool:
    return True


async def page(page: str) -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    setup_logging("web", settings.log_level)
    app = FastAPI(title="Tiny-Saga storefront", docs_url=None, redoc_url=None, openapi_url=None)
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

    app.add_api_route("/api/openapi.json", openapi_json, methods=["GET"], include_in_schema=False)
    app.add_api_route("/api/docs", docs, methods=["GET"], include_in_schema=False)
    app.add_api_route("/{page:path}", page, methods=["GET"], include_in_schema=False)
    return app
