"""The operator's actions (issue 17) against fakes: the bulk replay of dead letters (dry run, the
filter, the count of earlier replays) and the refund retry of a REFUND_FAILED order, at Order
(the route, the event staged) and at Payment (REFUND_FAILED -> pending -> the wallet's answer)."""

from __future__ import annotations

import base64
import logging
import uuid
from typing import Any

import httpx
import pytest

from tests.unit.fakes import FakeUnitOfWork, deliver
from tests.unit.fakes_order import FakeDeadLetters, FakeOrders
from tests.unit.fakes_payment import PaymentWorld
from tests.unit.test_order_api import (  # noqa: F401 - fixtures
    ADMIN,
    USER,
    client,
    db,
    is_problem,
    letters,
    participants,
    uow,
)
from tests.unit.test_payment_handlers import D, again, charged, handle, inventory_insufficient
from tinysaga.contracts import events as ev
from tinysaga.order import domain
from tinysaga.order.domain import Refund, Status
from tinysaga.order.handlers import handlers
from tinysaga.payment import domain as pay
from tinysaga.payment.domain import Payment
from tinysaga.payment.domain import Status as PayStatus

REPLAY = "/api/admin/dead-letters/replay"


def payload(name: str) -> str:
    return ev.new_event(name, correlation_id="c", orderId=str(uuid.uuid4()), userId="u1").to_bytes().decode()


def three_letters(letters: FakeDeadLetters) -> tuple[int, int, int]:  # noqa: F811
    return (
        letters.put("inventory", "RuntimeError: products table locked", payload(ev.PAYMENT_DONE)),
        letters.put("inventory", "ValueError: PAYMENT_DONE without a valid productId", payload(ev.PAYMENT_DONE)),
        letters.put("notification", "RuntimeError: SMTP LOCKED out", payload(ev.REFUND_DONE)),
    )


# ---- bulk replay ---------------------------------------------------------------------------------


def test_the_event_name_of_a_dead_letter_is_read_from_its_payload() -> None:
    assert domain.dead_letter_event_name(payload(ev.REFUND_DONE), "utf-8") == ev.REFUND_DONE
    assert domain.dead_letter_event_name('{"eventName": "PAYMENT_DONE", "x": 1}', "utf-8") == ev.PAYMENT_DONE
    assert domain.dead_letter_event_name("{not json", "utf-8") is None
    raw = base64.b64encode(payload(ev.REFUND_DONE).encode()).decode()
    assert domain.dead_letter_event_name(raw, "base64") is None


async def test_a_dry_run_lists_what_matches_and_replays_nothing(
    client: httpx.AsyncClient,  # noqa: F811
    letters: FakeDeadLetters,  # noqa: F811
) -> None:
    first, second, third = three_letters(letters)
    r = await client.post(REPLAY, json={"errorContains": "locked"}, headers=ADMIN)  # dryRun by default
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["dryRun"], body["matched"], body["replayed"]) == (True, 2, 0)
    assert [d["id"] for d in body["deadLetters"]] == [first, third]  # case-insensitive, oldest first
    assert all(d["earlierReplays"] == 0 for d in body["deadLetters"])
    r = await client.post(REPLAY, json={"service": "inventory", "eventName": "PAYMENT_DONE"}, headers=ADMIN)
    assert [d["id"] for d in r.json()["deadLetters"]] == [first, second]
    assert r.json()["deadLetters"][0]["eventName"] == ev.PAYMENT_DONE
    assert letters.replayed == [] and all(row["replay_count"] == 0 for row in letters.rows.values())


async def test_a_replay_puts_back_what_matches_for_its_service_and_counts_it(
    client: httpx.AsyncClient,  # noqa: F811
    letters: FakeDeadLetters,  # noqa: F811
    uow: FakeUnitOfWork,  # noqa: F811
) -> None:
    first, second, third = three_letters(letters)
    r = await client.post(REPLAY, json={"service": "inventory", "dryRun": False}, headers=ADMIN)
    assert r.status_code == 202, r.text
    assert (r.json()["matched"], r.json()["replayed"]) == (2, 2)
    assert [(m[3]["replayOf"], m[3]["replayFor"]) for m in letters.replayed] == [
        (str(first), "inventory"),
        (str(second), "inventory"),
    ]
    assert letters.replayed[0][2] == letters.rows[first]["payload"].encode()  # the original bytes
    assert uow.commits == 1  # one transaction for them all
    # replayed once: a second replay of the same filter finds nothing new ...
    r = await client.post(REPLAY, json={"service": "inventory", "dryRun": False}, headers=ADMIN)
    assert r.json()["matched"] == 0 and len(letters.replayed) == 2
    # ... unless asked to take those replayed before too, and then says how often they were
    r = await client.post(REPLAY, json={"includeReplayed": True}, headers=ADMIN)
    assert {d["id"]: d["earlierReplays"] for d in r.json()["deadLetters"]} == {first: 1, second: 1, third: 0}
    listed = (await client.get("/api/admin/dead-letters", headers=ADMIN)).json()
    assert {d["id"]: d["replayCount"] for d in listed} == {first: 1, second: 1, third: 0}


