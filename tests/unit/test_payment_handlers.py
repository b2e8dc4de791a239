"""Payment's step handlers (`charge`, `refund`), its batch `prepare` and its voider, against fakes:
the payments table in a dict, a fake wallet and Order, and the FakeUnitOfWork. Events reach the
handlers as the consumer routes them (`deliver`)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from tests.unit.fakes import deliver, deliver_batch
from tests.unit.fakes_payment import PaymentWorld
from tinysaga.contracts import events as ev
from tinysaga.payment.domain import CANCEL_VOID_DETAIL, EARLY_VOID_DETAIL, Payment, Status
from tinysaga.payment.handlers import ALREADY

D = Decimal


def order_initiated(order_id: str | None = None, user: str = "u1", amount: str = "10.00", **over: Any) -> ev.Event:
    order_id = order_id or str(uuid.uuid4())
    fields = {
        "orderId": order_id,
        "userId": user,
        "paymentType": "WALLET",
        "productId": "p1",
        "productQuantity": 2,
        "price": D(amount) / 2,
        "totalAmount": D(amount),
        "currency": "USD",
        **over,
    }
    return ev.make_event(ev.ORDER_INITIATED, correlation_id=f"c-{order_id}", **fields)


def inventory_insufficient(order_id: str, user: str = "u1") -> ev.Event:
    return ev.make_event(
        ev.INVENTORY_INSUFFICIENT,
        correlation_id=f"c-{order_id}",
        orderId=order_id,
        userId=user,
        productId="p1",
        productQuantity=2,
        inventoryFailReason="out of stock",
        totalAmount=D("10.00"),
        currency="USD",
    )


def order_timed_out(order_id: str, user: str = "u1") -> ev.Event:
    return ev.make_event(
        ev.ORDER_TIMED_OUT,
        correlation_id=f"c-{order_id}",
        orderId=order_id,
        userId=user,
        failReason="TIMEOUT",
        productId="p1",
        productQuantity=2,
        totalAmount=D("10.00"),
        currency="USD",
    )


def cancel_requested(order_id: str, user: str = "u1") -> ev.Event:
    return ev.make_event(
        ev.ORDER_CANCEL_REQUESTED,
        correlation_id=f"c-{order_id}",
        orderId=order_id,
        userId=user,
        productId="p1",
        productQuantity=2,
        totalAmount=D("10.00"),
        currency="USD",
    )


def again(event: ev.Event) -> ev.Event:
    """The same event under a new eventId (a second publication, not a redelivery)."""
    return event.model_copy(update={"eventId": uuid.uuid4()})


async def handle(w: PaymentWorld, event: ev.Event, prepared: Any = None) -> bool:
    return await deliver("payment", w.handlers.by_step(), event, w.uow, prepared)


def charged(w: PaymentWorld, order_id: str, user: str = "u1", amount: str = "10.00") -> None:
    """A payment row CHARGED (and the wallet's matching debit)."""
    w.table.put(Payment(order_id, user, D(amount), "USD", Status.CHARGED, "tx-0"))
    answer = {"transactionId": "tx-0", "status": "COMPLETED", "amount": float(amount)}
    w.wallet.payments[order_id] = {"user": user, "amount": D(amount), "answer": answer}


# ---- charge ------------------------------------------------------------------------------------


async def test_a_charge_that_goes_through_is_charged_with_payment_done() -> None:
    w = PaymentWorld()
    w.wallet.balances["u1"] = D("25.00")
    e = order_initiated()
    assert await handle(w, e)
    row = w.row(e.orderId)
    assert row is not None and row.status == Status.CHARGED and row.amount == D("10.00")
    assert w.uow.names() == [ev.PAYMENT_DONE]
    out = w.uow.published[0]
    assert out.transactionId == row.transaction_id == "tx-1"
    # the order's fields travel on, under the saga's correlation id
    assert (out.orderId, out.userId, out.productId, out.productQuantity, out.totalAmount, out.currency) == (
        e.orderId,
        "u1",
        "p1",
        2,
        D("10.00"),
        "USD",
    )
    assert out.correlationId == e.correlationId and out.orderStatus == ev.PAYMENT_DONE
    assert w.wallet.balances["u1"] == D("15.00")
    assert e.eventId in w.uow.handled


async def test_a_charge_refused_for_insufficient_funds_is_declined() -> None:
    w = PaymentWorld()
    w.wallet.balances["u1"] = D("9.99")
    e = order_initiated()
    await handle(w, e)
    assert w.row(e.orderId).status == Status.DECLINED
    (out,) = w.uow.published
    assert out.eventName == ev.PAYMENT_FAIL and out.failReason == ev.INSUFFICIENT_FUND
    assert out.transactionId == "tx-1"
    assert w.wallet.balances["u1"] == D("9.99")


async def test_a_charge_the_wallet_refuses_because_the_order_was_voided_is_voided() -> None:
    w = PaymentWorld()
    w.wallet.balances["u1"] = D("100")
    e = order_initiated()
    w.wallet.refunds[e.orderId] = {"transactionId": "tx-v", "status": "NOTHING_TO_REFUND"}
    await handle(w, e)
    assert w.row(e.orderId).status == Status.VOIDED
    (out,) = w.uow.published
    assert out.eventName == ev.PAYMENT_FAIL and out.failReason == ev.SERVER_ERROR and out.transactionId is None
    assert w.wallet.balances["u1"] == D("100")


async def test_a_charge_the_wallet_does_not_answer_fails_and_waits_for_the_voider() -> None:
    w = PaymentWorld()
    w.wallet.down = True
    e = order_initiated()
    await handle(w, e)
    row = w.row(e.orderId)
    assert row.status == Status.VOID_PENDING and row.transaction_id is None
    (out,) = w.uow.published
    assert out.eventName == ev.PAYMENT_FAIL and out.failReason == ev.SERVER_ERROR


async def test_a_batch_is_one_query_and_one_wallet_call_and_an_order_acted_on_is_already() -> None:
    w = PaymentWorld()
    w.wallet.balances.update({"u1": D("15"), "u2": D("5")})
    done = order_initiated(user="u1")
    charged(w, done.orderId)
    a, b, c = order_initiated(user="u1"), order_initiated(user="u2"), order_initiated(user="u1", amount="6.00")
    bad = order_initiated().model_copy(update={"paymentType": "CARD"})
    prepared = await w.handlers.prepare([a, done, b, c, bad])
    assert prepared[done.eventId] is ALREADY
    assert bad.eventId not in prepared  # left out: its handler refuses it
    assert len(w.wallet.debit_calls) == 1
    assert [d["orderId"] for d in w.wallet.debit_calls[0]] == [a.orderId, b.orderId, c.orderId]
    assert [prepared[x.eventId]["status"] for x in (a, b, c)] == ["COMPLETED", "FAILED", "FAILED"]
    for e in (a, done, b, c):
        assert await handle(w, e, prepared.get(e.eventId))
    assert len(w.wallet.debit_calls) == 1  # the handlers used the batch's answers
    assert [w.row(x.orderId).status for x in (a, b, c)] == [Status.CHARGED, Status.DECLINED, Status.DECLINED]
    assert w.row(done.orderId).transaction_id == "tx-0"  # untouched
    assert w.uow.names() == [ev.PAYMENT_DONE, ev.PAYMENT_FAIL, ev.PAYMENT_FAIL]
    assert done.eventId in w.uow.handled
    with pytest.raises(ValueError, match="paymentType"):
        await handle(w, bad, prepared.get(bad.eventId))


async def test_the_same_order_twice_in_one_batch_is_charged_and_announced_once() -> None:
    """Two ORDER_INITIATED of one order under two eventIds in the same poll: the wallet answers both
    with the one charge, and the second payment row is not written, so no second event is staged."""
    w = PaymentWorld()
    w.wallet.balances["u1"] = D("100")
    first = order_initiated()
    second = again(first)
    prepared = await w.handlers.prepare([first, second])
    assert prepared[first.eventId] == prepared[second.eventId]
    for e in (first, second):
        assert await handle(w, e, prepared[e.eventId])
    assert w.uow.names() == [ev.PAYMENT_DONE]
    assert w.wallet.balances["u1"] == D("90.00") and second.eventId in w.uow.handled


async def test_a_batch_s_payment_rows_are_written_by_one_statement_before_its_commit() -> None:
    """ADR 70: in a batch's transaction each charge keeps its row and event, and one statement adds
    them all as its transaction commits; the same order twice in the batch is written and announced
    once."""
    w = PaymentWorld()
    w.wallet.balances.update({"u1": D("100"), "u2": D("5")})
    a, b = order_initiated(user="u1"), order_initiated(user="u2")
    await deliver_batch("payment", w.handlers.by_step(), [a, b, again(a)], w.uow)
    assert w.table.charge_statements == 1 and w.uow.commits == 1
    assert [w.row(x.orderId).status for x in (a, b)] == [Status.CHARGED, Status.DECLINED]
    assert w.uow.names() == [ev.PAYMENT_DONE, ev.PAYMENT_FAIL]


async def test_a_batch_the_wallet_does_not_answer_fails_every_order_of_it() -> None:
    w = PaymentWorld()
    w.wallet.down = True
    events = [order_initiated(), order_initiated()]
    prepared = await w.handlers.prepare(events)
    assert all("error" in prepared[e.eventId] for e in events)
    for e in events:
        await handle(w, e, prepared[e.eventId])
    assert [w.row(e.orderId).status for e in events] == [Status.VOID_PENDING] * 2


async def test_a_redelivered_charge_is_not_charged_twice() -> None:
    w = PaymentWorld()
    w.wallet.balances["u1"] = D("100")
    e = order_initiated()
    assert await handle(w, e)
    assert not await handle(w, e)  # same eventId: skipped
    assert len(w.wallet.debit_calls) == 1 and w.uow.names() == [ev.PAYMENT_DONE]
    assert w.wallet.balances["u1"] == D("90.00")


async def test_the_same_order_under_a_new_event_id_is_acted_on_once() -> None:
    w = PaymentWorld()
    w.wallet.balances["u1"] = D("100")
    e = order_initiated()
    await handle(w, e)
    second = again(e)
    assert await handle(w, second)
    assert len(w.wallet.debit_calls) == 1  # ALREADY: the wallet is not asked again
    assert w.uow.names() == [ev.PAYMENT_DONE] and second.eventId in w.uow.handled


@pytest.mark.parametrize(
    "over, missing",
    [({"totalAmount": None}, "totalAmount"), ({"userId": None}, "userId"), ({"currency": None}, "currency")],
)
async def test_an_order_initiated_without_what_a_charge_needs_is_refused(over: dict[str, Any], missing: str) -> None:
    w = PaymentWorld()
    e = ev.Event.model_validate({**order_initiated().model_dump(), **over})
    assert await w.handlers.prepare([e]) == {}
    with pytest.raises(ValueError, match=missing):
        await handle(w, e)
    assert not w.table.rows and not w.uow.published and not w.wallet.debit_calls


async def test_events_payment_does_not_handle_are_not_delivered() -> None:
    w = PaymentWorld()
    done = ev.make_event(
        ev.PAYMENT_DONE,
        correlation_id="c",
        orderId="o",
        userId="u",
        productId="p",
        productQuantity=1,
        totalAmount=D(1),
        currency="USD",
        transactionId="t",
    )
    assert not await handle(w, done)


# ---- refund ------------------------------------------------------------------------------------


async def test_a_refund_for_an_order_never_charged_does_nothing() -> None:
    w = PaymentWorld()
    e = inventory_insufficient("o1")
    assert await handle(w, e)
    assert not w.table.rows and not w.uow.published and not w.wallet.refund_calls
    assert e.eventId in w.uow.handled


async def test_a_charged_order_out_of_stock_is_refunded() -> None:
    w = PaymentWorld()
    charged(w, "o1")
    e = inventory_insufficient("o1")
    await handle(w, e)
    assert w.uow.names() == [ev.REFUND_INITIATED, ev.REFUND_DONE]
    started, done = w.uow.published
    for out in (started, done):
        assert (out.orderId, out.userId, out.totalAmount, out.currency, out.transactionId) == (
            "o1",
            "u1",
            D("10.00"),
            "USD",
            "tx-0",
        )
        assert out.correlationId == "o1" and out.productId == "p1" and out.isPartialOrder is False
    row = w.row("o1")
    assert row.status == Status.REFUNDED and row.detail == "REFUNDED"
    assert w.wallet.refund_calls == [("o1", "u1", "out of stock")]
    assert e.eventId in w.uow.handled


async def test_a_refund_the_wallet_does_not_answer_fails_with_an_alert(caplog: pytest.LogCaptureFixture) -> None:
    w = PaymentWorld()
    charged(w, "o1")
    w.wallet.down = True
    with caplog.at_level(logging.ERROR, "tinysaga.payment"):
        await handle(w, inventory_insufficient("o1"))
    assert w.uow.names() == [ev.REFUND_INITIATED, ev.REFUND_FAILED]
    failed = w.uow.published[1]
    assert failed.failReason == "ClientConnectorError: wallet down"
    assert w.row("o1").status == Status.REFUND_FAILED
    assert any("ALERT refund failed for order o1" in r.getMessage() for r in caplog.records)


async def test_a_refund_asked_twice_gives_back_once() -> None:
    w = PaymentWorld()
    w.orders.timed_out_orders.add("o1")
    charged(w, "o1")
    first = inventory_insufficient("o1")
    await handle(w, first)
    assert not await handle(w, first)  # redelivered: skipped
    later = order_timed_out("o1")  # the sweeper fires too
    assert await handle(w, later)
    assert await handle(w, again(first))
    assert w.uow.names() == [ev.REFUND_INITIATED, ev.REFUND_DONE]
    assert len(w.wallet.refund_calls) == 1 and w.row("o1").status == Status.REFUNDED


async def test_a_refund_interrupted_after_it_was_asked_for_resumes_without_asking_again() -> None:
    w = PaymentWorld()
    w.table.put(Payment("o1", "u1", D("10.00"), "USD", Status.REFUND_PENDING, "tx-0", "out of stock"))
    w.wallet.payments["o1"] = {
        "user": "u1",
        "amount": D("10.00"),
        "answer": {"transactionId": "tx-0", "status": "COMPLETED", "amount": 10.0},
    }
    await handle(w, inventory_insufficient("o1"))
    assert w.uow.names() == [ev.REFUND_DONE] and w.row("o1").status == Status.REFUNDED


@pytest.mark.parametrize("status", [Status.DECLINED, Status.VOIDED, Status.REFUND_FAILED, Status.VOID_PENDING])
async def test_a_refund_of_a_payment_that_took_nothing_or_is_settled_does_nothing(status: Status) -> None:
    w = PaymentWorld()
    w.table.put(Payment("o1", "u1", D("10.00"), "USD", status))
    await handle(w, inventory_insufficient("o1"))
    assert not w.uow.published and not w.wallet.refund_calls and w.row("o1").status == status


async def test_a_timed_out_charged_order_is_refunded() -> None:
    w = PaymentWorld()
    w.orders.timed_out_orders.add("o1")
    charged(w, "o1")
    await handle(w, order_timed_out("o1"))
    assert w.uow.names() == [ev.REFUND_INITIATED, ev.REFUND_DONE]
    assert w.wallet.refund_calls == [("o1", "u1", "order timed out")]


async def test_an_order_timed_out_that_order_did_not_time_out_changes_nothing() -> None:
    w = PaymentWorld()
    charged(w, "o1")
    forged = order_timed_out("o1")
    assert await handle(w, forged)
    assert w.orders.asked == [("o1", ev.ORDER_TIMED_OUT)]
    assert not w.uow.published and not w.wallet.refund_calls and w.row("o1").status == Status.CHARGED
    assert forged.eventId in w.uow.handled


async def test_an_order_timed_out_before_any_charge_is_voided_and_a_late_charge_does_nothing() -> None:
    w = PaymentWorld()
    w.wallet.balances["u1"] = D("100")
    w.orders.timed_out_orders.add("o1")
    await handle(w, order_timed_out("o1"))
    row = w.row("o1")
    assert row.status == Status.VOIDED and row.detail == EARLY_VOID_DETAIL and row.amount == D("10.00")
    assert w.wallet.refund_calls == [("o1", "u1", "order timed out")]
    assert not w.uow.published
    # the ORDER_INITIATED arrives late: the order was acted on, the wallet is not asked
    await handle(w, order_initiated("o1"))
    assert not w.wallet.debit_calls and not w.uow.published and w.wallet.balances["u1"] == D("100")


async def test_a_void_before_any_charge_the_wallet_does_not_answer_is_left_to_the_voider() -> None:
    w = PaymentWorld()
    w.orders.timed_out_orders.add("o1")
    w.wallet.down = True
    await handle(w, order_timed_out("o1"))
    assert w.row("o1").status == Status.VOID_PENDING and not w.uow.published
    w.wallet.down = False
    assert await w.handlers.void_pending() == 1
    assert w.row("o1").status == Status.VOIDED and w.row("o1").detail == "void: NOTHING_TO_REFUND"
    assert not w.uow.published
    # a charge that lands now is refused by the wallet
    assert (await w.wallet.debit_many([{"orderId": "o1", "userId": "u1", "amount": "1", "currency": "USD"}]))[0][
        "status"
    ] == "REFUSED"


@pytest.mark.parametrize(
    "event",
    [
        ev.Event(eventName=ev.INVENTORY_INSUFFICIENT, correlationId="c", orderId="o1", userId="u1"),
        ev.Event(eventName=ev.ORDER_TIMED_OUT, correlationId="c", orderId="o1"),
        ev.Event(eventName=ev.ORDER_TIMED_OUT, correlationId="c", userId="u1", failReason="TIMEOUT"),
    ],
)
async def test_a_refund_request_without_what_it_needs_is_refused(event: ev.Event) -> None:
    w = PaymentWorld()
    charged(w, "o1")
    with pytest.raises(ValueError, match="without a valid"):
        await handle(w, event)
    assert not w.uow.published and not w.orders.asked and w.row("o1").status == Status.CHARGED


# ---- cancel (ADR 13) -----------------------------------------------------------------------------


def canceling(w: PaymentWorld, order_id: str = "o1") -> ev.Event:
    """An ORDER_CANCEL_REQUESTED that Order did publish (its history holds it)."""
    w.orders.canceled_orders.add(order_id)
    return cancel_requested(order_id)


async def test_a_canceled_charged_order_is_refunded_what_the_ledger_took() -> None:
    w = PaymentWorld()
    charged(w, "o1")
    e = canceling(w)
    assert await handle(w, e)
    assert w.orders.asked == [("o1", ev.ORDER_CANCEL_REQUESTED)]
    assert w.uow.names() == [ev.REFUND_INITIATED, ev.REFUND_DONE]
    for out in w.uow.published:
        assert (out.orderId, out.userId, out.totalAmount, out.currency, out.transactionId) == (
            "o1",
            "u1",
            D("10.00"),
            "USD",
            "tx-0",
        )
    assert w.wallet.refund_calls == [("o1", "u1", "order canceled")]
    assert w.wallet.balances["u1"] == D("10.00")
    assert w.row("o1").status == Status.REFUNDED and e.eventId in w.uow.handled


async def test_a_canceled_order_whose_refund_fails_gives_refund_failed_and_the_alert(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = PaymentWorld()
    charged(w, "o1")
    w.wallet.down = True
    with caplog.at_level(logging.ERROR, "tinysaga.payment"):
        await handle(w, canceling(w))
    assert w.uow.names() == [ev.REFUND_INITIATED, ev.REFUND_FAILED]
    assert w.row("o1").status == Status.REFUND_FAILED
    assert any("ALERT refund failed for order o1" in r.getMessage() for r in caplog.records)


async def test_a_cancel_with_the_refund_pending_finishes_it() -> None:
    w = PaymentWorld()
    charged(w, "o1")
    w.table.put(replace(w.row("o1"), status=Status.REFUND_PENDING, detail="order canceled"))
    await handle(w, canceling(w))
    assert w.uow.names() == [ev.REFUND_DONE] and w.row("o1").status == Status.REFUNDED
    assert w.wallet.refund_calls == [("o1", "u1", "order canceled")]


async def test_a_canceled_order_never_charged_is_voided_with_payment_voided() -> None:
    w = PaymentWorld()
    e = canceling(w)
    assert await handle(w, e)
    row = w.row("o1")
    assert row.status == Status.VOIDED and row.detail == CANCEL_VOID_DETAIL and row.amount == D("10.00")
    assert w.wallet.refund_calls == [("o1", "u1", "order canceled")]
    (voided,) = w.uow.published
    assert isinstance(voided, ev.PaymentVoided) and voided.eventName == ev.PAYMENT_VOIDED
    assert (voided.orderId, voided.userId, voided.correlationId) == ("o1", "u1", e.correlationId)
    assert e.eventId in w.uow.handled


async def test_a_late_charge_after_a_cancel_s_void_takes_nothing() -> None:
    w = PaymentWorld()
    w.wallet.balances["u1"] = D("100")
    await handle(w, canceling(w))
    # the ORDER_INITIATED comes late: the order was acted on, the wallet is not asked
    await handle(w, order_initiated("o1"))
    assert not w.wallet.debit_calls and w.uow.names() == [ev.PAYMENT_VOIDED]
    # and a debit that reaches the wallet anyway is refused
    answer = await w.wallet.debit_many([{"orderId": "o1", "userId": "u1", "amount": "10.00", "currency": "USD"}])
    assert answer[0]["status"] == "REFUSED" and w.wallet.balances["u1"] == D("100")


async def test_a_charge_the_wallet_refuses_after_a_cancel_s_void_ends_as_for_a_timeout() -> None:
    """The cancel's void reached the wallet but its row was not committed; the ORDER_INITIATED then
    finds no row: the wallet refuses it (VOIDED, PAYMENT_FAIL serverError), and the cancel, handled
    again, answers nothing new (PAYMENT_FAIL settled the payment side)."""
    w = PaymentWorld()
    w.wallet.balances["u1"] = D("100")
    e = canceling(w)
    await w.wallet.refund("o1", "u1", "order canceled")  # the void, whose transaction was lost
    await handle(w, order_initiated("o1"))
    assert w.row("o1").status == Status.VOIDED
    (fail,) = w.uow.published
    assert fail.eventName == ev.PAYMENT_FAIL and fail.failReason == ev.SERVER_ERROR
    assert await handle(w, e)
    assert w.uow.names() == [ev.PAYMENT_FAIL] and w.wallet.balances["u1"] == D("100")


async def test_a_cancel_s_void_the_wallet_does_not_answer_is_answered_by_the_voider() -> None:
    w = PaymentWorld()
    w.wallet.down = True
    e = canceling(w)
    await handle(w, e)
    row = w.row("o1")
    assert row.status == Status.VOID_PENDING and row.detail == CANCEL_VOID_DETAIL
    assert not w.uow.published and e.eventId in w.uow.handled
    await handle(w, again(e))  # a second cancel while the void is pending: the voider's
    assert not w.uow.published
    assert await w.handlers.void_pending() == 0  # still down
    w.wallet.down = False
    assert await w.handlers.void_pending() == 1
    assert w.row("o1").status == Status.VOIDED
    assert w.uow.names() == [ev.PAYMENT_VOIDED]
    assert w.wallet.refund_calls[-1] == ("o1", "u1", "order canceled")
    assert await w.handlers.void_pending() == 0 and w.uow.names() == [ev.PAYMENT_VOIDED]


async def test_the_voider_of_a_cancel_whose_debit_had_landed_says_refund_done() -> None:
    w = PaymentWorld()
    w.wallet.balances["u1"] = D("10.00")
    await w.wallet.debit_many([{"orderId": "o1", "userId": "u1", "amount": "10.00", "currency": "USD"}])
    w.table.put(Payment("o1", "u1", D("10.00"), "USD", Status.VOID_PENDING, detail=CANCEL_VOID_DETAIL))
    assert await w.handlers.void_pending() == 1
    assert w.uow.names() == [ev.REFUND_DONE] and w.wallet.balances["u1"] == D("10.00")
    assert w.row("o1").status == Status.VOIDED


async def test_a_cancel_whose_void_finds_a_debit_landed_says_refund_done() -> None:
    w = PaymentWorld()
    w.wallet.balances["u1"] = D("10.00")
    await w.wallet.debit_many([{"orderId": "o1", "userId": "u1", "amount": "10.00", "currency": "USD"}])
    await handle(w, canceling(w))
    assert w.uow.names() == [ev.REFUND_DONE] and w.wallet.balances["u1"] == D("10.00")
    done = w.uow.published[0]
    assert (done.totalAmount, done.currency) == (D("10.00"), "USD")


async def test_a_forged_cancel_changes_nothing() -> None:
    w = PaymentWorld()
    charged(w, "o1")
    forged = cancel_requested("o1")  # Order's history does not hold it
    assert await handle(w, forged)
    assert w.orders.asked == [("o1", ev.ORDER_CANCEL_REQUESTED)]
    assert not w.uow.published and not w.wallet.refund_calls and w.row("o1").status == Status.CHARGED
    assert forged.eventId in w.uow.handled
    assert await handle(w, cancel_requested("o2"))  # nor for an order never charged: no void
    assert not w.table.rows.get("o2") and not w.wallet.refund_calls


async def test_a_timed_out_order_is_not_compensated_for_a_cancel_order_did_not_ask_for() -> None:
    w = PaymentWorld()
    w.orders.timed_out_orders.add("o1")  # the history holds ORDER_TIMED_OUT, not the cancel
    charged(w, "o1")
    await handle(w, cancel_requested("o1"))
    assert not w.uow.published and w.row("o1").status == Status.CHARGED


async def test_a_cancel_delivered_twice_or_published_twice_refunds_once() -> None:
    w = PaymentWorld()
    charged(w, "o1")
    e = canceling(w)
    await handle(w, e)
    assert not await handle(w, e)  # redelivered: skipped
    assert await handle(w, again(e))  # published again: REFUNDED, nothing new
    assert w.uow.names() == [ev.REFUND_INITIATED, ev.REFUND_DONE] and len(w.wallet.refund_calls) == 1
    v = PaymentWorld()
    first = canceling(v)
    await handle(v, first)
    await handle(v, again(first))  # never charged: VOIDED, nothing new
    assert v.uow.names() == [ev.PAYMENT_VOIDED] and len(v.wallet.refund_calls) == 1


async def test_a_cancel_after_the_out_of_stock_refund_answers_nothing_new() -> None:
    w = PaymentWorld()
    charged(w, "o1")
    await handle(w, inventory_insufficient("o1"))
    await handle(w, canceling(w))
    assert w.uow.names() == [ev.REFUND_INITIATED, ev.REFUND_DONE]  # REFUND_DONE settles the cancel too
    assert w.wallet.refund_calls == [("o1", "u1", "out of stock")]


@pytest.mark.parametrize("status", [Status.DECLINED, Status.VOIDED, Status.REFUNDED, Status.REFUND_FAILED])
async def test_a_cancel_of_a_settled_payment_answers_nothing_new(status: Status) -> None:
    w = PaymentWorld()
    w.table.put(Payment("o1", "u1", D("10.00"), "USD", status))
    await handle(w, canceling(w))
    assert not w.uow.published and not w.wallet.refund_calls and w.row("o1").status == status


async def test_a_cancel_without_what_it_needs_is_refused() -> None:
    w = PaymentWorld()
    bad = ev.Event(eventName=ev.ORDER_CANCEL_REQUESTED, correlationId="c", orderId="o1", userId="u1")
    with pytest.raises(ValueError, match="without a valid"):
        await handle(w, bad)
    assert not w.orders.asked and not w.uow.published


# ---- voider ------------------------------------------------------------------------------------


async def test_the_voider_refunds_a_debit_that_had_landed() -> None:
    w = PaymentWorld()
    w.wallet.balances["u1"] = D("10.00")
    e = order_initiated("o1")
    await w.wallet.debit_many([{"orderId": "o1", "userId": "u1", "amount": "10.00", "currency": "USD"}])
    prepared = {"error": "TimeoutError: the answer was lost"}  # the debit landed, its answer did not
    await handle(w, e, prepared)
    assert w.row("o1").status == Status.VOID_PENDING
    assert await w.handlers.void_pending() == 1
    row = w.row("o1")
    assert row.status == Status.VOIDED and row.detail == "void: REFUNDED"
    assert w.uow.names() == [ev.PAYMENT_FAIL, ev.REFUND_DONE]
    done = w.uow.published[1]
    assert (done.orderId, done.totalAmount, done.correlationId) == ("o1", D("10.00"), "o1")
    assert w.wallet.refund_calls == [("o1", "u1", "void after a payment error")]
    assert w.wallet.balances["u1"] == D("10.00")
    assert await w.handlers.void_pending() == 0  # nothing left


async def test_the_voider_stops_while_the_wallet_is_down_and_keeps_the_rows() -> None:
    w = PaymentWorld()
    for o in ("o1", "o2"):
        w.table.put(Payment(o, "u1", D("1.00"), "USD", Status.VOID_PENDING))
    w.wallet.down = True
    assert await w.handlers.void_pending() == 0
    assert len(w.wallet.refund_calls) == 1  # stopped at the first
    assert {w.row(o).status for o in ("o1", "o2")} == {Status.VOID_PENDING}
    w.wallet.down = False
    assert await w.handlers.void_pending() == 2
    assert {w.row(o).status for o in ("o1", "o2")} == {Status.VOIDED}
    assert not w.uow.published  # nothing had been taken


async def test_the_voider_task_is_named_for_the_logs() -> None:
    assert PaymentWorld().handlers.voider().__name__ == "payment_voider"
