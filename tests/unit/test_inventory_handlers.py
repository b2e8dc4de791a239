"""Inventory's steps (`reserve`, `release`) against a fake repository and a fake Order client, and
the reservation rule itself (`tinysaga.inventory.domain`)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.fakes import FakeUnitOfWork, deliver, deliver_batch
from tests.unit.fakes_inventory import FakeInventory, FakeOrders
from tinysaga.contracts import events as ev
from tinysaga.inventory.domain import (
    CANCELLED,
    INVENTORY_NOT_AVAILABLE,
    REJECTED,
    RELEASED,
    RESERVED,
    Release,
    Reserve,
    Status,
    release,
    release_answer,
    reserve,
)
from tinysaga.inventory.handlers import handlers, released, reply
from tinysaga.inventory.repository import InventoryRepository, Reservation
from tinysaga.platform.uow import PgUnitOfWork

INVENTORY = "inventory"


@dataclass
class World:
    inventory: FakeInventory
    orders: FakeOrders
    uow: FakeUnitOfWork

    @property
    def hs(self) -> dict[str, Any]:
        return handlers(self.inventory.of, self.orders)

    async def deliver(self, event: ev.Event) -> bool:
        return await deliver(INVENTORY, self.hs, event, self.uow)


@pytest.fixture
def world() -> World:
    return World(FakeInventory(stock={"widget": 5}), FakeOrders(), FakeUnitOfWork())


def payment_done(order_id: str = "o1", quantity: int = 2, **fields: Any) -> ev.Event:
    base: dict[str, Any] = {
        "orderId": order_id,
        "userId": "u1",
        "paymentType": "WALLET",
        "productId": "widget",
        "productQuantity": quantity,
        "price": Decimal("3.00"),
        "totalAmount": Decimal("3.00") * quantity,
        "currency": "USD",
        "transactionId": "t1",
    }
    return ev.new_event(ev.PAYMENT_DONE, correlation_id=order_id, **{**base, **fields})


def timed_out(order_id: str = "o1", quantity: int = 2) -> ev.Event:
    return ev.new_event(
        ev.ORDER_TIMED_OUT,
        correlation_id=order_id,
        orderId=order_id,
        userId="u1",
        productId="widget",
        productQuantity=quantity,
        failReason="TIMEOUT",
    )


def cancel_requested(order_id: str = "o1", quantity: int = 2) -> ev.Event:
    return ev.make_event(
        ev.ORDER_CANCEL_REQUESTED,
        correlation_id=order_id,
        orderId=order_id,
        userId="u1",
        productId="widget",
        productQuantity=quantity,
        totalAmount=Decimal("3.00") * quantity,
        currency="USD",
    )


def again(event: ev.Event) -> ev.Event:
    """The same order's event under a new eventId (a producer's retry)."""
    return event.model_copy(update={"eventId": uuid.uuid4()})


# ---- reserve -------------------------------------------------------------------------------------


async def test_reserve_takes_the_stock_and_answers_reserved(world: World) -> None:
    assert await world.deliver(payment_done(quantity=2))
    assert world.inventory.stock["widget"] == 3
    assert world.inventory.reservations["o1"] == Reservation("widget", 2, RESERVED)
    [answer] = world.uow.published
    assert answer.eventName == ev.INVENTORY_RESERVED and isinstance(answer, ev.InventoryReserved)
    assert (answer.orderId, answer.userId, answer.productId, answer.productQuantity) == ("o1", "u1", "widget", 2)
    assert answer.orderStatus == ev.INVENTORY_RESERVED and answer.totalAmount == Decimal("6.00")
    assert answer.correlationId == "o1" and answer.transactionId == "t1"


async def test_reserve_without_enough_stock_takes_nothing_and_answers_insufficient(world: World) -> None:
    assert await world.deliver(payment_done(quantity=6))
    assert world.inventory.stock["widget"] == 5
    assert world.inventory.reservations["o1"].status == REJECTED
    [answer] = world.uow.published
    assert answer.eventName == ev.INVENTORY_INSUFFICIENT
    assert answer.inventoryFailReason == INVENTORY_NOT_AVAILABLE and answer.isPartialOrder is False


async def test_reserve_of_an_unknown_product_is_rejected(world: World) -> None:
    assert await world.deliver(payment_done(productId="nope"))
    assert world.inventory.reservations["o1"].status == REJECTED
    assert world.uow.names() == [ev.INVENTORY_INSUFFICIENT]


async def test_a_redelivered_payment_reserves_once(world: World) -> None:
    e = payment_done()
    assert await world.deliver(e)
    assert not await world.deliver(e)  # same eventId: skipped
    assert world.inventory.stock["widget"] == 3
    assert world.uow.names() == [ev.INVENTORY_RESERVED]


async def test_the_same_order_under_a_new_event_id_gets_no_second_reservation(world: World) -> None:
    e, retry = payment_done(), again(payment_done())
    assert await world.deliver(e)
    assert await world.deliver(retry)  # recorded as handled, nothing done
    assert retry.eventId in world.uow.handled
    assert world.inventory.stock["widget"] == 3
    assert world.inventory.reservations["o1"] == Reservation("widget", 2, RESERVED)
    assert world.uow.names() == [ev.INVENTORY_RESERVED]


async def test_a_batch_locks_its_orders_reservations_once_and_sees_its_own_writes(world: World) -> None:
    """ADR 70: the first payment of a batch locks the reservations of all its orders in one call;
    a repeat of an order later in the same batch (a new event id) sees the reservation the batch
    made, and the stock is taken in the batch's order (the third order finds too little)."""
    world.inventory.reservations["o0"] = Reservation("widget", 1, RESERVED)  # reserved before this batch
    first, again = payment_done("o1", 2), payment_done("o1", 2)
    events = [payment_done("o0", 1), first, payment_done("o2", 3), again, payment_done("o3", 1)]
    await deliver_batch(INVENTORY, world.hs, events, world.uow)
    assert world.inventory.locks == [["o0", "o1", "o2", "o3"]]
    assert {o: r.status for o, r in world.inventory.reservations.items()} == {
        "o0": RESERVED,
        "o1": RESERVED,
        "o2": RESERVED,
        "o3": REJECTED,
    }
    assert world.inventory.stock["widget"] == 0
    assert world.uow.names() == [ev.INVENTORY_RESERVED, ev.INVENTORY_RESERVED, ev.INVENTORY_INSUFFICIENT]
    assert world.uow.commits == 1


