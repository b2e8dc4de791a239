"""Order's view of other services, over HTTP: the catalogue (Inventory), the balance (Wallet), each
participant's records of an order (the saga map); and the reading of the watched orders' versions
that wakes the live status streams."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg

from tinysaga.contracts import records, routes
from tinysaga.contracts.ids import is_product_id
from tinysaga.platform.calls import Unreachable, get_from_any
from tinysaga.platform.money import money
from tinysaga.platform.service import Runtime
from tinysaga.platform.web import Problem

log = logging.getLogger("tinysaga.order")


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
    """Wakes the live streams of orders when their order changes (ADR 53). While any stream is
    open, one query every `poll` seconds reads the versions of the orders watched (`versions`), and
    each stream whose order is past the version it last saw is woken; with none open, nothing is
    read. The saga's transitions send no NOTIFY for it: a committing transaction that NOTIFYs holds
    PostgreSQL's cluster-wide notification lock through its commit, so those commits (and their WAL
    flushes) go one at a time, every order's, for the few that someone is watching."""

    def __init__(self, poll: float = 0.2) -> None:
        self.poll = poll
        self.waiters: dict[str, dict[asyncio.Event, int]] = defaultdict(dict)  # order -> stream -> version seen
        self._watched = asyncio.Event()

    def watch(self, order_id: str) -> asyncio.Event:
        """An event set once the order is past the version this stream last told (`saw`)."""
        wake = asyncio.Event()
        self.waiters[order_id][wake] = 0
        self._watched.set()
        return wake

    def saw(self, order_id: str, wake: asyncio.Event, version: int) -> None:
        """The stream has told its client about the order up to `version`."""
        if wake in self.waiters.get(order_id, {}):
            self.waiters[order_id][wake] = version

    def unwatch(self, order_id: str, wake: asyncio.Event) -> None:
        self.waiters[order_id].pop(wake, None)
        if not self.waiters[order_id]:
            self.waiters.pop(order_id, None)

    def changed(self, versions: dict[str, int]) -> None:
        """Wake each stream whose order is past the version it saw."""
        for order_id, version in versions.items():
            for wake, seen in self.waiters.get(order_id, {}).items():
                if version > seen:
                    wake.set()

    async def run(self, versions: Callable[[list[str]], Awaitable[dict[str, int]]]) -> None:
        """The background task: `versions` reads the current version of each order id given."""
        while True:
            if not self.waiters:
                self._watched.clear()
                await self._watched.wait()
            try:
                self.changed(await versions(list(self.waiters)))
            except (OSError, asyncpg.PostgresError) as e:  # the streams wait; the next reading retries
                log.warning("could not read the watched orders' versions: %s", e)
                await asyncio.sleep(1.0)
            await asyncio.sleep(self.poll)
