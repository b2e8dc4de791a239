"""The metrics (issue 17), without I/O: the consumer loop's counts per event name and outcome and
its lag per partition, the outbox sample, Order's saga and step timings from its history, the
wallet's retries, and /metrics refreshing its figures before it answers."""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition
from fastapi import FastAPI
from prometheus_client import REGISTRY

from tests.unit.fakes import FakeUnitOfWork, deliver
from tests.unit.fakes_order import FakeOrders
from tinysaga.contracts import events as ev
from tinysaga.order.domain import Status
from tinysaga.order.handlers import handlers, step_of
from tinysaga.platform import metrics, web
from tinysaga.platform.consumer import AlreadyHandled, ConsumerLoop
from tinysaga.platform.service import settle_heap
from tinysaga.platform.settings import Settings


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@dataclass
class Record:
    """What the loop reads of a Kafka record."""

    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    topic: str = "order-topic"
    partition: int = 0
    offset: int = 7
    key: bytes = b"k"


def loop(service: str, handled: dict[str, Any], **settings: Any) -> ConsumerLoop:
    return ConsumerLoop(Settings(**settings), service, None, handled, ("order-topic",))  # type: ignore[arg-type]


def an_event(name: str = ev.PAYMENT_DONE) -> ev.Event:
    return ev.new_event(name, correlation_id="o1", orderId="o1", userId="u1")


async def test_the_consumer_counts_handled_duplicate_and_dead_lettered_events_by_name() -> None:
    svc = "metrics-svc-1"

    async def ok(event: ev.Event, ctx: Any) -> None:
        return None

    async def seen(event: ev.Event, ctx: Any) -> None:
        raise AlreadyHandled

    async def broken(event: ev.Event, ctx: Any) -> None:
        raise RuntimeError("no")

    c = loop(svc, {ev.PAYMENT_DONE: ok}, consumer_max_attempts=1)
    dead: list[str] = []

    async def dead_letter(record: Any, error: str) -> None:
        dead.append(error)

    c._dead_letter = dead_letter  # type: ignore[method-assign]
    e = an_event()
    await c.dispatch(e, ok, Record(e.to_bytes()))  # type: ignore[arg-type]
    await c.dispatch(e, ok, Record(e.to_bytes()))  # type: ignore[arg-type]
    await c.dispatch(e, seen, Record(e.to_bytes()))  # type: ignore[arg-type]
    await c.dispatch(e, broken, Record(e.to_bytes()))  # type: ignore[arg-type]
    labels = {"service": svc, "event": ev.PAYMENT_DONE}
    assert value("tinysaga_events_total", **labels, outcome="handled") == 2
    assert value("tinysaga_events_total", **labels, outcome="duplicate") == 1
    assert value("tinysaga_events_total", **labels, outcome="dead_lettered") == 1
    assert dead == ["RuntimeError: no"]


async def test_the_consumer_counts_the_events_it_ignores_and_the_unreadable_ones() -> None:
    svc = "metrics-svc-2"

    async def ok(event: ev.Event, ctx: Any) -> None:
        return None

    c = loop(svc, {ev.PAYMENT_DONE: ok})
    dead: list[str] = []

    async def dead_letter(record: Any, error: str) -> None:
        dead.append(error)

    c._dead_letter = dead_letter  # type: ignore[method-assign]
    other = an_event(ev.REFUND_DONE)
    assert c._decode(Record(other.to_bytes(), [("eventName", b"REFUND_DONE")])) is None  # by its header
    assert c._decode(Record(other.to_bytes())) is None  # by its body
    replay = Record(an_event().to_bytes(), [("eventName", b"PAYMENT_DONE"), ("replayFor", b"someone-else")])
    assert c._decode(replay) is None
    assert value("tinysaga_events_total", service=svc, event=ev.REFUND_DONE, outcome="ignored") == 2
    assert value("tinysaga_events_total", service=svc, event=ev.PAYMENT_DONE, outcome="ignored") == 1
    bad = Record(b"{not json", [("eventName", b"PAYMENT_DONE")])
    error = c._decode(bad)
    assert isinstance(error, str)
    await c._invalid(bad, error)  # type: ignore[arg-type]
    assert value("tinysaga_events_total", service=svc, event=ev.PAYMENT_DONE, outcome="dead_lettered") == 1
    assert len(dead) == 1