async def test_a_rejected_order_is_not_reserved_later_either(world: World) -> None:
    assert await world.deliver(payment_done(quantity=6))
    world.inventory.stock["widget"] = 100
    assert await world.deliver(again(payment_done(quantity=6)))
    assert world.inventory.stock["widget"] == 100
    assert world.uow.names() == [ev.INVENTORY_INSUFFICIENT]


@pytest.mark.parametrize("missing", ["orderId", "productId", "productQuantity", "userId"])
async def test_a_payment_without_what_a_reservation_needs_is_refused(world: World, missing: str) -> None:
    fields = payment_done().model_dump()
    fields[missing] = None
    bad = ev.Event.model_validate({**fields, "eventName": ev.PAYMENT_DONE})
    with pytest.raises(ValueError, match=missing):
        await world.deliver(bad)
    assert world.inventory.stock["widget"] == 5 and not world.inventory.reservations
    assert not world.uow.published and not world.uow.handled


# ---- release -------------------------------------------------------------------------------------


async def test_a_timeout_gives_a_reservation_back_once(world: World) -> None:
    world.orders.timed_out_orders.add("o1")
    assert await world.deliver(payment_done(quantity=2))
    t = timed_out()
    assert await world.deliver(t)
    assert world.inventory.stock["widget"] == 5
    assert world.inventory.reservations["o1"].status == RELEASED
    assert not await world.deliver(t)  # redelivered
    assert await world.deliver(again(t))  # Order's retry: the row is RELEASED already
    assert world.inventory.stock["widget"] == 5
    assert world.uow.names() == [ev.INVENTORY_RESERVED]  # the release answers nothing
    assert set(world.orders.asked) == {("o1", ev.ORDER_TIMED_OUT)}


async def test_a_timeout_before_the_payment_blocks_a_late_reservation(world: World) -> None:
    world.orders.timed_out_orders.add("o1")
    assert await world.deliver(timed_out(quantity=2))
    assert world.inventory.reservations["o1"] == Reservation("widget", 2, CANCELLED)
    assert await world.deliver(payment_done(quantity=2))  # the late PAYMENT_DONE
    assert world.inventory.stock["widget"] == 5
    assert world.inventory.reservations["o1"].status == CANCELLED
    assert not world.uow.published  # no INVENTORY_RELEASED for a timeout