async def test_a_single_replay_counts_too(client: httpx.AsyncClient, letters: FakeDeadLetters) -> None:  # noqa: F811
    first, _, _ = three_letters(letters)
    r = await client.post(f"/api/admin/dead-letters/{first}/replay", headers=ADMIN)
    assert r.status_code == 202
    assert letters.rows[first]["replay_count"] == 1
    is_problem(await client.post("/api/admin/dead-letters/999/replay", headers=ADMIN), 404)


@pytest.mark.parametrize(
    "body",
    [
        {"sevice": "inventory"},  # misspelt: refused rather than replaying everything
        {"dryRun": "no"},
        {"limit": 0},
        {"limit": 501},
        {"errorContains": ""},
        {"service": "x" * 65},
    ],
)
async def test_a_bad_filter_is_422(client: httpx.AsyncClient, letters: FakeDeadLetters, body: dict[str, Any]) -> None:  # noqa: F811
    three_letters(letters)
    problem = is_problem(await client.post(REPLAY, json=body, headers=ADMIN), 422)
    assert problem["errors"]
    assert letters.replayed == []


async def test_the_bulk_replay_is_for_admins(client: httpx.AsyncClient, letters: FakeDeadLetters) -> None:  # noqa: F811
    three_letters(letters)
    is_problem(await client.post(REPLAY, json={"dryRun": False}, headers=USER), 403)
    is_problem(await client.post(REPLAY, content=b"{", headers={**ADMIN, "content-type": "application/json"}), 400)
    assert letters.replayed == []


# ---- refund retry: Order -------------------------------------------------------------------------


async def test_a_failed_refund_is_retried_by_staging_refund_retry_requested(
    client: httpx.AsyncClient,  # noqa: F811
    db: FakeOrders,  # noqa: F811
    uow: FakeUnitOfWork,  # noqa: F811
) -> None:
    oid = db.put(Status.FAILED, fail_reason="TIMEOUT", refund_status=Refund.REFUND_FAILED, transaction_id="tx-1")
    r = await client.post(f"/api/admin/orders/{oid}/refund-retry", headers=ADMIN)
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["orderStatus"], body["refundStatus"], body["statusInfo"]) == (
        "FAILED",
        "REFUND_FAILED",
        domain.RETRY_INFO,
    )
    assert uow.names() == [ev.REFUND_RETRY_REQUESTED]
    sent = uow.published[0]
    assert (sent.orderId, sent.userId, sent.totalAmount, sent.currency) == (str(oid), "user-1", D("20.00"), "USD")
    assert db.events_of(oid)[-1] == ev.REFUND_RETRY_REQUESTED
    asked = await client.get(f"/internal/orders/{oid}/requested/{ev.REFUND_RETRY_REQUESTED}")
    assert asked.json()["requested"] is True  # Payment acts on it only then
    # Payment's answer moves the refund status on (the table allows REFUND_FAILED -> REFUND_DONE)
    done = ev.make_event(
        ev.REFUND_DONE,
        correlation_id=str(oid),
        orderId=str(oid),
        userId="user-1",
        totalAmount=D("20.00"),
        currency="USD",
    )
    await deliver("order", handlers(db.of), done, uow)
    assert db.orders[oid]["refund_status"] == Refund.REFUND_DONE and db.orders[oid]["order_status"] == "FAILED"


@pytest.mark.parametrize(
    "status, refund", [(Status.FAILED, Refund.REFUND_DONE), (Status.PLACED, None), (Status.CANCELED, None)]
)
async def test_an_order_without_a_failed_refund_has_nothing_to_retry(
    client: httpx.AsyncClient,  # noqa: F811
    db: FakeOrders,  # noqa: F811
    uow: FakeUnitOfWork,  # noqa: F811
    status: Status,
    refund: Refund | None,
) -> None:
    oid = db.put(status, refund_status=refund)
    body = is_problem(await client.post(f"/api/admin/orders/{oid}/refund-retry", headers=ADMIN), 409)
    assert "only a refund that failed can be retried" in body["detail"]
    assert uow.names() == []


