"""Calls from one service to another over loopback HTTP (with the internal secret the Runtime's
session carries): a GET answered by any replica. The routes themselves are in
`contracts.routes`; each service's adapters say which it calls."""

from __future__ import annotations

import random
from typing import Any

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
