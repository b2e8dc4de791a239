"""Payment's clients against a fake HTTP session (no I/O): the wallet's retries (attempts, backoff,
deadline, a 4xx not retried) and Order's "did you ask for this compensation?"."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from tinysaga.contracts import events as ev
from tinysaga.contracts import routes
from tinysaga.payment.adapters import OrderClient, WalletClient, WalletUnavailable
from tinysaga.platform.calls import Unreachable
from tinysaga.platform.settings import Settings


@dataclass
class Reply:
    status: int
    body: Any = None

    async def json(self, content_type: str | None = "application/json") -> Any:
        return self.body

    async def text(self) -> str:
        return str(self.body)


@dataclass
class FakeHttp:
    """Answers each request with the next of `replies` (an exception is raised instead)."""

    replies: list[Reply | Exception]
    calls: list[tuple[str, Any, Any]] = field(default_factory=list)

    @asynccontextmanager
    async def _answer(self, url: str, body: Any, timeout: Any) -> AsyncIterator[Reply]:
        self.calls.append((url, body, timeout))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        yield reply

    def post(self, url: str, json: Any = None, timeout: Any = None) -> Any:
        return self._answer(url, json, timeout)

    def get(self, url: str, timeout: Any = None, allow_redirects: bool = True) -> Any:
        return self._answer(url, None, timeout)


def client(replies: list[Reply | Exception], **settings: Any) -> tuple[WalletClient, FakeHttp, list[float]]:
    http, pauses = FakeHttp(replies), []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    s = Settings(**{"wallet_attempts": 3, "wallet_backoff_base_seconds": 0.1, **settings})
    return WalletClient(s, http, sleep=sleep), http, pauses  # type: ignore[arg-type]


DOWN = aiohttp.ClientConnectionError("connection refused")


async def test_a_5xx_or_no_answer_is_retried_with_a_jittered_backoff() -> None:
    wallet, http, pauses = client([Reply(503, "busy"), DOWN, Reply(200, {"results": [{"status": "COMPLETED"}]})])
    assert await wallet.debit_many([{"orderId": "o1"}]) == [{"status": "COMPLETED"}]
    assert len(http.calls) == 3
    assert http.calls[0][0].endswith(routes.WALLET_PAYMENTS_BATCH) and http.calls[0][1] == {
        "debits": [{"orderId": "o1"}]
    }
    assert len(pauses) == 2 and 0 <= pauses[0] <= 0.1 and 0 <= pauses[1] <= 0.2


async def test_a_4xx_is_not_retried() -> None:
    wallet, http, pauses = client([Reply(409, "charged to another wallet")])
    with pytest.raises(WalletUnavailable, match="wallet refused the request: HTTP 409: charged to another wallet"):
        await wallet.refund("o1", "u1", "out of stock")
    assert len(http.calls) == 1 and not pauses
    assert http.calls[0][0].endswith(routes.WALLET_REFUNDS)
    assert http.calls[0][1] == {"orderId": "o1", "userId": "u1", "reason": "out of stock"}


async def test_it_gives_up_after_the_attempts_without_a_last_pause() -> None:
    wallet, http, pauses = client([DOWN])
    with pytest.raises(WalletUnavailable, match="ClientConnectionError: connection refused") as e:
        await wallet.refund("o1", "u1", "")
    assert type(e.value) is WalletUnavailable
    assert len(http.calls) == 3 and len(pauses) == 2


async def test_no_pause_runs_past_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "uniform", lambda a, b: b)  # the longest pause the backoff allows
    wallet, http, pauses = client([DOWN], wallet_backoff_base_seconds=5.0, wallet_deadline_seconds=1.0)
    with pytest.raises(WalletUnavailable):
        await wallet.refund("o1", "u1", "")
    assert len(http.calls) == 1 and not pauses


async def test_each_attempt_has_its_timeout_within_the_deadline() -> None:
    wallet, http, _ = client([Reply(200, {"status": "REFUNDED"})], wallet_attempt_timeout_seconds=2.0)
    await wallet.refund("o1", "u1", "")
    assert http.calls[0][2].total == 2.0
    wallet, http, _ = client([Reply(200, {"status": "REFUNDED"})], wallet_deadline_seconds=0.5)
    await wallet.refund("o1", "u1", "")
    assert 0 < http.calls[0][2].total <= 0.5


def orders(replies: list[Reply | Exception]) -> tuple[OrderClient, FakeHttp]:
    http = FakeHttp(replies)
    rt = SimpleNamespace(settings=Settings(order_replicas=2), http=http)
    return OrderClient(rt), http  # type: ignore[arg-type]


def requested(order_id: str, name: str, asked: bool) -> dict[str, object]:
    return {"orderId": order_id, "eventName": name, "requested": asked}


@pytest.mark.parametrize("name", [ev.ORDER_TIMED_OUT, ev.ORDER_CANCEL_REQUESTED])
async def test_order_says_whether_it_asked_for_the_compensation(name: str) -> None:
    for reply, expected in (
        (Reply(200, requested("o/1", name, True)), True),
        (Reply(200, requested("o/1", name, False)), False),
    ):
        c, http = orders([reply])
        assert await c.requested("o/1", name) is expected
        assert http.calls[0][0].endswith(f"/internal/orders/o%2F1/requested/{name}")
    c, _ = orders([Reply(404, {})])
    assert await c.requested("o1", name) is False  # an order Order does not know was not timed out or canceled


async def test_order_not_answering_is_an_outage() -> None:
    c, _ = orders([Reply(409, {})])
    with pytest.raises(Unreachable, match="order answered 409"):
        await c.requested("o1", ev.ORDER_TIMED_OUT)
    c, http = orders([Reply(503, {})])
    with pytest.raises(Unreachable):
        await c.requested("o1", ev.ORDER_CANCEL_REQUESTED)
    assert len(http.calls) == 2  # every replica was asked
