"""Payment's clients of other services: the Wallet (the only synchronous call of the saga) and Order
(did it ask for this compensation?). Each is behind a small Protocol, so the handlers can take fakes.

Wallet calls: each attempt has a timeout; attempts are retried with exponential backoff and full
jitter, within a total deadline; a 4xx answer is not retried. Debit and refund are idempotent by
orderId on the Wallet side, so a retry after a lost response is never a second charge."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp
from prometheus_client import Counter
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, stop_before_delay

from tinysaga.contracts import routes
from tinysaga.platform.calls import Unreachable, get_from_any
from tinysaga.platform.retry import wallet_backoff
from tinysaga.platform.service import Runtime
from tinysaga.platform.settings import Settings

log = logging.getLogger("tinysaga.payment.wallet")

WALLET_RETRIES = Counter(
    "tinysaga_wallet_retries_total", "wallet calls attempted again after an attempt failed", ["call"]
)
WALLET_GAVE_UP = Counter(
    "tinysaga_wallet_unavailable_total", "wallet calls given up (no answer within the attempts and deadline)", ["call"]
)


class WalletUnavailable(Exception):
    """The wallet did not give an answer within the attempts and deadline (or refused the request)."""


class _AttemptFailed(WalletUnavailable):
    """One attempt got no answer, or a 5xx: worth another attempt."""


class Wallet(Protocol):
    async def debit_many(self, debits: list[dict[str, str]]) -> list[dict[str, Any]]: ...

    async def refund(self, order_id: str, user_id: str, reason: str) -> dict[str, Any]: ...


class Orders(Protocol):
    async def requested(self, order_id: str, event_name: str) -> bool: ...


class WalletClient:
    def __init__(
        self,
        settings: Settings,
        http: aiohttp.ClientSession,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.s = settings
        self.http = http
        self.base = settings.service_url("wallet")
        self.sleep = sleep

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        s = self.s
        call = "refund" if path == routes.WALLET_REFUNDS else "debit"
        deadline = time.monotonic() + s.wallet_deadline_seconds
        last = "no attempt"

        async def once(attempt: int) -> dict[str, Any]:
            nonlocal last
            remaining = deadline - time.monotonic()
            if remaining <= 0:  # no attempt starts past the deadline
                raise WalletUnavailable(last)
            timeout = aiohttp.ClientTimeout(total=min(s.wallet_attempt_timeout_seconds, remaining))
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
            raise _AttemptFailed(last)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(s.wallet_attempts) | stop_before_delay(s.wallet_deadline_seconds),
            wait=wallet_backoff(s.wallet_backoff_base_seconds, s.wallet_deadline_seconds),
            retry=retry_if_exception_type(_AttemptFailed),
            before_sleep=lambda _: WALLET_RETRIES.labels(call).inc(),
            sleep=self.sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    answer = await once(attempt.retry_state.attempt_number)
        except _AttemptFailed as e:
            WALLET_GAVE_UP.labels(call).inc()
            raise WalletUnavailable(str(e)) from None
        except WalletUnavailable:
            WALLET_GAVE_UP.labels(call).inc()
            raise
        return answer

    async def debit_many(self, debits: list[dict[str, str]]) -> list[dict[str, Any]]:
        """Many debits in one call (one wallet transaction); the answers in the same order, each
        `{transactionId, status, amount}`, or `{error}` for one the wallet refused."""
        body = await self._post(routes.WALLET_PAYMENTS_BATCH, {"debits": debits})
        return body["results"]

    async def refund(self, order_id: str, user_id: str, reason: str) -> dict[str, Any]:
        """Give back what the order was charged (or record that nothing was, so a late debit is
        refused): `{transactionId, status, amount}`."""
        return await self._post(routes.WALLET_REFUNDS, {"orderId": order_id, "userId": user_id, "reason": reason})


class OrderClient:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def requested(self, order_id: str, event_name: str) -> bool:
        """Did Order ask for this compensation (its history holds `event_name`, ORDER_TIMED_OUT or
        ORDER_CANCEL_REQUESTED)? Compensation happens only then: one for an order Order did not
        time out or cancel, or does not know, is not Order's. Raises Unreachable (an outage: the
        consumer waits it out) when Order does not answer."""
        route = routes.path(routes.ORDER_REQUESTED, orderId=order_id, eventName=event_name)
        status, body = await get_from_any(self.rt, "order", route)
        if status == 404:
            return False
        if status != 200:
            raise Unreachable(f"order answered {status}")
        return bool(body.get("requested"))
