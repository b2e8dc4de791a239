"""Inventory's wiring: the repository, the Order client, the handlers by step, the routes."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI

from tinysaga.inventory.adapters import OrderClient
from tinysaga.inventory.api import router
from tinysaga.inventory.handlers import handlers
from tinysaga.inventory.repository import InventoryRepository
from tinysaga.platform.service import Runtime, create_service_app
from tinysaga.platform.settings import Settings


@dataclass(frozen=True)
class InventoryDeps:
    """What the routes use (`api.deps`)."""

    catalogue: InventoryRepository  # on the pool
    currency: str


def setup(rt: Runtime) -> None:
    rt.deps = InventoryDeps(InventoryRepository(rt.pool), rt.settings.currency)
    # Reservations are batched (the saga definition says so); a timeout's release asks Order first
    # (over HTTP, so not inside a batch's transaction) and goes one by one, in its place in the
    # partition's order.
    rt.consume(handlers(InventoryRepository.of, OrderClient(rt)))


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app("inventory", setup, routers=[router], settings=settings)
