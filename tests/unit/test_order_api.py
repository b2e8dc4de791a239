"""Order's routes for cancel, ship, deliver and the internal "did you request it?" question,
through FastAPI (with the platform's error handlers) over the fake repository: status codes,
problem+json, and the order JSON unchanged."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.unit.fakes import FakeUnitOfWork
from tests.unit.fakes_order import (
    FakeDeadLetterRepository,
    FakeDeadLetters,
    FakeOrderRepository,
    FakeOrders,
    FakeParticipants,
)
from tinysaga.contracts import events as ev
from tinysaga.order import api, dead_letters
from tinysaga.order.bootstrap import OrderDeps
from tinysaga.order.domain import Status
from tinysaga.order.handlers import (
    CancelOrder,
    DeliverOrder,
    ReplayDeadLetters,
    RetryRefund,
    SagaMap,
    ShipOrder,
    StuckSagas,
)
from tinysaga.platform.web import install

USER = {"x-user-id": "user-1"}
ADMIN = {"x-user-id": "admin-1", "x-user-role": "admin"}


@pytest.fixture
def db() -> FakeOrders:
    return FakeOrders()


@pytest.fixture
def uow() -> FakeUnitOfWork:
    return FakeUnitOfWork()


@pytest.fixture
def letters() -> FakeDeadLetters:
    return FakeDeadLetters()


@pytest.fixture
def participants() -> FakeParticipants:
    return FakeParticipants()


@pytest.fixture
async def client(
    db: FakeOrders, uow: FakeUnitOfWork, letters: FakeDeadLetters, participants: FakeParticipants
) -> AsyncIterator[httpx.AsyncClient]:
    @asynccontextmanager
    async def writer() -> AsyncIterator[FakeOrderRepository]:
        async with uow.transaction():
            yield db.of(uow)

    reader = FakeOrderRepository(db)
    made: dict[str, Any] = {"reader": reader, "writer": writer}
    deps: Any = OrderDeps(
        orders=reader,  # type: ignore[arg-type]
        dead_letters=FakeDeadLetterRepository(letters),  # type: ignore[arg-type]
        create_order=None,  # type: ignore[arg-type]
        cancel_order=CancelOrder(**made),
        ship_order=ShipOrder(**made),
        deliver_order=DeliverOrder(**made),
        fanout=None,  # type: ignore[arg-type]
        catalogue=None,  # type: ignore[arg-type]
        wallets=None,  # type: ignore[arg-type]
        currency="USD",
        begin=uow.transaction,
        stuck=StuckSagas(reader=reader, timeout_seconds=60),  # type: ignore[arg-type]
        retry_refund=RetryRefund(**made),
        replay_dead_letters=ReplayDeadLetters(
            reader=FakeDeadLetterRepository(letters),  # type: ignore[arg-type]
            begin=uow.transaction,
            repository=letters.of,  # type: ignore[arg-type]
        ),
        saga_map=SagaMap(reader=reader, fetch=participants, timeout_seconds=0.2),  # type: ignore[arg-type]
    )
    app = FastAPI()
    install(app, internal_secret=None)
    app.include_router(api.router)
    app.include_router(dead_letters.router)
    app.state.rt = SimpleNamespace(deps=deps)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://order") as c:
        yield c


def is_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["detail"]
    return body


async def test_cancel_answers_202_with_the_order_then_202_again_with_nothing_more(
    client: httpx.AsyncClient, db: FakeOrders, uow: FakeUnitOfWork
) -> None:
    order_id = db.put(Status.PLACED, transaction_id="tx-1")
    r = await client.post(f"/api/orders/{order_id}/cancel", headers={**USER, "Idempotency-Key": "k-1"})
    assert r.status_code == 202
    body = r.json()
    assert (body["orderId"], body["orderStatus"]) == (str(order_id), "CANCELING")
    assert set(body) == set(api.order_json(db.orders[order_id]))  # the public order JSON, no new fields
    assert "paymentSettled" not in body

    again = await client.post(f"/api/orders/{order_id}/cancel", headers=USER)
    assert again.status_code == 202 and again.json() == body
    assert uow.names() == [ev.ORDER_CANCEL_REQUESTED]


@pytest.mark.parametrize("status", [Status.ON_THE_WAY, Status.DELIVERED, Status.FAILED, Status.REFUND_INITIATED])
async def test_cancel_from_another_status_is_409(client: httpx.AsyncClient, db: FakeOrders, status: Status) -> None:
    order_id = db.put(status)
    body = is_problem(await client.post(f"/api/orders/{order_id}/cancel", headers=USER), 409)
    assert "can no longer be canceled" in body["detail"] and status.value in body["detail"]


@pytest.mark.parametrize("which", ["someone-elses", "unknown", "not-a-uuid"])
async def test_cancel_of_an_order_not_yours_is_404(client: httpx.AsyncClient, db: FakeOrders, which: str) -> None:
    order_id = {
        "someone-elses": str(db.put(Status.PLACED, user_id="user-2")),
        "unknown": str(uuid.uuid4()),
        "not-a-uuid": "nope",
    }[which]
    is_problem(await client.post(f"/api/orders/{order_id}/cancel", headers=USER), 404)


async def test_cancel_with_a_bad_idempotency_key_is_422(client: httpx.AsyncClient, db: FakeOrders) -> None:
    order_id = db.put(Status.PLACED)
    is_problem(await client.post(f"/api/orders/{order_id}/cancel", headers={**USER, "Idempotency-Key": " "}), 422)
    assert db.orders[order_id]["order_status"] == Status.PLACED


async def test_ship_and_deliver_answer_200_409_404_and_403_for_a_user(
    client: httpx.AsyncClient, db: FakeOrders, uow: FakeUnitOfWork
) -> None:
    order_id = db.put(Status.PLACED, transaction_id="tx-1")
    is_problem(await client.post(f"/api/admin/orders/{order_id}/ship", headers=USER), 403)
    is_problem(await client.post(f"/api/admin/orders/{order_id}/deliver", headers=ADMIN), 409)
    for path, status in (
        ("ship", "ON_THE_WAY"),
        ("ship", "ON_THE_WAY"),
        ("deliver", "DELIVERED"),
        ("deliver", "DELIVERED"),
    ):
        r = await client.post(f"/api/admin/orders/{order_id}/{path}", headers=ADMIN)
        assert r.status_code == 200 and r.json()["orderStatus"] == status
    body = is_problem(await client.post(f"/api/admin/orders/{order_id}/ship", headers=ADMIN), 409)
    assert body["detail"] == "only a PLACED order can be shipped; this one is DELIVERED"
    is_problem(await client.post(f"/api/admin/orders/{uuid.uuid4()}/deliver", headers=ADMIN), 404)
    assert uow.names() == [ev.ORDER_SHIPPED, ev.ORDER_DELIVERED]


async def test_the_admin_sees_the_trace_of_an_order_and_its_owner_does_not(
    client: httpx.AsyncClient, db: FakeOrders
) -> None:
    traced, untraced = db.put(Status.PLACED, trace_id="ab" * 16), db.put(Status.PLACED)
    sagas = {s["orderId"]: s for s in (await client.get("/api/admin/sagas", headers=ADMIN)).json()}
    assert (sagas[str(traced)]["traceId"], sagas[str(untraced)]["traceId"]) == ("ab" * 16, None)
    shipped = await client.post(f"/api/admin/orders/{traced}/ship", headers=ADMIN)
    assert shipped.status_code == 200 and shipped.json()["traceId"] == "ab" * 16
    mine = await client.get(f"/api/orders/{traced}", headers=USER)
    assert mine.status_code == 200 and "traceId" not in mine.json()


async def test_requested_says_whether_the_history_holds_the_event(client: httpx.AsyncClient, db: FakeOrders) -> None:
    order_id = db.put(Status.PLACED)
    await client.post(f"/api/orders/{order_id}/cancel", headers=USER)
    for name, expected in ((ev.ORDER_CANCEL_REQUESTED, True), (ev.ORDER_TIMED_OUT, False)):
        r = await client.get(f"/internal/orders/{order_id}/requested/{name}")
        assert r.status_code == 200
        assert r.json() == {"orderId": str(order_id), "eventName": name, "requested": expected}
    is_problem(await client.get(f"/internal/orders/{order_id}/requested/{ev.PAYMENT_DONE}"), 422)
    is_problem(await client.get(f"/internal/orders/{uuid.uuid4()}/requested/{ev.ORDER_TIMED_OUT}"), 404)
    is_problem(await client.get(f"/internal/orders/nope/requested/{ev.ORDER_TIMED_OUT}"), 404)
