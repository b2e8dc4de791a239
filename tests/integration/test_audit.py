"""`tiny-saga audit` finds each kind of violation it claims to find. Each one is built on a scratch
stack of its own: a fresh set of service databases (the services' migrations applied) in the test
stack's PostgreSQL, and a topic of its own on its Kafka, holding a consistent shop (a user who paid
for a placed order and got a failed one refunded); then one thing is broken the way a bug would break
it, and the audit must name it, and only it."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.support import run_sync
from tinysaga.ops.audit import OUTBOX_DATABASES, AuditReport, audit
from tinysaga.platform.migrations import apply_migrations
from tinysaga.platform.secrets import superuser_dsn
from tinysaga.platform.settings import Settings


class Scratch:
    """One scratch stack's databases and topic, and the shop written into them."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.tag = f"audit_{uuid.uuid4().hex[:8]}"
        self.topic = f"scratch-{self.tag}"
        self.user = f"user-{self.tag}"
        self.placed, self.failed = str(uuid.uuid4()), str(uuid.uuid4())

    def db(self, service: str) -> str:
        return f"{self.tag}_{service}"

    def dsn(self, service: str) -> str:
        return superuser_dsn(self.s, self.db(service))

    async def sql(self, service: str, *statements: str | tuple) -> None:
        conn = await asyncpg.connect(self.dsn(service))
        try:
            for st in statements:
                await (conn.execute(st) if isinstance(st, str) else conn.execute(*st))
        finally:
            await conn.close()

    async def create(self) -> None:
        admin = await asyncpg.connect(superuser_dsn(self.s))
        try:
            for svc in OUTBOX_DATABASES:
                await admin.execute(f"CREATE DATABASE {self.db(svc)}")
        finally:
            await admin.close()
        for svc in OUTBOX_DATABASES:
            await apply_migrations(self.dsn(svc), svc)
        u, placed, failed = self.user, self.placed, self.failed
        order = (
            "INSERT INTO orders(order_id, user_id, product_id, product_quantity, price, total_amount, currency,"
            " payment_type, order_status, fail_reason, refund_status, deadline_at)"
            " VALUES ($1, $2, 'sku-notebook', 2, 6.75, 13.50, 'USD', 'WALLET', $3, $4, $5, now())"
        )
        await self.sql(
            "order",
            (order, uuid.UUID(placed), u, "PLACED", None, None),
            (order, uuid.UUID(failed), u, "FAILED", "INVENTORY_INSUFFICIENT", "REFUND_DONE"),
        )
        tx = (
            "INSERT INTO transactions(transaction_id, user_id, order_id, transaction_type, payment_status, amount,"
            " currency) VALUES (gen_random_uuid(), $1, $2, $3, $4, $5, 'USD')"
        )
        await self.sql(
            "wallet",
            ("INSERT INTO wallets(user_id, balance, currency) VALUES ($1, 86.50, 'USD')", u),
            (tx, u, None, "DEPOSIT", "COMPLETED", Decimal("100")),
            (tx, u, placed, "PAYMENT", "COMPLETED", Decimal("13.50")),
            (tx, u, failed, "PAYMENT", "COMPLETED", Decimal("13.50")),
            (tx, u, failed, "REFUND", "REFUNDED", Decimal("13.50")),
        )
        await self.sql(
            "inventory",
            "UPDATE products SET available_count = available_count - 2 WHERE product_id = 'sku-notebook'",
            ("INSERT INTO reservations(order_id, product_id, quantity, status) VALUES ($1, 'sku-notebook', 2, $2)",)
            + (placed, "RESERVED"),
            ("INSERT INTO reservations(order_id, product_id, quantity, status) VALUES ($1, 'sku-notebook', 2, $2)",)
            + (failed, "RELEASED"),
        )
        bootstrap = self.s.kafka_bootstrap_direct
        kadmin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await kadmin.start()
        try:
            await kadmin.create_topics([NewTopic(self.topic, 1, self.s.replication_factor)])
        finally:
            await kadmin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(self.topic, b"{}", key=placed.encode())
        finally:
            await producer.stop()
        await self.commit_group(1)  # the scratch group has read the topic to its end

    async def commit_group(self, offset: int) -> None:
        c = AIOKafkaConsumer(
            bootstrap_servers=self.s.kafka_bootstrap_direct, group_id=self.topic, enable_auto_commit=False
        )
        await c.start()
        try:
            tp = TopicPartition(self.topic, 0)
            c.assign([tp])
            await c.commit({tp: offset})
        finally:
            await c.stop()

    async def drop(self) -> None:
        admin = await asyncpg.connect(superuser_dsn(self.s))
        try:
            for svc in OUTBOX_DATABASES:
                await admin.execute(f"DROP DATABASE IF EXISTS {self.db(svc)} WITH (FORCE)")
        finally:
            await admin.close()
        kadmin = AIOKafkaAdminClient(bootstrap_servers=self.s.kafka_bootstrap_direct)
        await kadmin.start()
        try:  # (the scratch group's offsets go with the topic)
            await kadmin.delete_topics([self.topic])
        finally:
            await kadmin.close()

    async def audit(self) -> AuditReport:
        return await audit(self.s, dsn=self.dsn, topics=[self.topic])