async def test_a_timeout_of_a_rejected_order_changes_nothing(world: World) -> None:
    world.orders.timed_out_orders.add("o1")
    assert await world.deliver(payment_done(quantity=6))
    assert await world.deliver(timed_out(quantity=6))
    assert world.inventory.stock["widget"] == 5
    assert world.inventory.reservations["o1"].status == REJECTED


async def test_a_forged_timeout_changes_nothing(world: World) -> None:
    assert await world.deliver(payment_done(quantity=2))
    t = timed_out()
    assert await world.deliver(t)  # Order did not time o1 out
    assert world.orders.asked == [("o1", ev.ORDER_TIMED_OUT)]
    assert world.inventory.stock["widget"] == 3
    assert world.inventory.reservations["o1"].status == RESERVED
    assert t.eventId in world.uow.handled  # recorded: a redelivery is skipped
    assert not await world.deliver(t)
    assert world.inventory.stock["widget"] == 3 and world.inventory.reservations["o1"].status == RESERVED


async def test_a_forged_timeout_of_an_unknown_order_blocks_nothing(world: World) -> None:
    assert await world.deliver(timed_out("o2"))
    assert not world.inventory.reservations
    assert await world.deliver(payment_done("o2"))
    assert world.inventory.reservations["o2"].status == RESERVED


async def test_a_timeout_while_order_is_unreachable_is_retried_not_recorded(world: World) -> None:
    world.orders.down = True
    t = timed_out()
    with pytest.raises(OSError):
        await world.deliver(t)
    assert t.eventId not in world.uow.handled and not world.inventory.reservations


async def test_a_timeout_without_an_order_is_refused_before_asking_order(world: World) -> None:
    fields = timed_out().model_dump()
    fields["orderId"] = None
    with pytest.raises(ValueError, match="orderId"):
        await world.deliver(ev.Event.model_validate({**fields, "eventName": ev.ORDER_TIMED_OUT}))
    assert world.orders.asked == [] and not world.uow.handled


# ---- release for a cancel (ADR 13) ----------------------------------------------------------------


async def test_a_cancel_gives_a_reservation_back_and_answers_released_once(world: World) -> None:
    world.orders.canceled_orders.add("o1")
    assert await world.deliver(payment_done(quantity=2))
    c = cancel_requested(quantity=2)
    assert await world.deliver(c)
    assert world.orders.asked == [("o1", ev.ORDER_CANCEL_REQUESTED)]
    assert world.inventory.stock["widget"] == 5
    assert world.inventory.reservations["o1"].status == RELEASED
    assert world.uow.names() == [ev.INVENTORY_RESERVED, ev.INVENTORY_RELEASED]
    released = world.uow.published[1]
    assert isinstance(released, ev.InventoryReleased)
    assert (released.orderId, released.userId, released.productId, released.productQuantity) == (
        "o1",
        "u1",
        "widget",
        2,
    )
    assert released.correlationId == "o1"
    assert not await world.deliver(c)  # redelivered
    assert await world.deliver(again(c))  # published again: RELEASED already, nothing new
    assert world.inventory.stock["widget"] == 5
    assert world.uow.names() == [ev.INVENTORY_RESERVED, ev.INVENTORY_RELEASED]


async def test_a_cancel_before_the_payment_blocks_a_late_reservation_and_answers_once(world: World) -> None:
    world.orders.canceled_orders.add("o1")
    c = cancel_requested(quantity=2)
    assert await world.deliver(c)
    assert world.inventory.reservations["o1"] == Reservation("widget", 2, CANCELLED)
    assert world.uow.names() == [ev.INVENTORY_RELEASED]
    assert await world.deliver(payment_done(quantity=2))  # the late PAYMENT_DONE reserves nothing
    assert await world.deliver(again(c))
    assert world.inventory.stock["widget"] == 5
    assert world.inventory.reservations["o1"].status == CANCELLED
    assert world.uow.names() == [ev.INVENTORY_RELEASED]


