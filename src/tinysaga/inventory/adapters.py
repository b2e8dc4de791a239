"""Inventory's client of another service: Order, asked before a timeout or a cancel is compensated."""

from __future__ import annotations

from tinysaga.contracts import routes
from tinysaga.platform.calls import Unreachable, get_from_any
from tinysaga.platform.service import Runtime


class OrderClient:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def requested(self, order_id: str, event_name: str) -> bool:
        """Did Order ask for this compensation (its history holds `event_name`, ORDER_TIMED_OUT or
        ORDER_CANCEL_REQUESTED)? A reservation is released (or blocked) only then: one for an order
        Order did not time out or cancel, or does not know, changes nothing. Unreachable (an
        OSError: waited out) when Order does not answer."""
        route = routes.path(routes.ORDER_REQUESTED, orderId=order_id, eventName=event_name)
        status, body = await get_from_any(self.rt, "order", route)
        if status == 404:
            return False
        if status != 200:
            raise Unreachable(f"order answered {status}")
        return bool(body.get("requested"))
