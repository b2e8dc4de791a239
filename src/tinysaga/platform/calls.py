"""Calls from one service to another over loopback HTTP (with the internal secret the Runtime's
session carries): a GET answered by any replica, and the one question two services ask Order."""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import quote

import aiohttp

from tinysaga.platform.service import Runtime


class Unreachable(OSError):
    """No replica of the service answered. An OSError, so a consumer waits it out (an outage, not
    a bad message)."""


async def get_from_any(rt: Runtime, service: str, path: str) -> tuple[int, Any]:
    """GET (status, JSON) from any healthy replica: try them all, starting from a random one."""
    n = rt.settings.replicas(service)
    start = random.randrange(n)
    last: Exception | None = None
    for i in range(n):
        url = rt.settings.service_url(service, (start + i) % n + 1) + path
        try:
            async with rt.http.get(url, timeout=aiohttp.ClientTimeout(total=3), allow_redirects=False) as r:
                if r.status < 500:
                    return r.status, await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            last = e
    raise Unreachable(f"no replica of {service} answered: {last}")


async def order_timed_out(rt: Runtime, order_id: str) -> bool:
    """Did Order's sweeper time this order out? Compensation for ORDER_TIMED_OUT (a refund, a
    released reservation, a void) happens only then: an ORDER_TIMED_OUT for an order that is
    placed, still in flight or unknown is not Order's, and changes nothing."""
    status, body = await get_from_any(rt, "order", f"/internal/orders/{quote(order_id, safe='')}/timed-out")
    if status == 404:
        return False
    if status != 200:
        raise Unreachable(f"order answered {status}")
    return bool(body.get("timedOut"))