@dataclass
class FakeKafkaConsumer:
    """The consumer's view of its partitions: high watermarks from the last fetch, positions."""

    ends: dict[TopicPartition, int | None]
    positions: dict[TopicPartition, int]

    def assignment(self) -> set[TopicPartition]:
        return set(self.ends)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.ends[tp]

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]


async def test_the_lag_per_partition_follows_the_assignment() -> None:
    c = loop("metrics-svc-3", {})
    c.group_id = "grp"
    p0, p1, p2 = (TopicPartition("order-topic", i) for i in range(3))
    c.consumer = FakeKafkaConsumer({p0: 10, p1: 5, p2: None}, {p0: 4, p1: 5, p2: 0})  # type: ignore[assignment]
    await c._record_lag()
    lag = {"service": "metrics-svc-3", "group": "grp", "topic": "order-topic"}
    assert value("tinysaga_consumer_lag", **lag, partition="0") == 6
    assert value("tinysaga_consumer_lag", **lag, partition="1") == 0
    assert REGISTRY.get_sample_value("tinysaga_consumer_lag", {**lag, "partition": "2"}) is None  # no fetch yet
    c.consumer = FakeKafkaConsumer({p1: 9}, {p1: 6})  # type: ignore[assignment]  # a rebalance took p0
    await c._record_lag()
    assert REGISTRY.get_sample_value("tinysaga_consumer_lag", {**lag, "partition": "0"}) is None
    assert value("tinysaga_consumer_lag", **lag, partition="1") == 3


class FakeOutboxDb:
    def __init__(self, n: int, age: float) -> None:
        self.row = {"n": n, "age": Decimal(str(age))}

    async def fetchrow(self, sql: str) -> dict[str, Any]:
        assert "FROM outbox" in sql
        return self.row


async def test_the_outbox_sample_sets_the_backlog_and_the_oldest_age() -> None:
    await metrics.sample_outbox("metrics-svc-4", FakeOutboxDb(12, 3.5))  # type: ignore[arg-type]
    assert value("tinysaga_outbox_rows", service="metrics-svc-4") == 12
    assert value("tinysaga_outbox_oldest_seconds", service="metrics-svc-4") == 3.5


def test_each_outcome_is_timed_under_the_step_that_publishes_it() -> None:
    assert step_of(ev.PAYMENT_DONE) == "charge"
    assert step_of(ev.INVENTORY_RESERVED) == "reserve"
    assert step_of(ev.INVENTORY_RESERVED_SEED_ALIAS) == "reserve"
    assert step_of(ev.REFUND_DONE) == "refund"
    assert step_of(ev.ORDER_TIMED_OUT) == "time_out"


def outcome(name: str, order_id: object) -> ev.Event:
    return ev.make_event(
        name,
        correlation_id=str(order_id),
        orderId=str(order_id),
        userId="user-1",
        productId="PROD-1",
        productQuantity=2,
        totalAmount=Decimal("20.00"),
        currency="USD",
        transactionId="tx-1",
        **({"failReason": ev.INSUFFICIENT_FUND} if name == ev.PAYMENT_FAIL else {}),
    )