async def test_the_refund_retry_is_for_admins_and_known_orders(
    client: httpx.AsyncClient,  # noqa: F811
    db: FakeOrders,  # noqa: F811
) -> None:
    oid = db.put(Status.CANCELED, refund_status=Refund.REFUND_FAILED)
    is_problem(await client.post(f"/api/admin/orders/{oid}/refund-retry", headers=USER), 403)
    is_problem(await client.post(f"/api/admin/orders/{uuid.uuid4()}/refund-retry", headers=ADMIN), 404)
    is_problem(await client.post("/api/admin/orders/not-a-uuid/refund-retry", headers=ADMIN), 404)


# ---- refund retry: Payment -----------------------------------------------------------------------


def retry_requested(order_id: str, user: str = "u1") -> ev.Event:
    return ev.make_event(
        ev.REFUND_RETRY_REQUESTED,
        correlation_id=order_id,
        orderId=order_id,
        userId=user,
        orderStatus="FAILED",
        totalAmount=D("10.00"),
        currency="USD",
    )


async def failed_refund(w: PaymentWorld, order_id: str = "o1") -> None:
    """A charged order whose refund failed (the wallet was down), the wallet back up."""
    charged(w, order_id)
    w.wallet.down = True
    await handle(w, inventory_insufficient(order_id))
    assert w.row(order_id).status == PayStatus.REFUND_FAILED
    w.wallet.down = False
    w.uow.published.clear()


def test_only_an_operators_retry_moves_a_failed_refund() -> None:
    for happened in pay.Happened:
        change = pay.apply(PayStatus.REFUND_FAILED, happened)
        assert (change is not None) == (happened == pay.Happened.REFUND_RETRY_WANTED)
    assert pay.apply(PayStatus.REFUND_FAILED, pay.Happened.REFUND_RETRY_WANTED) == pay.Transition(
        PayStatus.REFUND_PENDING
    )
    assert pay.refund_step(PayStatus.REFUND_FAILED, True, retry=True) == pay.RefundStep.RETRY
    assert pay.refund_step(PayStatus.REFUNDED, True, retry=True) == pay.RefundStep.NOTHING
    assert pay.refund_step(PayStatus.CHARGED, True, retry=True) == pay.RefundStep.NOTHING  # never a first refund
    assert pay.refund_step(None, True, retry=True) == pay.RefundStep.NOTHING
    assert pay.refund_step(PayStatus.REFUND_FAILED, False) == pay.RefundStep.NOTHING


async def test_payment_retries_a_failed_refund_at_the_wallet_once() -> None:
    w = PaymentWorld()
    await failed_refund(w)
    w.orders.retried_orders.add("o1")
    e = retry_requested("o1")
    await handle(w, e)
    assert w.uow.names() == [ev.REFUND_DONE]
    assert w.row("o1").status == PayStatus.REFUNDED
    assert w.wallet.refund_calls[-1] == ("o1", "u1", pay.RETRY_REASON)
    assert w.wallet.balances["u1"] == D("10.00")
    assert (await handle(w, e)) is False  # redelivered: skipped by its id
    await handle(w, again(e))  # the same request published twice: refunded already, nothing more
    assert w.uow.names() == [ev.REFUND_DONE] and w.wallet.balances["u1"] == D("10.00")


async def test_a_retry_while_the_wallet_is_still_down_fails_again_with_its_alert(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = PaymentWorld()
    await failed_refund(w)
    w.orders.retried_orders.add("o1")
    w.wallet.down = True
    with caplog.at_level(logging.ERROR, "tinysaga.payment"):
        await handle(w, retry_requested("o1"))
    assert w.uow.names() == [ev.REFUND_FAILED] and w.row("o1").status == PayStatus.REFUND_FAILED
    assert any("ALERT refund failed for order o1" in r.getMessage() for r in caplog.records)


async def test_a_retry_order_did_not_ask_for_or_of_a_refund_that_did_not_fail_does_nothing() -> None:
    w = PaymentWorld()
    await failed_refund(w)
    await handle(w, retry_requested("o1"))  # forged: Order's history does not hold it
    assert w.uow.names() == [] and w.row("o1").status == PayStatus.REFUND_FAILED
    w.orders.retried_orders.add("o2")
    w.table.put(Payment("o2", "u1", D("10.00"), "USD", PayStatus.CHARGED, "tx-9"))
    await handle(w, retry_requested("o2"))  # charged and never refunded: a retry is no first refund
    assert w.uow.names() == [] and w.row("o2").status == PayStatus.CHARGED
