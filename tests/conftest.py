"""Fixtures. Tests marked `stack` use the stack `./tiny-saga test` started (its settings come from
the environment it sets); unit tests need nothing running."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.support import ApiUser, Stack, register
from tinysaga.platform.settings import Settings, get_settings

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "/unit/" not in str(item.fspath):
            item.add_marker(pytest.mark.stack)
    # The unit tests first: they fail fastest, and their async tests need the session's event loop
    # before the browser tests' Playwright (sync API) has left one running on the main thread.
    items.sort(key=lambda item: "/unit/" not in str(item.fspath))


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def gateway(settings: Settings) -> str:
    base = f"http://127.0.0.1:{settings.gateway_port}"
    try:
        httpx.get(base + "/health", timeout=3).raise_for_status()
    except httpx.HTTPError as e:
        pytest.fail(f"the test stack is not running at {base} (run the suite with ./tiny-saga test): {e}")
    return base


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Stack:
    return Stack(settings)


@pytest.fixture
def user(gateway: str) -> ApiUser:
    return register(gateway)


@pytest.fixture
def rich_user(gateway: str) -> ApiUser:
    u = register(gateway, tag="rich")
    u.deposit(5000)
    return u


@pytest.fixture(scope="session")
def admin(gateway: str, settings: Settings) -> ApiUser:
    from tests.support import login

    return login(ApiUser(gateway, settings.admin_email, settings.effective_admin_password))


@pytest.fixture
def product(admin: ApiUser) -> callable:
    """Make a fresh product with the given stock and price."""

    def make(stock: int, price: str = "10.00") -> str:
        import uuid

        pid = f"test-{uuid.uuid4().hex[:10]}"
        r = admin.post(
            "/api/admin/products",
            {"productId": pid, "name": f"Test {pid}", "type": "test", "price": float(price), "availableCount": stock},
        )
        assert r.status_code == 201, r.text
        return pid

    return make


@pytest.fixture(scope="session", autouse=True)
def _artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    os.environ.setdefault("TINYSAGA_TEST_ARTIFACTS", str(ARTIFACTS))
    return ARTIFACTS