@pytest.fixture
def scratch(settings: Settings) -> Iterator[Scratch]:
    # sync tests that run their coroutines with run_sync: the browser tests' Playwright keeps an
    # event loop running on the main thread
    sc = Scratch(settings)
    try:
        run_sync(sc.create())
        yield sc
    finally:
        run_sync(sc.drop())


def test_a_consistent_shop_has_no_violation(scratch: Scratch) -> None:
    report = run_sync(scratch.audit())
    assert report.ok, report.render()
    assert report.orders_by_status == {"PLACED": 1, "FAILED": 1}
    assert report.checked["consumer groups"] >= 1


async def _doubled_charge(sc: Scratch) -> None:
    # a second debit for the placed order, taken from the wallet too (so the balance still adds up:
    # it is the charge itself that is wrong); the unique index that forbids it is dropped first
    await sc.sql(
        "wallet",
        "DROP INDEX transactions_order_kind",
        (
            "INSERT INTO transactions(transaction_id, user_id, order_id, transaction_type, payment_status, amount,"
            " currency) VALUES (gen_random_uuid(), $1, $2, 'PAYMENT', 'COMPLETED', 13.50, 'USD')",
            sc.user,
            sc.placed,
        ),
        ("UPDATE wallets SET balance = balance - 13.50 WHERE user_id = $1", sc.user),
    )


async def _stock_not_given_back(sc: Scratch) -> None:
    # the failed order's reservation was never released: its two notebooks stay taken
    await sc.sql(
        "inventory",
        ("UPDATE reservations SET status = 'RESERVED' WHERE order_id = $1", sc.failed),
        "UPDATE products SET available_count = available_count - 2 WHERE product_id = 'sku-notebook'",
    )


async def _order_left_in_flight(sc: Scratch) -> None:
    await sc.sql("order", ("UPDATE orders SET order_status = 'PAYMENT_DONE' WHERE order_id = $1", uuid.UUID(sc.placed)))


async def _outbox_row_never_sent(sc: Scratch) -> None:
    await sc.sql(
        "payment",
        "INSERT INTO outbox(topic, key, event_name, payload) VALUES ('order-topic', 'k', 'PAYMENT_DONE', '\\x7b7d')",
    )


async def _event_not_consumed(sc: Scratch) -> None:
    await sc.commit_group(0)  # the group is one record behind the end of its topic


async def _charged_and_not_refunded(sc: Scratch) -> None:
    await sc.sql(
        "wallet",
        ("DELETE FROM transactions WHERE order_id = $1 AND transaction_type = 'REFUND'", sc.failed),
        ("UPDATE wallets SET balance = balance - 13.50 WHERE user_id = $1", sc.user),
    )


async def _refund_failed_without_alert(sc: Scratch) -> None:
    # the failed order's refund failed (the money stays taken, which REFUND_FAILED allows), but no
    # alert was raised for an operator
    await sc.sql(
        "order", ("UPDATE orders SET refund_status = 'REFUND_FAILED' WHERE order_id = $1", uuid.UUID(sc.failed))
    )
    await _charged_and_not_refunded(sc)


async def _placed_holds_the_wrong_quantity(sc: Scratch) -> None:
    # the placed order (2 notebooks) holds a reservation of 1, and the product's count agrees with it
    await sc.sql(
        "inventory",
        ("UPDATE reservations SET quantity = 1 WHERE order_id = $1", sc.placed),
        "UPDATE products SET available_count = available_count + 1 WHERE product_id = 'sku-notebook'",
    )


async def _canceled_but_charged(sc: Scratch) -> None:
    # the failed order is CANCELED instead, says nothing was charged, but its charge was kept
    await sc.sql(
        "order",
        (
            "UPDATE orders SET order_status = 'CANCELED', fail_reason = NULL, refund_status = NULL WHERE order_id = $1",
            uuid.UUID(sc.failed),
        ),
    )
    await _charged_and_not_refunded(sc)


async def _balance_drifted(sc: Scratch) -> None:
    await sc.sql("wallet", ("UPDATE wallets SET balance = balance + 1 WHERE user_id = $1", sc.user))


@pytest.mark.parametrize(
    ("breakage", "kinds"),
    [
        (_doubled_charge, {"double-charge"}),
        (_stock_not_given_back, {"stock-not-returned"}),
        (_order_left_in_flight, {"in-flight"}),
        (_outbox_row_never_sent, {"outbox"}),
        (_event_not_consumed, {"lag"}),
        # the order says REFUND_DONE too, which is now untrue
        (_charged_and_not_refunded, {"failed-cost-money", "refund-status"}),
        (_refund_failed_without_alert, {"refund-failed-without-alert"}),
        (_placed_holds_the_wrong_quantity, {"placed-wrong-stock"}),
        (_canceled_but_charged, {"failed-cost-money", "refund-status"}),
        (_balance_drifted, {"balance"}),
    ],
    ids=lambda v: getattr(v, "__name__", "").strip("_") or None,
)
def test_the_audit_names_each_violation(
    scratch: Scratch, breakage: Callable[[Scratch], Awaitable[None]], kinds: set[str]
) -> None:
    run_sync(breakage(scratch))
    report = run_sync(scratch.audit())
    assert not report.ok
    assert report.kinds() == kinds, report.render()
    assert all(k in report.render() for k in kinds)
