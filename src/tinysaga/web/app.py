"""The storefront: static pages that use the public API through the same origin (cookie auth)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from tinysaga.platform import web
from tinysaga.platform.logging import setup_logging
from tinysaga.platform.secrets import internal_secret
from tinysaga.platform.settings import get_settings

STATIC = Path(__file__).parent / "static"

settings = get_settings()
setup_logging("web", settings.log_level)
app = FastAPI(title="Tiny-Saga storefront", docs_url=None, redoc_url=None, openapi_url=None)
web.install(app, internal_secret=internal_secret(settings), max_body=settings.max_body_bytes)


async def _always() -> bool:
    return True


web.add_health(app, {"static": _always})
app.mount("/static", StaticFiles(directory=STATIC), name="static")


@app.get("/{page:path}", include_in_schema=False)
async def page(page: str) -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
