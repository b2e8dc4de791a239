"""A new order the bound turns away is answered ahead of the framework (order.api.TurnAwayEarly,
ADR 73): the route's answer for what it would turn away, and everything else handed on as it came."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from tinysaga.order import domain
from tinysaga.order.api import TurnAwayEarly

VALID = orjson.dumps({"productId": "P1", "productQuantity": 2, "paymentType": "WALLET"})


class Bound:
    def __init__(self, refused: domain.Overloaded | None) -> None:
        self.refused, self.asked = refused, 0

    async def refusal(self) -> domain.Overloaded | None:
        self.asked += 1
        return self.refused


class Route:
    """The app behind: what it was called with, and the whole body it received."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.calls.append(body)
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


FULL = domain.Overloaded(200, 200, retry_after=2)


async def call(
    bound: Bound,
    chunks: list[bytes] = [VALID],  # noqa: B006 - never changed
    *,
    method: str = "POST",
    path: str = "/api/orders",
    headers: dict[bytes, bytes] | None = None,
) -> tuple[Route, list[dict[str, Any]]]:
    route = Route()
    deps = SimpleNamespace(create_order=SimpleNamespace(bound=bound))
    app = SimpleNamespace(state=SimpleNamespace(rt=SimpleNamespace(deps=deps)))
    given = {b"x-user-id": b"u1", b"content-type": b"application/json"} if headers is None else headers
    scope = {"type": "http", "method": method, "path": path, "headers": list(given.items()), "app": app}
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await TurnAwayEarly(route)(scope, receive, send)
    return route, sent


def turned_away(reason: str) -> float:
    return REGISTRY.get_sample_value("tinysaga_orders_turned_away_total", {"reason": reason}) or 0.0


async def test_an_order_the_bound_turns_away_is_answered_here_as_the_route_would() -> None:
    before = turned_away("bound")
    route, sent = await call(Bound(FULL))
    assert route.calls == []
    start, body = sent
    assert start["status"] == 503
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"retry-after"] == b"2"
    problem = orjson.loads(body["body"])
    assert problem["type"] == "urn:tinysaga:problem:overloaded" and problem["status"] == 503
    assert "no order was created" in problem["detail"]
    assert problem["limit"] == "bound" and problem["inFlight"] == 200 and "expectedWaitSeconds" not in problem
    assert turned_away("bound") == before + 1


async def test_the_wait_rule_is_counted_and_answered_as_such() -> None:
    before = turned_away("wait")
    _, (_, body) = await call(Bound(domain.Overloaded(60, 200, retry_after=1, wait=0.8333)))
    assert turned_away("wait") == before + 1
    problem = orjson.loads(body["body"])
    assert (problem["limit"], problem["inFlight"], problem["expectedWaitSeconds"]) == ("wait", 60, 0.83)


async def test_an_order_that_fits_goes_on_with_its_body() -> None:
    bound = Bound(None)
    route, sent = await call(bound)
    assert bound.asked == 1 and route.calls == [VALID] and sent[0]["status"] == 202


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        orjson.dumps({"productId": "P1", "productQuantity": 0, "paymentType": "WALLET"}),
        orjson.dumps({"productId": "P1", "productQuantity": 2, "paymentType": "CARD"}),
        orjson.dumps([1, 2]),
    ],
)
async def test_a_body_the_route_would_refuse_goes_on_to_it_even_when_the_bound_is_full(body: bytes) -> None:
    before = turned_away("bound")
    route, _ = await call(Bound(FULL), [body])
    assert route.calls == [body]  # the route answers 400 or 422, as it always has
    assert turned_away("bound") == before


async def test_a_body_in_several_parts_reaches_the_route_whole() -> None:
    invalid = b'{"productId": "P1", "productQuantity": 2, "paymentType": "CASH"}'
    route, _ = await call(Bound(FULL), [invalid[:10], invalid[10:30], invalid[30:]])
    assert route.calls == [invalid]
    route, sent = await call(Bound(FULL), [VALID[:5], VALID[5:]])
    assert route.calls == [] and sent[0]["status"] == 503


async def test_a_body_over_the_limit_goes_on_to_the_route_unread_past_it() -> None:
    big = [b" " * 40000, b" " * 40000, VALID]
    route, _ = await call(Bound(FULL), big)
    assert route.calls == [b"".join(big)]


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/api/orders", None),
        ("POST", "/api/orders/x/cancel", None),
        ("POST", "/api/orders", {b"x-user-id": b"u1", b"idempotency-key": b"k1"}),  # a retry gets its order
        ("POST", "/api/orders", {}),  # no user: the route's 401
    ],
)
async def test_other_requests_go_on_without_asking_the_bound(
    method: str, path: str, headers: dict[bytes, bytes] | None
) -> None:
    bound = Bound(FULL)
    route, _ = await call(bound, method=method, path=path, headers=headers)
    assert bound.asked == 0 and route.calls == [VALID]
