"""Inventory's client of another service: Order, asked before a timeout is compensated."""

from __future__ import annotations

from tinysaga.contracts import routes
from tinysaga.platform.calls import Unreachable, get_from_any
from tinysaga.platform.service import Runtime


class OrderClient:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def timed_out(self, order_id: str) -> bool:
        """Did Order's sweeper time this order out? A reservation is released (or blocked) only
        then: an ORDER_TIMED_OUT for an order that is placed, still in flight or unknown is not
        Order's, and changes nothing. Unreachable (an OSError: waited out) when Order does not
        answer."""
        status, body = await get_from_any(self.rt, "order", routes.path(routes.ORDER_TIMED_OUT, orderId=order_id))
        if status == 404:
            return False
        if status != 200:
            raise Unreachable(f"order answered {status}")
        return bool(body.get("timedOut"))
