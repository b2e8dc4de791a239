"""Wallet's composition: the routes' dependencies and the `open_wallet` step on the user topic."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from fastapi import FastAPI

from tinysaga.contracts import saga
from tinysaga.platform.service import Runtime, create_service_app
from tinysaga.platform.settings import Settings
from tinysaga.wallet.api import router
from tinysaga.wallet.handlers import WalletHandlers
from tinysaga.wallet.repository import WalletRepository


@dataclass(frozen=True)
class WalletDeps:
    """What the routes are given (`api.deps`)."""

    pool: asyncpg.Pool
    currency: str


def setup(rt: Runtime) -> None:
    rt.deps = WalletDeps(rt.pool, rt.settings.currency)
    handlers = WalletHandlers(repo=lambda uow: WalletRepository(uow.conn), currency=rt.settings.currency)
    rt.consume(handlers.by_step(), topic=saga.USER_TOPIC)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app("wallet", setup, routers=[router], settings=settings)