async def test_a_cancel_of_a_rejected_order_answers_nothing_new(world: World) -> None:
    """Its INVENTORY_INSUFFICIENT already settled the stock side."""
    world.orders.canceled_orders.add("o1")
    assert await world.deliver(payment_done(quantity=6))
    assert await world.deliver(cancel_requested(quantity=6))
    assert world.inventory.stock["widget"] == 5 and world.inventory.reservations["o1"].status == REJECTED
    assert world.uow.names() == [ev.INVENTORY_INSUFFICIENT]


async def test_a_forged_cancel_changes_nothing(world: World) -> None:
    assert await world.deliver(payment_done(quantity=2))
    c = cancel_requested()
    assert await world.deliver(c)  # Order's history does not hold it
    assert world.orders.asked == [("o1", ev.ORDER_CANCEL_REQUESTED)]
    assert world.inventory.stock["widget"] == 3 and world.inventory.reservations["o1"].status == RESERVED
    assert c.eventId in world.uow.handled
    assert await world.deliver(cancel_requested("o2"))  # nor blocks an order it does not know
    assert "o2" not in world.inventory.reservations
    assert world.uow.names() == [ev.INVENTORY_RESERVED]


async def test_a_cancel_is_not_a_timeout(world: World) -> None:
    """Order timed o1 out but did not cancel it: a cancel of o1 is forged, and the other way round."""
    world.orders.timed_out_orders.add("o1")
    world.orders.canceled_orders.add("o2")
    for oid in ("o1", "o2"):
        assert await world.deliver(payment_done(oid, quantity=1))
    assert await world.deliver(cancel_requested("o1", quantity=1))
    assert await world.deliver(timed_out("o2", quantity=1))
    assert world.inventory.stock["widget"] == 3
    assert {world.inventory.reservations[o].status for o in ("o1", "o2")} == {RESERVED}


async def test_a_cancel_while_order_is_unreachable_is_retried_not_recorded(world: World) -> None:
    world.orders.down = True
    c = cancel_requested()
    with pytest.raises(OSError):
        await world.deliver(c)
    assert c.eventId not in world.uow.handled and not world.inventory.reservations and not world.uow.published


async def test_a_cancel_without_what_it_needs_is_refused_before_asking_order(world: World) -> None:
    bad = ev.Event(eventName=ev.ORDER_CANCEL_REQUESTED, correlationId="o1", orderId="o1", userId="u1")
    with pytest.raises(ValueError, match="without a valid"):
        await world.deliver(bad)
    assert world.orders.asked == [] and not world.uow.handled


async def test_inventory_handles_only_its_triggers(world: World) -> None:
    initiated = ev.new_event(
        ev.ORDER_INITIATED,
        correlation_id="o1",
        orderId="o1",
        userId="u1",
        paymentType="WALLET",
        productId="widget",
        productQuantity=1,
        price=Decimal(1),
        totalAmount=Decimal(1),
        currency="USD",
    )
    assert not await world.deliver(initiated)
    assert not world.uow.handled


# ---- the rule, pure ------------------------------------------------------------------------------


def test_reserve_rule() -> None:
    assert reserve(5, 5, None) is Reserve.RESERVE
    assert reserve(5, 6, None) is Reserve.REJECT
    assert reserve(0, 1, None) is Reserve.REJECT
    for prior in Status:
        assert reserve(100, 1, prior) is Reserve.ALREADY


def test_release_rule() -> None:
    assert release(None) is Release.CANCEL
    assert release(RESERVED) is Release.RELEASE
    for prior in (REJECTED, RELEASED, CANCELLED):
        assert release(prior) is Release.NOTHING


def test_only_a_cancel_that_changed_the_row_is_answered() -> None:
    for decision in (Release.RELEASE, Release.CANCEL):
        assert release_answer(ev.ORDER_CANCEL_REQUESTED, decision) == ev.INVENTORY_RELEASED
        assert release_answer(ev.ORDER_TIMED_OUT, decision) is None
    for trigger in (ev.ORDER_CANCEL_REQUESTED, ev.ORDER_TIMED_OUT):
        assert release_answer(trigger, Release.NOTHING) is None


ops = st.lists(
    st.tuples(st.sampled_from(["pay", "timeout"]), st.integers(0, 5), st.integers(1, 7)),
    max_size=30,
)


