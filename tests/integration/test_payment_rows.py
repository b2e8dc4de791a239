"""Payment's charge rows as its repository writes them, against the stack's PostgreSQL: a batch's
payments and their outcome events by one statement (ADR 70). Everything runs in a transaction
that is rolled back, so the running stack never sees it."""

from __future__ import annotations

import uuid
from decimal import Decimal

import asyncpg
import orjson

from tests.support import rolled_back
from tinysaga.contracts import events as ev
from tinysaga.payment.domain import Payment, Status
from tinysaga.payment.repository import PaymentRepository
from tinysaga.platform.settings import Settings
from tinysaga.platform.uow import PgUnitOfWork


def charge(order_id: str, status: Status, tx: str | None) -> tuple[Payment, ev.Event]:
    name = ev.PAYMENT_DONE if status is Status.CHARGED else ev.PAYMENT_FAIL
    event = ev.make_event(
        name,
        correlation_id=order_id,
        orderId=order_id,
        userId="u-rows",
        orderStatus=name,
        paymentType="WALLET",
        productId="PROD-1",
        productQuantity=1,
        price=Decimal("5.00"),
        totalAmount=Decimal("5.00"),
        currency="USD",
        transactionId=tx,
        **({} if status is Status.CHARGED else {"failReason": ev.INSUFFICIENT_FUND}),
    )
    return Payment(order_id, "u-rows", Decimal("5.00"), "USD", status, tx), event


def test_a_batch_s_charges_are_written_with_their_events_once_each(settings: Settings) -> None:
    """Each new order's row and its event's outbox row; an order that has a row (from before, or
    earlier in the batch) gets neither; what is staged is what the outbox holds, in order."""
    known, paid, declined = (str(uuid.uuid4()) for _ in range(3))

    async def body(conn: asyncpg.Connection) -> None:
        uow = PgUnitOfWork(conn, settings.topic)
        repo = PaymentRepository.of(uow)
        await repo.add_charges([charge(known, Status.CHARGED, "tx-0")])
        before = len(uow.staged)
        batch = [
            charge(known, Status.DECLINED, None),  # has a row: nothing
            charge(paid, Status.CHARGED, "tx-1"),
            charge(declined, Status.DECLINED, None),
            charge(paid, Status.DECLINED, None),  # earlier in the batch: nothing
        ]
        await repo.add_charges(batch)

        rows = {
            r["order_id"]: r
            for r in await conn.fetch("SELECT * FROM payments WHERE order_id = ANY($1)", [known, paid, declined])
        }
        assert {o: (r["status"], r["transaction_id"]) for o, r in rows.items()} == {
            known: ("CHARGED", "tx-0"),
            paid: ("CHARGED", "tx-1"),
            declined: ("DECLINED", None),
        }
        staged = uow.staged[before:]
        assert [orjson.loads(s.payload)["orderId"] for s in staged] == [paid, declined]
        assert [orjson.loads(s.payload)["eventName"] for s in staged] == [ev.PAYMENT_DONE, ev.PAYMENT_FAIL]
        assert all(orjson.loads(s.headers)["eventName"] == orjson.loads(s.payload)["eventName"] for s in staged)
        outbox = await conn.fetch(
            "SELECT id, key, payload FROM outbox WHERE id = ANY($1::bigint[]) ORDER BY id", [s.id for s in staged]
        )
        assert [(r["id"], r["key"], bytes(r["payload"])) for r in outbox] == [(s.id, s.key, s.payload) for s in staged]
        await repo.add_charges([])  # nothing to write: no statement

    rolled_back(settings, "tinysaga_payment", body)