async def test_order_times_each_step_and_the_saga_by_outcome() -> None:
    db, uow = FakeOrders(), FakeUnitOfWork()
    elapsed = {"s": 0.0}
    track = handlers(db.of, clock=lambda: db.now + timedelta(seconds=elapsed["s"]))
    placed, failed = db.put(Status.INITIATED), db.put(Status.INITIATED)
    before = {
        "charge": value("tinysaga_saga_step_seconds_count", step="charge"),
        "charge_sum": value("tinysaga_saga_step_seconds_sum", step="charge"),
        "reserve": value("tinysaga_saga_step_seconds_count", step="reserve"),
        "PLACED": value("tinysaga_saga_duration_seconds_count", outcome="PLACED"),
        "PLACED_sum": value("tinysaga_saga_duration_seconds_sum", outcome="PLACED"),
        "FAILED": value("tinysaga_saga_duration_seconds_count", outcome="FAILED"),
    }
    elapsed["s"] = 2.0
    await deliver("order", track, outcome(ev.PAYMENT_DONE, placed), uow)
    elapsed["s"] = 5.0
    await deliver("order", track, outcome(ev.INVENTORY_RESERVED, placed), uow)
    await deliver("order", track, outcome(ev.INVENTORY_RESERVED, placed), uow)  # a duplicate: not timed again
    await deliver("order", track, outcome(ev.PAYMENT_FAIL, failed), uow)
    assert db.orders[placed]["order_status"] == "PLACED" and db.orders[failed]["order_status"] == "FAILED"
    assert value("tinysaga_saga_step_seconds_count", step="charge") - before["charge"] == 2
    assert value("tinysaga_saga_step_seconds_sum", step="charge") - before["charge_sum"] == pytest.approx(7.0, abs=0.01)
    assert value("tinysaga_saga_step_seconds_count", step="reserve") - before["reserve"] == 1
    assert value("tinysaga_saga_duration_seconds_count", outcome="PLACED") - before["PLACED"] == 1
    assert value("tinysaga_saga_duration_seconds_sum", outcome="PLACED") - before["PLACED_sum"] == pytest.approx(
        5.0, abs=0.01
    )
    assert value("tinysaga_saga_duration_seconds_count", outcome="FAILED") - before["FAILED"] == 1


async def test_wallet_retries_and_give_ups_are_counted() -> None:
    from tests.unit.test_payment_adapters import DOWN, Reply, client

    retries = value("tinysaga_wallet_retries_total", call="refund")
    gave_up = value("tinysaga_wallet_unavailable_total", call="refund")
    debit_retries = value("tinysaga_wallet_retries_total", call="debit")
    wallet, _, _ = client([DOWN])
    with pytest.raises(Exception, match="connection refused"):
        await wallet.refund("o1", "u1", "")
    assert value("tinysaga_wallet_retries_total", call="refund") - retries == 2  # 3 attempts, 2 retries
    assert value("tinysaga_wallet_unavailable_total", call="refund") - gave_up == 1
    wallet, _, _ = client([Reply(503, "busy"), Reply(200, {"results": []})])
    await wallet.debit_many([])
    assert value("tinysaga_wallet_retries_total", call="debit") - debit_retries == 1


async def test_metrics_refreshes_its_figures_before_it_answers() -> None:
    app, calls = FastAPI(), []

    async def refresh() -> None:
        calls.append(1)
        metrics.OUTBOX_ROWS.labels("metrics-svc-5").set(len(calls))

    async def ready() -> bool:
        return True

    web.add_health(app, {"database": ready}, before_metrics=refresh)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as c:
        r = await c.get("/metrics")
        r = await c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'tinysaga_outbox_rows{service="metrics-svc-5"} 2.0' in r.text


def test_each_collection_is_timed_by_generation_and_the_frozen_objects_are_counted() -> None:
    metrics.watch_gc("gc-test")
    metrics.watch_gc("gc-test")  # once per process, however often asked
    assert sum(isinstance(cb, metrics.GcPauses) for cb in gc.callbacks) == 1
    before = value("tinysaga_gc_pause_seconds_count", service="gc-test", generation="2")
    gc.collect()
    assert value("tinysaga_gc_pause_seconds_count", service="gc-test", generation="2") == before + 1
    assert value("tinysaga_gc_pause_seconds_sum", service="gc-test", generation="2") > 0
    frozen = gc.get_freeze_count()
    try:
        settle_heap()
        assert gc.get_freeze_count() > frozen
        assert value("tinysaga_gc_frozen_objects", service="gc-test") == gc.get_freeze_count()
    finally:
        gc.unfreeze()
        for cb in [cb for cb in gc.callbacks if isinstance(cb, metrics.GcPauses)]:
            gc.callbacks.remove(cb)