@settings(max_examples=50, deadline=None)
@given(initial=st.integers(0, 20), steps=ops)
def test_stock_never_goes_negative_and_nothing_is_lost(initial: int, steps: list[tuple[str, int, int]]) -> None:
    """Any order of payments and timeouts (each repeated, in any order): the stock stays >= 0, and
    what is in stock plus what is RESERVED is what there was."""
    stock = initial
    rows: dict[int, tuple[int, Status]] = {}
    for kind, order, quantity in steps:
        prior = rows.get(order)
        if kind == "pay":
            decision = reserve(stock, quantity, None if prior is None else prior[1])
            if decision is Reserve.RESERVE:
                stock -= quantity
                rows[order] = (quantity, RESERVED)
            elif decision is Reserve.REJECT:
                rows[order] = (quantity, REJECTED)
        else:
            match release(None if prior is None else prior[1]):
                case Release.RELEASE:
                    assert prior is not None
                    stock += prior[0]
                    rows[order] = (prior[0], RELEASED)
                case Release.CANCEL:
                    rows[order] = (quantity, CANCELLED)
                case Release.NOTHING:
                    pass
        assert stock >= 0
        assert stock + sum(q for q, s in rows.values() if s == RESERVED) == initial


@settings(max_examples=50, deadline=None)
@given(initial=st.integers(0, 20), steps=ops)
def test_the_handlers_keep_the_stock_whole(initial: int, steps: list[tuple[str, int, int]]) -> None:
    """The same through the handlers and the fake repository, every timeout confirmed by Order."""
    w = World(FakeInventory(stock={"widget": initial}), FakeOrders(), FakeUnitOfWork())

    async def run() -> None:
        for kind, order, quantity in steps:
            oid = f"o{order}"
            if kind == "pay":
                await w.deliver(payment_done(oid, quantity))
            else:
                w.orders.timed_out_orders.add(oid)
                await w.deliver(timed_out(oid, quantity))
            reserved = sum(r.quantity for r in w.inventory.reservations.values() if r.status == RESERVED)
            assert 0 <= w.inventory.stock["widget"] and w.inventory.stock["widget"] + reserved == initial
        # one answer per order that paid before it timed out
        answered = [e.orderId for e in w.uow.published]
        assert len(answered) == len(set(answered))

    asyncio.run(run())


