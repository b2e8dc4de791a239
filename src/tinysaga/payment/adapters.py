"""The Wallet client: the only synchronous call of the saga. Each attempt has a timeout; attempts are
retried with exponential backoff and full jitter, within a total deadline. Debit and refund are
idempotent by orderId on the Wallet side, so a retry after a lost response is never a second charge."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import aiohttp

from tinysaga.platform.settings import Settings

log = logging.getLogger("tinysaga.payment.wallet")


class WalletUnavailable(Exception):
    """The wallet did not give an answer within the attempts and deadline."""


class WalletClient:
    def __init__(self, settings: Settings, http: aiohttp.ClientSession) -> None:
        self.s = settings
        self.http = http
        self.base = settings.service_url("wallet")

    def backoff(self, attempt: int) -> float:
        cap = self.s.wallet_backoff_base_seconds * 2 ** (attempt - 1)
        return random.uniform(0, cap)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + self.s.wallet_deadline_seconds
        last = "no attempt"
        for attempt in range(1, self.s.wallet_attempts + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            timeout = aiohttp.ClientTimeout(total=min(self.s.wallet_attempt_timeout_seconds, remaining))
            try:
                async with self.http.post(self.base + path, json=body, timeout=timeout) as r:
                    if r.status == 200:
                        return await r.json()
                    last = f"HTTP {r.status}: {(await r.text())[:200]}"
                if 400 <= r.status < 500:
                    raise WalletUnavailable(f"wallet refused the request: {last}")
            except (aiohttp.ClientError, TimeoutError) as e:
                last = f"{type(e).__name__}: {e}"
            log.warning("wallet %s attempt %d failed: %s", path, attempt, last)
            pause = min(self.backoff(attempt), max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(pause)
        raise WalletUnavailable(last)

    async def debit_many(self, debits: list[dict[str, str]]) -> list[dict[str, Any]]:
        """Many debits in one call (one wallet transaction); the answers in the same order, each as
        `debit` gives it, or `{error}` for one the wallet refused."""
        body = await self._post("/internal/payments/batch", {"debits": debits})
        return body["results"]

    async def refund(self, order_id: str, user_id: str, reason: str) -> dict[str, Any]:
        return await self._post("/internal/refunds", {"orderId": order_id, "userId": user_id, "reason": reason})
