"""The API's documentation through the gateway: the merged OpenAPI document at /api/openapi.json
(what a client of the gateway really sees) and Swagger UI at /api/docs, with its assets served
locally (no CDN); both public, read-only."""

from __future__ import annotations

import httpx

from tests.e2e.test_foundation import assert_problem
from tinysaga.platform.openapi import gateway_openapi
from tinysaga.platform.settings import Settings


def test_the_gateway_serves_the_merged_openapi_document(gateway: str, settings: Settings) -> None:
    r = httpx.get(gateway + "/api/openapi.json", timeout=30)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    paths = set(doc["paths"])
    assert {"/api/orders", "/api/orders/{order_id}", "/api/wallet", "/api/products", "/api/auth/token"} <= paths
    assert not [p for p in paths if not p.startswith("/api/")], "only the public routes"
    assert doc["paths"] == gateway_openapi(settings)["paths"]


def test_the_docs_page_is_swagger_ui_over_that_document_with_local_assets(gateway: str) -> None:
    page = httpx.get(gateway + "/api/docs", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/api/openapi.json" in page.text and "cdn" not in page.text.lower()
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        r = httpx.get(f"{gateway}/api/docs/assets/{asset}", timeout=30)
        assert r.status_code == 200 and len(r.content) > 10_000, asset


def test_the_documentation_is_read_only(gateway: str) -> None:
    assert_problem(httpx.post(gateway + "/api/openapi.json", json={}), 401)
    assert_problem(httpx.get(gateway + "/api/docsx"), 401)