cancel_ops = st.lists(
    st.tuples(st.sampled_from(["pay", "cancel", "timeout"]), st.integers(0, 4), st.integers(1, 7)),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(initial=st.integers(0, 20), steps=cancel_ops)
def test_a_canceled_order_never_holds_stock_and_is_answered_once(
    initial: int, steps: list[tuple[str, int, int]]
) -> None:
    """Payments, cancels and timeouts in any order, each repeated: the stock stays whole, an order
    once canceled holds no stock whatever lands after, and each canceled order that reached
    inventory before or by its cancel gets at most one INVENTORY_RELEASED."""
    w = World(FakeInventory(stock={"widget": initial}), FakeOrders(), FakeUnitOfWork())

    async def run() -> None:
        for kind, order, quantity in steps:
            oid = f"o{order}"
            if kind == "pay":
                await w.deliver(payment_done(oid, quantity))
            elif kind == "cancel":
                w.orders.canceled_orders.add(oid)
                await w.deliver(cancel_requested(oid, quantity))
            else:
                w.orders.timed_out_orders.add(oid)
                await w.deliver(timed_out(oid, quantity))
            held = {o: r for o, r in w.inventory.reservations.items() if r.status == RESERVED}
            assert (
                0 <= w.inventory.stock["widget"]
                and w.inventory.stock["widget"] + sum(r.quantity for r in held.values()) == initial
            )
            assert not set(held) & w.orders.canceled_orders
        released = [e.orderId for e in w.uow.published if e.eventName == ev.INVENTORY_RELEASED]
        assert len(released) == len(set(released)) and set(released) <= w.orders.canceled_orders

    asyncio.run(run())


# ---- the real repository's one-statement write ---------------------------------------------------


@dataclass
class RecordingConnection:
    """Keeps the statements it is given (no database)."""

    statements: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    row: dict[str, Any] | None = None  # what fetchrow answers

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        self.statements.append((sql, args))
        return self.row

    async def execute(self, sql: str, *args: Any) -> None:
        self.statements.append((sql, args))


async def test_the_stock_the_reservation_row_and_its_answer_are_one_statement() -> None:
    conn = RecordingConnection(row={"outcome": "REJECTED", "outbox_id": 7})
    uow = PgUnitOfWork(conn, "order-topic")  # type: ignore[arg-type]
    paid = payment_done()
    insufficient = reply(ev.INVENTORY_INSUFFICIENT, paid, inventoryFailReason=INVENTORY_NOT_AVAILABLE)
    answers = {RESERVED: reply(ev.INVENTORY_RESERVED, paid), REJECTED: insufficient}
    assert await InventoryRepository.of(uow).reserve("o1", "widget", 2, answers) is REJECTED
    [(sql, args)] = conn.statements
    assert sql.startswith("WITH t AS (UPDATE products SET available_count = available_count - $3")
    assert "AND available_count >= $3" in sql and "INSERT INTO reservations" in sql
    assert "INSERT INTO outbox" in sql and "WHERE v.outcome = (SELECT status::text FROM r LIMIT 1)" in sql
    assert "pg_notify" not in sql
    assert args[:3] == ("o1", "widget", 2) and len(args) == 15 and "$15" in sql and "$16" not in sql
    assert args[3:6] == ("order-topic", "o1", ev.INVENTORY_RESERVED) and args[8] == "RESERVED"
    assert args[9:12] == ("order-topic", "o1", ev.INVENTORY_INSUFFICIENT) and args[14] == "REJECTED"
    [staged] = uow.staged  # the answer the statement wrote, for the publisher
    assert (staged.id, staged.payload) == (7, args[12])


async def test_nothing_is_staged_when_the_statement_wrote_no_outbox_row() -> None:
    conn = RecordingConnection(row={"outcome": "RESERVED", "outbox_id": None})
    uow = PgUnitOfWork(conn, "order-topic")  # type: ignore[arg-type]
    answers = {RESERVED: reply(ev.INVENTORY_RESERVED, payment_done())}
    assert await uow.change_with_outcome("r AS (SELECT 1)", "r", (), answers, outcome="'RESERVED'") == "RESERVED"
    assert uow.staged == []


async def test_a_cancel_s_row_and_its_answer_are_one_statement_and_a_timeout_s_has_none() -> None:
    conn = RecordingConnection()
    repo = InventoryRepository.of(PgUnitOfWork(conn, "order-topic"))  # type: ignore[arg-type]
    answer = released(ev.INVENTORY_RELEASED, cancel_requested(), "widget", 2)
    await repo.cancel("o1", "widget", 2, answer)
    [(sql, args)] = conn.statements
    assert sql.startswith("WITH r AS (INSERT INTO reservations(order_id, product_id, quantity, status)")
    assert "INSERT INTO outbox" in sql and "WHERE EXISTS (SELECT 1 FROM r)" in sql
    assert args[:4] == ("o1", "widget", 2, "CANCELLED") and args[6] == ev.INVENTORY_RELEASED
    conn.statements.clear()
    await repo.cancel("o1", "widget", 2)
    [(sql, args)] = conn.statements
    assert sql.startswith("INSERT INTO reservations") and "outbox" not in sql


async def test_a_cancel_s_release_stages_its_answer_with_the_row() -> None:
    conn = RecordingConnection()
    repo = InventoryRepository.of(PgUnitOfWork(conn, "order-topic"))  # type: ignore[arg-type]
    await repo.give_back("o1", "widget", 2, released(ev.INVENTORY_RELEASED, cancel_requested(), "widget", 2))
    [(stock, stock_args), (row, row_args)] = conn.statements
    assert stock.startswith("UPDATE products") and stock_args == ("widget", 2)
    assert row.startswith("WITH r AS (UPDATE reservations SET status=$2") and "INSERT INTO outbox" in row
    assert row_args[:2] == ("o1", "RELEASED") and row_args[4] == ev.INVENTORY_RELEASED
    conn.statements.clear()
    await repo.give_back("o1", "widget", 2)
    assert [sql.split(" SET")[0] for sql, _ in conn.statements] == ["UPDATE products", "UPDATE reservations"]
    assert all("outbox" not in sql for sql, _ in conn.statements)
