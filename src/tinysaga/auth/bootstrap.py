"""Auth's wiring: the account repository, the signing key, the admin account, the routes."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import FastAPI

from tinysaga.auth.accounts import ensure_admin
from tinysaga.auth.api import router
from tinysaga.auth.repository import AccountRepository
from tinysaga.platform.service import Runtime, create_service_app
from tinysaga.platform.settings import Settings


@dataclass(frozen=True)
class AuthDeps:
    """What the routes use (`api.deps`)."""

    accounts: AccountRepository
    private_key: str = field(repr=False)  # PEM, signs the access tokens (RS256)
    issuer: str
    token_ttl: int  # seconds


async def setup(rt: Runtime) -> None:
    s = rt.settings
    accounts = AccountRepository(rt.pool, s.user_topic)
    private_key = (s.secrets_dir / "jwt_private.pem").read_text()
    rt.deps = AuthDeps(accounts, private_key, s.jwt_issuer, s.token_ttl_seconds)
    await ensure_admin(accounts, s.admin_email, s.effective_admin_password)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app("auth", setup, routers=[router], settings=settings)
