"""Order's locks and changes as its repository writes them, against the stack's PostgreSQL: a
batch's orders locked by one statement (each row then held by this transaction; an id with no order
simply left out), and a transition that answers the order as it wrote it, so the next event of the
same batch starts from there. Everything runs in a transaction that is rolled back, so the running
stack never sees it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

from tests.support import rolled_back
from tinysaga.contracts import events as ev
from tinysaga.order import domain
from tinysaga.order.handlers import Track
from tinysaga.order.repository import OrderRepository, state_of
from tinysaga.platform.consumer import HandlerContext
from tinysaga.platform.settings import Settings
from tinysaga.platform.uow import PgUnitOfWork


def new_order() -> tuple[domain.NewOrder, ev.Event]:
    order = domain.NewOrder(
        order_id=uuid.uuid4(),
        user_id="u-locks",
        product_id="PROD-1",
        quantity=1,
        price=Decimal("5.00"),
        total=Decimal("5.00"),
        currency="USD",
        payment_type="WALLET",
        deadline=datetime.now(UTC) + timedelta(minutes=5),
    )
    event = ev.make_event(
        ev.ORDER_INITIATED,
        correlation_id=str(order.order_id),
        orderId=str(order.order_id),
        userId=order.user_id,
        orderStatus=domain.Status.INITIATED,
        paymentType=order.payment_type,
        productId=order.product_id,
        productQuantity=order.quantity,
        price=order.price,
        totalAmount=order.total,
        currency=order.currency,
    )
    return order, event


async def lock_modes(conn: asyncpg.Connection, order_id: uuid.UUID) -> set[str]:
    """The locks this transaction holds on the order's row (pgrowlocks, loaded for this rolled-back
    transaction only): 'For Key Share' from the history rows that refer to it, 'For Update' when it
    is locked for a change."""
    rows = await conn.fetch(
        "SELECT unnest(l.modes) AS mode FROM pgrowlocks('orders') l JOIN orders o ON o.ctid = l.locked_row"
        " WHERE o.order_id=$1",
        order_id,
    )
    return {r["mode"] for r in rows}


def test_a_batch_locks_its_orders_in_one_statement_and_a_change_answers_the_new_row(settings: Settings) -> None:
    async def body(conn: asyncpg.Connection) -> None:
        repo = OrderRepository.of(PgUnitOfWork(conn, settings.topic))
        created = [new_order() for _ in range(3)]
        for order, event in created:
            await repo.add_order(order, event)
        first, second, untouched = (o.order_id for o, _ in created)
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pgrowlocks")
        assert "For Update" not in await lock_modes(conn, first)

        locked = await repo.lock_all({first, second, uuid.UUID(int=9)})

        assert set(locked) == {first, second}  # no row for an id with no order
        assert "For Update" in await lock_modes(conn, first)
        assert "For Update" in await lock_modes(conn, second)
        assert "For Update" not in await lock_modes(conn, untouched)

        row = locked[first]
        paid = domain.apply(state_of(row), domain.Input(ev.PAYMENT_DONE, transaction_id="tx-7"))
        assert paid is not None
        changed = await repo.save_change(row, paid, ev.PAYMENT_DONE)
        assert (changed["order_status"], changed["transaction_id"], changed["version"]) == (
            "PAYMENT_DONE",
            "tx-7",
            row["version"] + 1,
        )
        assert dict(changed) == dict(await repo.get(first))  # the row as it now is
        placed = domain.apply(state_of(changed), domain.Input(ev.INVENTORY_RESERVED, transaction_id="tx-7"))
        assert placed is not None and placed.status == domain.Status.PLACED
        history = await repo.history(first)
        assert [h["event_name"] for h in history] == [ev.ORDER_INITIATED, ev.PAYMENT_DONE]

    rolled_back(settings, "tinysaga_order", body)


def test_a_batch_s_plain_changes_land_by_one_statement_before_its_commit(settings: Settings) -> None:
    """ADR 70: `track` on a batch's outcomes, in the batch's transaction, keeps its plain changes and
    saves them together right before the commit: each order's row as its last change left it (the
    version counted once per change) and every change's history row in the order of the events."""

    def outcome(name: str, order_id: uuid.UUID) -> ev.Event:
        return ev.make_event(
            name,
            correlation_id=str(order_id),
            orderId=str(order_id),
            userId="u-locks",
            productId="PROD-1",
            productQuantity=1,
            totalAmount=Decimal("5.00"),
            currency="USD",
            transactionId="tx-9",
        )

    async def body(conn: asyncpg.Connection) -> None:
        uow = PgUnitOfWork(conn, settings.topic)
        repo = OrderRepository.of(uow)
        created = [new_order() for _ in range(2)]
        for order, event in created:
            await repo.add_order(order, event)
        a, b = (o.order_id for o, _ in created)
        events = (
            outcome(ev.PAYMENT_DONE, a),
            outcome(ev.PAYMENT_DONE, b),
            outcome(ev.INVENTORY_RESERVED, a),
        )
        track, memo = Track(OrderRepository.of), {}
        for event in events:
            await track(event, HandlerContext(None, event, settings.topic, uow, batch=events, memo=memo))  # type: ignore[arg-type]
        assert (await repo.get(a))["order_status"] == "INITIATED"  # kept for the commit
        await uow.flush()  # as PgUnitOfWork.begin does, right before the commit

        rows = {i: await repo.get(i) for i in (a, b)}
        assert {i: (r["order_status"], r["version"], r["transaction_id"]) for i, r in rows.items()} == {
            a: ("PLACED", 3, "tx-9"),
            b: ("PAYMENT_DONE", 2, "tx-9"),
        }
        history = [h["event_name"] for h in await repo.history(a)]
        assert history == [ev.ORDER_INITIATED, ev.PAYMENT_DONE, ev.INVENTORY_RESERVED]
        assert [h["event_name"] for h in await repo.history(b)] == [ev.ORDER_INITIATED, ev.PAYMENT_DONE]

    rolled_back(settings, "tinysaga_order", body)
