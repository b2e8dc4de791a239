"""Order's view of other services, over HTTP: the catalogue (Inventory), the balance (Wallet), each
participant's records of an order (the saga map); and the LISTEN connection that wakes the live
status streams."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg

from tinysaga.contracts import records, routes
from tinysaga.contracts.ids import is_product_id
from tinysaga.order.repository import STATUS_CHANNEL
from tinysaga.platform.calls import Unreachable, get_from_any
from tinysaga.platform.money import money
from tinysaga.platform.service import Runtime
from tinysaga.platform.web import Problem


async def _get(rt: Runtime, service: str, path: str) -> tuple[int, Any]:
    try:
        return await get_from_any(rt, service, path)
    except Unreachable as e:
        raise Problem(503, "Service Unavailable", f"the {service} service is unavailable") from e


@dataclass(frozen=True)
class Product:
    price: Decimal
    available_count: int


class CatalogueClient:
    """A product's price and stock, from Inventory (404 for no such product, 503 when unreachable)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def product(self, product_id: str) -> Product:
        if not is_product_id(product_id):  # no such product can exist; and never a path like "." or ".."
            raise Problem(404, "Not Found", f"no product {product_id!r}")
        status, body = await _get(self.rt, "inventory", routes.path(routes.PRODUCT, productId=product_id))
        if status in (404, 422):
            raise Problem(404, "Not Found", f"no product {product_id!r}")
        if status != 200:
            raise Problem(503, "Service Unavailable", "the catalogue did not answer")
        return Product(price=money(str(body["price"])), available_count=body["availableCount"])


class WalletClient:
    """A user's balance, from Wallet (503 when it does not answer)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def balance(self, user_id: str) -> Decimal:
        status, body = await _get(self.rt, "wallet", routes.path(routes.WALLET_BALANCE, userId=user_id))
        if status != 200:
            raise Problem(503, "Service Unavailable", "the wallet did not answer")
        return money(str(body["balance"]))


class RecordsClient:
    """A participant's records of an order, from any of its replicas (raises Unreachable when none
    answers, records.InvalidRecords for an answer that is not its records of the order)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def __call__(self, service: str, order_id: str) -> list[records.Record]:
        status, body = await get_from_any(self.rt, service, routes.path(routes.ORDER_RECORDS, orderId=order_id))
        if status != 200:
            raise records.InvalidRecords(f"{service} answered {status}")
        return records.parse(service, order_id, body)


class StatusFanout:
    """One LISTEN connection per process; wakes the streams waiting on an order."""

    def __init__(self) -> None:
        self.waiters: dict[str, set[asyncio.Event]] = defaultdict(set)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for w in self.waiters.get(payload, ()):
            w.set()

    def watch(self, order_id: str) -> asyncio.Event:
        """An event set at each change of the order (and when the listener reconnects)."""
        wake = asyncio.Event()
        self.waiters[order_id].add(wake)
        return wake

    def unwatch(self, order_id: str, wake: asyncio.Event) -> None:
        self.waiters[order_id].discard(wake)
        if not self.waiters[order_id]:
            self.waiters.pop(order_id, None)

    async def run(self, dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.add_listener(STATUS_CHANNEL, self._on_notify)
            while not conn.is_closed():
                await asyncio.sleep(5)
                await conn.execute("SELECT 1")
        finally:
            await conn.close()
            for ws in self.waiters.values():  # a reconnecting stream re-reads the order
                for w in ws:
                    w.set()
