"""Order's steps against a fake repository (`tests.unit.fakes_order`) and a FakeUnitOfWork:
`track` (the saga's outcomes move the order as the state machine's table says; duplicates, stale
and reordered events, unknown orders, the REFUND_FAILED alert; a cancel's answers, ORDER_CANCELED
once), `time_out` (the sweeper), `create_order` (stock, idempotency) and the requests
`cancel_order`, `ship`, `deliver`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.unit.fakes import FakeUnitOfWork, deliver, deliver_batch
from tests.unit.fakes_order import FakeOrderRepository, FakeOrders
from tinysaga.contracts import events as ev
from tinysaga.order import domain
from tinysaga.order.adapters import Product
from tinysaga.order.domain import FailReason, Refund, Status
from tinysaga.order.handlers import (
    CancelOrder,
    CreateOrder,
    DeliverOrder,
    InFlightBound,
    OrderRequest,
    ShipOrder,
    TimeOut,
    handlers,
)

ORDER = "order"

# A consistent row for each status an event may find the order in.
STARTS: dict[Status, dict[str, Any]] = {
    Status.INITIATED: {},
    Status.PAYMENT_DONE: {"transaction_id": "tx-1"},
    Status.REFUND_INITIATED: {
        "fail_reason": FailReason.INVENTORY_INSUFFICIENT,
        "refund_status": Refund.REFUND_INITIATED,
        "transaction_id": "tx-1",
    },
    Status.FAILED: {"fail_reason": FailReason.TIMEOUT},
    Status.PLACED: {"transaction_id": "tx-1"},
    Status.CANCELING: {"transaction_id": "tx-1"},  # neither side settled yet
    Status.CANCELED: {"payment_settled": True, "stock_settled": True},  # never charged
}


def outcome(name: str, order_id: object, **over: Any) -> ev.Event:
    """A saga outcome as Payment or Inventory publishes it (its payload complete)."""
    fields: dict[str, Any] = {
        "orderId": str(order_id),
        "userId": "user-1",
        "productId": "PROD-1",
        "productQuantity": 2,
        "totalAmount": Decimal("20.00"),
        "currency": "USD",
        "transactionId": "tx-1",
    }
    if name == ev.PAYMENT_FAIL:
        fields["failReason"] = ev.INSUFFICIENT_FUND
    if name == ev.REFUND_FAILED:
        fields["failReason"] = "wallet unreachable"
    if name == ev.INVENTORY_INSUFFICIENT:
        fields["inventoryFailReason"] = "none left"
    fields.update(over)
    return ev.make_event(name, correlation_id=str(order_id), **fields)


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def db() -> FakeOrders:
    return FakeOrders()


@pytest.fixture
def uow() -> FakeUnitOfWork:
    return FakeUnitOfWork()


async def track(db: FakeOrders, uow: FakeUnitOfWork, event: ev.Event) -> bool:
    return await deliver(ORDER, handlers(db.of), event, uow)


# ---- track: the table ----------------------------------------------------------------------------

TABLE = [(name, src, dst) for (name, src), dst in domain.TRANSITIONS.items() if name in ev.STEP_OUTCOMES]


def test_the_table_covers_every_outcome() -> None:
    assert {name for name, _, _ in TABLE} == set(ev.STEP_OUTCOMES)


@pytest.mark.parametrize(("name", "src", "dst"), TABLE, ids=[f"{n}:{s}->{d}" for n, s, d in TABLE])
async def test_every_outcome_moves_the_order_as_the_table_says(
    db: FakeOrders, uow: FakeUnitOfWork, name: str, src: Status, dst: Status
) -> None:
    order_id = db.put(src, **STARTS[src])
    before = db.orders[order_id].copy()
    event = outcome(name, order_id)
    transitions = counter("tinysaga_order_transitions_total", to=dst.value)

    assert await track(db, uow, event)

    row = db.orders[order_id]
    assert row["order_status"] == dst
    assert row["version"] == before["version"] + 1
    expected = domain.apply(
        domain.OrderState(
            Status(src),
            before["fail_reason"],
            before["refund_status"],
            before["status_info"],
            before["transaction_id"],
        ),
        domain.Input(name, event.failReason, event.transactionId),
    )
    assert expected is not None
    assert (row["fail_reason"], row["refund_status"], row["status_info"], row["transaction_id"]) == (
        expected.fail_reason,
        expected.refund_status,
        expected.status_info,
        expected.transaction_id,
    )
    assert db.events_of(order_id)[-1] == name  # its history row
    assert db.orders[order_id]["version"] == before["version"] + 1  # what wakes the live streams
    assert uow.published == []  # tracking publishes nothing
    assert event.eventId in uow.handled
    assert counter("tinysaga_order_transitions_total", to=dst.value) == transitions + 1


async def test_the_seeds_misspelt_reservation_places_the_order(db: FakeOrders, uow: FakeUnitOfWork) -> None:
    order_id = db.put(Status.PAYMENT_DONE, transaction_id="tx-1")
    assert await track(db, uow, outcome(ev.INVENTORY_RESERVED_SEED_ALIAS, order_id))
    assert db.orders[order_id]["order_status"] == Status.PLACED
    assert db.events_of(order_id)[-1] == ev.INVENTORY_RESERVED  # recorded under its real name


# ---- track: duplicates, stale and reordered events -----------------------------------------------


async def test_a_redelivered_event_same_event_id_does_nothing(db: FakeOrders, uow: FakeUnitOfWork) -> None:
    order_id = db.put()
    event = outcome(ev.PAYMENT_DONE, order_id)
    assert await track(db, uow, event)
    after_first = db.orders[order_id].copy()

    assert not await track(db, uow, event)  # skipped by its eventId

    assert db.orders[order_id] == after_first
    assert db.events_of(order_id) == [ev.ORDER_INITIATED, ev.PAYMENT_DONE]
    assert uow.commits == 1


async def test_the_same_outcome_under_a_new_event_id_leaves_the_order_unchanged_and_is_counted(
    db: FakeOrders, uow: FakeUnitOfWork
) -> None:
    order_id = db.put()
    assert await track(db, uow, outcome(ev.PAYMENT_DONE, order_id))
    after_first = db.orders[order_id].copy()
    ignored = counter("tinysaga_order_events_ignored_total", event=ev.PAYMENT_DONE)

    again = outcome(ev.PAYMENT_DONE, order_id)
    assert await track(db, uow, again)

    assert db.orders[order_id] == after_first
    assert db.events_of(order_id) == [ev.ORDER_INITIATED, ev.PAYMENT_DONE]
    assert again.eventId in uow.handled  # handled: recorded, without effect
    assert counter("tinysaga_order_events_ignored_total", event=ev.PAYMENT_DONE) == ignored + 1


async def test_reservation_before_payment_places_and_the_late_payment_is_ignored(
    db: FakeOrders, uow: FakeUnitOfWork
) -> None:
    order_id = db.put()
    assert await track(db, uow, outcome(ev.INVENTORY_RESERVED, order_id, transactionId="tx-9"))
    placed = db.orders[order_id].copy()
    assert placed["order_status"] == Status.PLACED
    assert placed["transaction_id"] == "tx-9"

    ignored = counter("tinysaga_order_events_ignored_total", event=ev.PAYMENT_DONE)
    assert await track(db, uow, outcome(ev.PAYMENT_DONE, order_id, transactionId="tx-9"))

    assert db.orders[order_id] == placed
    assert db.events_of(order_id) == [ev.ORDER_INITIATED, ev.INVENTORY_RESERVED]
    assert counter("tinysaga_order_events_ignored_total", event=ev.PAYMENT_DONE) == ignored + 1


@pytest.mark.parametrize("order_id", [uuid.UUID(int=42), "not-a-uuid"])
async def test_an_event_for_an_unknown_order_is_ignored_and_counted(
    db: FakeOrders, uow: FakeUnitOfWork, order_id: object
) -> None:
    known = db.put()
    ignored = counter("tinysaga_order_events_ignored_total", event=ev.PAYMENT_DONE)
    event = outcome(ev.PAYMENT_DONE, order_id)

    assert await track(db, uow, event)

    assert db.orders[known]["order_status"] == Status.INITIATED
    assert len(db.history) == 1 and db.orders[known]["version"] == 1
    assert event.eventId in uow.handled  # not retried forever
    assert counter("tinysaga_order_events_ignored_total", event=ev.PAYMENT_DONE) == ignored + 1


async def test_refund_failed_writes_one_alert(db: FakeOrders, uow: FakeUnitOfWork) -> None:
    order_id = db.put(Status.REFUND_INITIATED, **STARTS[Status.REFUND_INITIATED])
    alerts = counter("tinysaga_refund_failed_total")

    assert await track(db, uow, outcome(ev.REFUND_FAILED, order_id))
    assert await track(db, uow, outcome(ev.REFUND_FAILED, order_id))  # again, under a new eventId

    assert db.orders[order_id]["refund_status"] == Refund.REFUND_FAILED
    assert list(db.alert_rows) == [(order_id, "REFUND_FAILED")]
    alert = db.alert_rows[(order_id, "REFUND_FAILED")]
    assert alert["detail"] == "refund of 20.00 USD failed; the user was charged for nothing"
    assert counter("tinysaga_refund_failed_total") == alerts + 1


async def test_refund_done_writes_no_alert(db: FakeOrders, uow: FakeUnitOfWork) -> None:
    order_id = db.put(Status.REFUND_INITIATED, **STARTS[Status.REFUND_INITIATED])
    assert await track(db, uow, outcome(ev.REFUND_DONE, order_id))
    assert db.alert_rows == {}


# ---- track: a batch ------------------------------------------------------------------------------


def a_batch(db: FakeOrders) -> tuple[list[ev.Event], dict[str, uuid.UUID]]:
    """Outcomes as one poll may bring them: two of the same order (its payment, then its
    placement), others' in between, one for no order, one for an order already past it."""
    a, b, c, done = db.put(), db.put(), db.put(Status.PAYMENT_DONE, transaction_id="tx-1"), db.put(Status.PLACED)
    events = [
        outcome(ev.PAYMENT_DONE, a),
        outcome(ev.PAYMENT_DONE, b),
        outcome(ev.INVENTORY_RESERVED, uuid.UUID(int=7)),
        outcome(ev.INVENTORY_RESERVED, a),
        outcome(ev.INVENTORY_RESERVED, c),
        outcome(ev.PAYMENT_DONE, done),
    ]
    return events, {"a": a, "b": b, "c": c, "done": done}


async def test_a_batch_locks_its_orders_with_one_statement_and_ends_as_one_by_one(db: FakeOrders) -> None:
    events, ids = a_batch(db)
    batched = FakeUnitOfWork()
    await deliver_batch(ORDER, handlers(db.of), events, batched)

    alone, one_by_one = FakeOrders(), FakeUnitOfWork()
    again, same = a_batch(alone)
    for event in again:
        assert await track(alone, one_by_one, event)

    assert db.lock_statements == 1 and batched.commits == 1
    assert alone.lock_statements == len(again) and one_by_one.commits == len(again)
    assert db.batched_saves == [4]  # the four changes saved by one statement (ADR 70)
    assert alone.batched_saves == [1, 1, 1, 1]
    for key, order_id in ids.items():
        row, other = db.orders[order_id], alone.orders[same[key]]
        assert (row["order_status"], row["version"]) == (other["order_status"], other["version"])
        assert db.events_of(order_id) == alone.events_of(same[key])
    # the second outcome of `a` saw the first one's change: placed, not left as a stale event
    assert db.orders[ids["a"]]["order_status"] == Status.PLACED
    assert db.events_of(ids["a"]) == [ev.ORDER_INITIATED, ev.PAYMENT_DONE, ev.INVENTORY_RESERVED]


async def test_a_change_saved_at_once_comes_after_the_plain_ones_kept_before_it(db: FakeOrders) -> None:
    """The plain changes of a batch wait for its commit (ADR 70); one that stages an event (the
    cancel's end, ORDER_CANCELED) is saved at once, after those kept so far, so the order's
    history keeps the order of its events."""
    order_id, other = db.put(Status.CANCELING, transaction_id="tx-1"), db.put()
    events = [
        outcome(ev.PAYMENT_DONE, other),
        outcome(ev.REFUND_INITIATED, order_id),
        outcome(ev.REFUND_DONE, order_id),
        cancel_answer(ev.INVENTORY_RELEASED, order_id),  # the second side settled: CANCELED, announced
        outcome(ev.INVENTORY_RESERVED, other),
    ]
    uow = FakeUnitOfWork()
    await deliver_batch(ORDER, handlers(db.of), events, uow)
    assert db.batched_saves == [3, 1]  # those before the cancel's end, then the one after it
    assert db.events_of(order_id)[-3:] == [ev.REFUND_INITIATED, ev.REFUND_DONE, ev.INVENTORY_RELEASED]
    assert db.orders[order_id]["order_status"] == Status.CANCELED
    assert db.orders[other]["order_status"] == Status.PLACED
    assert db.orders[other]["version"] == 3
    assert uow.names() == [ev.ORDER_CANCELED] and uow.commits == 1


async def test_a_batch_of_one_locks_its_order_alone(db: FakeOrders, uow: FakeUnitOfWork) -> None:
    order_id = db.put()
    await deliver_batch(ORDER, handlers(db.of), [outcome(ev.PAYMENT_DONE, order_id)], uow)
    assert db.orders[order_id]["order_status"] == Status.PAYMENT_DONE
    assert db.lock_statements == 1


# ---- track: what it does not take ----------------------------------------------------------------


async def test_an_outcome_without_an_order_id_is_refused_for_the_dead_letter_topic(
    db: FakeOrders, uow: FakeUnitOfWork
) -> None:
    event = ev.Event(eventName=ev.PAYMENT_DONE, correlationId="c-1", userId="user-1")  # a plain envelope
    with pytest.raises(ValueError, match="orderId"):
        await track(db, uow, event)
    assert uow.handled == set() and uow.commits == 0


async def test_order_timed_out_on_the_wire_is_not_tracked(db: FakeOrders, uow: FakeUnitOfWork) -> None:
    # The sweeper applies ORDER_TIMED_OUT itself and publishes it; the consumer never routes it to Order.
    order_id = db.put()
    event = ev.make_event(
        ev.ORDER_TIMED_OUT, correlation_id=str(order_id), orderId=str(order_id), userId="user-1", failReason="TIMEOUT"
    )
    assert not await track(db, uow, event)
    assert db.orders[order_id]["order_status"] == Status.INITIATED


# ---- time_out: the sweeper -----------------------------------------------------------------------


def sweeper(db: FakeOrders, uow: FakeUnitOfWork, limit: int = 100) -> TimeOut:
    return TimeOut(begin=uow.transaction, repository=db.of, interval_seconds=1.0, limit=limit)


async def test_the_sweeper_fails_only_in_flight_orders_past_their_deadline(db: FakeOrders, uow: FakeUnitOfWork) -> None:
    overdue = {s: db.put(s, deadline_in=-1, **STARTS[s]) for s in domain.IN_FLIGHT}
    not_yet = db.put(Status.INITIATED, deadline_in=+1)
    ended = {s: db.put(s, deadline_in=-1, **STARTS[s]) for s in (Status.PLACED, Status.FAILED)}
    untouched = {oid: db.orders[oid].copy() for oid in (not_yet, *ended.values())}

    assert await sweeper(db, uow).sweep_once() == 3

    for status, oid in overdue.items():
        row = db.orders[oid]
        assert row["order_status"] == Status.FAILED, status
        assert row["fail_reason"] == (STARTS[status].get("fail_reason") or FailReason.TIMEOUT)
        assert row["refund_status"] == STARTS[status].get("refund_status")  # the timeout refunds nothing itself
        assert db.events_of(oid)[-1] == ev.ORDER_TIMED_OUT
        assert await db.of(uow).requested(oid, ev.ORDER_TIMED_OUT)
    for oid, before in untouched.items():
        assert db.orders[oid] == before
    assert not await db.of(uow).requested(not_yet, ev.ORDER_TIMED_OUT)

    assert uow.names() == [ev.ORDER_TIMED_OUT] * 3
    assert {e.orderId for e in uow.published} == {str(oid) for oid in overdue.values()}
    for e in uow.published:
        assert isinstance(e, ev.OrderTimedOut)
        row = db.orders[uuid.UUID(e.orderId)]
        assert (e.orderStatus, e.failReason, e.totalAmount, e.currency, e.transactionId) == (
            Status.FAILED,
            row["fail_reason"],
            row["total_amount"],
            row["currency"],
            row["transaction_id"],
        )


async def test_the_sweeper_run_twice_times_out_once(db: FakeOrders, uow: FakeUnitOfWork) -> None:
    order_id = db.put(Status.PAYMENT_DONE, deadline_in=-1, transaction_id="tx-1")
    sweep = sweeper(db, uow)

    assert await sweep.sweep_once() == 1
    assert await sweep.sweep_once() == 0

    assert uow.names() == [ev.ORDER_TIMED_OUT]
    assert db.events_of(order_id).count(ev.ORDER_TIMED_OUT) == 1


async def test_the_sweeper_takes_the_oldest_deadlines_first_a_batch_at_a_time(
    db: FakeOrders, uow: FakeUnitOfWork
) -> None:
    ids = [db.put(deadline_in=-s) for s in (1, 3, 2)]
    sweep = sweeper(db, uow, limit=2)

    assert await sweep.sweep_once() == 2
    assert [uuid.UUID(e.orderId) for e in uow.published] == [ids[1], ids[2]]
    assert await sweep.sweep_once() == 1
    assert await sweep.sweep_once() == 0


async def test_a_late_outcome_after_the_timeout_does_not_revive_the_order(db: FakeOrders, uow: FakeUnitOfWork) -> None:
    order_id = db.put(Status.PAYMENT_DONE, deadline_in=-1, transaction_id="tx-1")
    await sweeper(db, uow).sweep_once()
    assert await track(db, uow, outcome(ev.INVENTORY_RESERVED, order_id))
    assert db.orders[order_id]["order_status"] == Status.FAILED
    # the compensation's outcome is recorded on it
    assert await track(db, uow, outcome(ev.REFUND_DONE, order_id))
    assert (db.orders[order_id]["fail_reason"], db.orders[order_id]["refund_status"]) == (
        FailReason.TIMEOUT,
        Refund.REFUND_DONE,
    )


# ---- create_order --------------------------------------------------------------------------------


class FakeCatalogue:
    """The catalogue client: fixed products (price, stock)."""

    def __init__(self, **products: Product) -> None:
        self.products = products
        self.calls = 0

    async def product(self, product_id: str) -> Product:
        self.calls += 1
        return self.products[product_id]


def create_order(db: FakeOrders, uow: FakeUnitOfWork, catalogue: FakeCatalogue, bound: int = 0) -> CreateOrder:
    @asynccontextmanager
    async def writer() -> AsyncIterator[FakeOrderRepository]:
        async with uow.transaction():
            yield db.of(uow)

    reader = FakeOrderRepository(db)
    return CreateOrder(
        reader=reader,
        writer=writer,
        catalogue=catalogue,  # type: ignore[arg-type]
        bound=InFlightBound(reader.in_flight, bound, retry_after=2),
        currency="USD",
        timeout_seconds=60,
    )


async def test_create_order_writes_the_order_initiated_with_its_event(db: FakeOrders, uow: FakeUnitOfWork) -> None:
    create = create_order(db, uow, FakeCatalogue(P1=Product(Decimal("19.99"), 5)))

    start = datetime.now(UTC)
    row = await create("user-1", "P1", 3, "WALLET")

    assert start + timedelta(seconds=60) <= row["deadline_at"] <= datetime.now(UTC) + timedelta(seconds=60)
    assert row["order_status"] == Status.INITIATED
    assert row["total_amount"] == Decimal("59.97")
    assert row["status_info"] == domain.NEW_ORDER_INFO
    assert db.events_of(row["order_id"]) == [ev.ORDER_INITIATED]
    [event] = uow.published
    assert isinstance(event, ev.OrderInitiated)
    assert (event.orderId, event.price, event.totalAmount, event.productQuantity, event.currency) == (
        str(row["order_id"]),
        Decimal("19.99"),
        Decimal("59.97"),
        3,
        "USD",
    )


async def test_create_order_out_of_stock_creates_nothing(db: FakeOrders, uow: FakeUnitOfWork) -> None:
    create = create_order(db, uow, FakeCatalogue(P1=Product(Decimal("1.00"), 2)), bound=10)
    with pytest.raises(domain.OutOfStock) as e:
        await create("user-1", "P1", 3, "WALLET")
    assert e.value.available == 2
    assert db.orders == {} and uow.published == []
    assert create.bound.writing == 0  # given up: not left in the bound's estimate


async def test_create_order_with_a_key_used_before_answers_the_first_order(db: FakeOrders, uow: FakeUnitOfWork) -> None:
    catalogue = FakeCatalogue(P1=Product(Decimal("1.00"), 9))
    create = create_order(db, uow, catalogue)
    first = await create("user-1", "P1", 1, "WALLET", key="k-1", digest="h")

    again = await create("user-1", "P1", 1, "WALLET", key="k-1", digest="h")

    assert again["order_id"] == first["order_id"]
    assert catalogue.calls == 1  # answered before looking at the catalogue
    assert len(db.orders) == 1 and uow.names() == [ev.ORDER_INITIATED]


async def test_create_order_losing_an_idempotency_race_answers_the_winner(db: FakeOrders, uow: FakeUnitOfWork) -> None:
    create = create_order(db, uow, FakeCatalogue(P1=Product(Decimal("1.00"), 9)))
    winner = await create("user-1", "P1", 1, "WALLET", key="k-1", digest="h")

    async def not_seen_yet(user_id: str, key: str | None) -> None:
        return None  # the other request had not committed when this one looked

    create.reader.by_idempotency_key = not_seen_yet  # type: ignore[method-assign]
    loser = await create("user-1", "P1", 1, "WALLET", key="k-1", digest="h")

    assert loser["order_id"] == winner["order_id"]
    assert len(db.orders) == 1 and uow.names() == [ev.ORDER_INITIATED]


# ---- the bound on sagas in flight (ADR 50) --------------------------------------------------------


class Counts:
    """The orders table's count of unsettled orders, as the test sets it; counts the queries."""

    def __init__(self, n: int = 0, median_age: float = 0.0) -> None:
        self.n, self.median_age, self.queries = n, median_age, 0

    async def __call__(self) -> domain.InFlight:
        self.queries += 1
        return domain.InFlight(self.n, self.median_age)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def test_create_order_beyond_the_bound_creates_nothing_and_says_when_to_come_back(
    db: FakeOrders, uow: FakeUnitOfWork
) -> None:
    catalogue = FakeCatalogue(P1=Product(Decimal("1.00"), 9))
    create = create_order(db, uow, catalogue, bound=2)
    await create("user-1", "P1", 1, "WALLET")
    await create("user-1", "P1", 1, "WALLET")

    with pytest.raises(domain.Overloaded) as e:
        await create("user-1", "P1", 1, "WALLET")

    assert (e.value.in_flight, e.value.bound, e.value.retry_after) == (2, 2, 2)
    assert len(db.orders) == 2 and uow.names() == [ev.ORDER_INITIATED] * 2
    assert catalogue.calls == 2  # turned away before asking the catalogue


async def test_create_order_with_a_key_used_before_answers_the_first_order_even_at_the_bound(
    db: FakeOrders, uow: FakeUnitOfWork
) -> None:
    create = create_order(db, uow, FakeCatalogue(P1=Product(Decimal("1.00"), 9)), bound=1)
    first = await create("user-1", "P1", 1, "WALLET", key="k-1", digest="h")

    again = await create("user-1", "P1", 1, "WALLET", key="k-1", digest="h")

    assert again["order_id"] == first["order_id"]


async def test_the_bound_admits_again_once_sagas_settle() -> None:
    counts, clock = Counts(3), Clock()
    bound = InFlightBound(counts, 3, clock=clock)
    with pytest.raises(domain.Overloaded):
        await bound.admit()

    counts.n = 2  # one saga ended (on whichever replica)
    clock.t += 0.1
    await bound.admit()
    with pytest.raises(domain.Overloaded):
        await bound.admit()  # the one just admitted fills it again, before any new count


async def test_far_from_the_bound_an_order_costs_no_count() -> None:
    counts, clock = Counts(0), Clock()
    bound = InFlightBound(counts, 100, clock=clock, max_age=1.0, near=0.75)
    for _ in range(50):
        await bound.admit()
        bound.written()
    assert counts.queries == 1
    clock.t += 1.0  # the count is old: read again, and what this replica admitted is in it now
    counts.n = 50
    await bound.admit()
    assert counts.queries == 2 and bound.counted.count + bound.since == 51


async def test_near_the_bound_it_counts_again_so_the_other_replica_is_seen() -> None:
    counts, clock = Counts(70), Clock()
    bound = InFlightBound(counts, 100, clock=clock, min_age=0.01, near=0.75)
    for _ in range(5):
        await bound.admit()  # 70 counted, 5 admitted here: the estimate is 75, near the bound
        bound.written()
    assert counts.queries == 1
    counts.n = 99  # those 5, and 24 the other replica accepted meanwhile

    clock.t += 0.01
    await bound.admit()  # counts again before answering: 99, so this one is the 100th

    assert counts.queries == 2
    with pytest.raises(domain.Overloaded) as e:
        await bound.admit()  # within min_age: no new count, the estimate says full
    assert counts.queries == 2 and e.value.in_flight == 100


async def test_orders_admitted_and_not_yet_written_stay_in_the_estimate_after_a_count() -> None:
    counts, clock = Counts(0), Clock()
    bound = InFlightBound(counts, 10, clock=clock, min_age=0.01)
    for _ in range(8):
        await bound.admit()  # 8 admitted here, being written: the table shows none of them yet
    for _ in range(6):
        bound.written()  # 6 of them written
    counts.n = 6
    clock.t += 1.0

    await bound.admit()  # counts again: 6 written, the 2 still being written, and this one

    assert counts.queries == 2 and bound.counted.count + bound.since == 9
    await bound.admit()
    with pytest.raises(domain.Overloaded) as e:
        await bound.admit()  # full: the two not yet written were not forgotten by the count
    assert e.value.in_flight == 10


async def test_requests_waiting_for_a_count_share_it() -> None:
    gate = asyncio.Event()

    class Slow(Counts):
        async def __call__(self) -> domain.InFlight:
            self.queries += 1
            await gate.wait()
            return domain.InFlight(self.n, 0.0)

    counts = Slow(0)
    bound = InFlightBound(counts, 10, clock=Clock())
    waiting = [asyncio.create_task(bound.admit()) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*waiting)
    assert counts.queries == 1 and bound.since == 5


async def test_a_refusal_is_what_admit_would_decide_and_admits_nothing() -> None:
    counts, clock = Counts(9), Clock()
    bound = InFlightBound(counts, 10, clock=clock)
    assert await bound.refusal() is None  # it fits: but nothing is admitted
    assert await bound.refusal() is None and bound.since == 0
    await bound.admit()  # now it is: the bound is full
    refused = await bound.refusal()
    assert isinstance(refused, domain.Overloaded) and refused.in_flight == 10
    with pytest.raises(domain.Overloaded):
        await bound.admit()
    assert counts.queries == 1  # one count, younger than min_age, for all of them


async def test_a_bound_of_zero_never_counts() -> None:
    counts = Counts(10**6, median_age=60)
    bound = InFlightBound(counts, 0)
    await bound.admit()
    assert counts.queries == 0


# ---- the wait a new order would have (ADR 52) ----------------------------------------------------


def test_the_expected_wait_is_twice_the_median_age_of_the_sagas_in_flight() -> None:
    assert domain.InFlight(120, 0.3).expected_wait() == 0.6
    assert domain.InFlight(0, 0.0).expected_wait() == 0.0


async def test_sagas_that_would_wait_too_long_turn_a_new_order_away_below_the_bound() -> None:
    counts, clock = Counts(60, median_age=0.4), Clock()  # 60 in flight, a new one would take ~0.8 s
    bound = InFlightBound(counts, 200, max_wait=0.5, wait_from=50, clock=clock, retry_after=2)
    with pytest.raises(domain.Overloaded) as e:
        await bound.admit()
    assert (e.value.in_flight, e.value.wait, e.value.retry_after) == (60, 0.8, 2)
    assert "would take about 0.8 s" in str(e.value)

    counts.median_age = 0.2  # the stack caught up: 0.4 s expected, within the wait allowed
    clock.t += 0.1
    await bound.admit()


async def test_below_wait_from_a_long_wait_turns_nothing_away() -> None:
    """A few sagas held (a participant down for a moment) do not stop the shop: their age counts
    only once at least `wait_from` are in flight."""
    counts, clock = Counts(10, median_age=30.0), Clock()
    bound = InFlightBound(counts, 200, max_wait=0.5, wait_from=50, clock=clock)
    for _ in range(28):
        await bound.admit()
    assert counts.queries == 1  # far from both limits: no count
    with pytest.raises(domain.Overloaded):  # 38 in flight, near wait_from: it counts again
        clock.t += 0.1
        counts.n = 50
        await bound.admit()


async def test_the_wait_rule_off_leaves_the_bound_alone() -> None:
    counts = Counts(150, median_age=30.0)
    bound = InFlightBound(counts, 200, max_wait=0.0, wait_from=50, clock=Clock())
    await bound.admit()
    assert bound.near_at == 0.75 * 200  # counted again only near the bound, as without the rule


async def test_the_wait_rule_alone_without_a_bound() -> None:
    counts, clock = Counts(100, median_age=1.0), Clock()
    bound = InFlightBound(counts, 0, max_wait=0.5, wait_from=50, clock=clock)
    with pytest.raises(domain.Overloaded) as e:
        await bound.admit()
    assert e.value.wait == 2.0


# ---- track: the answers to a cancel (ADR 13) -----------------------------------------------------


def cancel_answer(name: str, order_id: object, **over: Any) -> ev.Event:
    """PAYMENT_VOIDED or INVENTORY_RELEASED as Payment or Inventory publishes it."""
    fields: dict[str, Any] = {"orderId": str(order_id), "userId": "user-1", "productId": "PROD-1", "productQuantity": 2}
    fields.update(over)
    return ev.make_event(name, correlation_id=str(order_id), **fields)


async def test_the_second_side_settled_cancels_the_order_and_stages_order_canceled_once(
    db: FakeOrders, uow: FakeUnitOfWork
) -> None:
    order_id = db.put(Status.CANCELING, transaction_id="tx-1")
    refund_done = outcome(ev.REFUND_DONE, order_id)
    released = cancel_answer(ev.INVENTORY_RELEASED, order_id)

    assert await track(db, uow, outcome(ev.REFUND_INITIATED, order_id))
    assert await track(db, uow, refund_done)
    assert db.orders[order_id]["order_status"] == Status.CANCELING
    assert (db.orders[order_id]["payment_settled"], db.orders[order_id]["stock_settled"]) == (True, False)
    assert uow.published == []
    assert await track(db, uow, released)

    row = db.orders[order_id]
    assert (row["order_status"], row["refund_status"], row["fail_reason"]) == (
        Status.CANCELED,
        Refund.REFUND_DONE,
        None,
    )
    assert (row["payment_settled"], row["stock_settled"]) == (True, True)
    [canceled] = uow.published
    assert isinstance(canceled, ev.OrderChange)
    assert (canceled.eventName, canceled.orderId, canceled.orderStatus, canceled.transactionId) == (
        ev.ORDER_CANCELED,
        str(order_id),
        Status.CANCELED,
        "tx-1",
    )
    assert (canceled.userId, canceled.productId, canceled.productQuantity, canceled.totalAmount) == (
        "user-1",
        "PROD-1",
        2,
        Decimal("20.00"),
    )
    assert db.events_of(order_id)[-3:] == [ev.REFUND_INITIATED, ev.REFUND_DONE, ev.INVENTORY_RELEASED]

    # every answer again, redelivered or under a new eventId: nothing more
    for again in (
        released,
        refund_done,
        cancel_answer(ev.INVENTORY_RELEASED, order_id),
        outcome(ev.REFUND_DONE, order_id),
    ):
        await track(db, uow, again)
    assert db.orders[order_id] == row
    assert uow.names() == [ev.ORDER_CANCELED]


async def test_an_order_never_charged_is_canceled_without_refund(db: FakeOrders, uow: FakeUnitOfWork) -> None:
    order_id = db.put(Status.CANCELING)
    assert await track(db, uow, cancel_answer(ev.INVENTORY_RELEASED, order_id))
    assert await track(db, uow, cancel_answer(ev.PAYMENT_VOIDED, order_id))
    row = db.orders[order_id]
    assert (row["order_status"], row["refund_status"]) == (Status.CANCELED, None)
    assert uow.names() == [ev.ORDER_CANCELED]
    assert db.alert_rows == {}


async def test_a_late_debit_while_canceling_is_recorded_and_the_order_waits_for_its_refund(
    db: FakeOrders, uow: FakeUnitOfWork
) -> None:
    order_id = db.put(Status.CANCELING)
    assert await track(db, uow, outcome(ev.PAYMENT_DONE, order_id, transactionId="tx-late"))
    assert await track(db, uow, cancel_answer(ev.INVENTORY_RELEASED, order_id))
    row = db.orders[order_id]
    assert (row["order_status"], row["transaction_id"]) == (Status.CANCELING, "tx-late")
    assert uow.published == []
    assert await track(db, uow, outcome(ev.REFUND_DONE, order_id))
    assert db.orders[order_id]["order_status"] == Status.CANCELED
    assert uow.names() == [ev.ORDER_CANCELED]


async def test_a_refund_that_fails_while_canceling_cancels_with_one_alert(db: FakeOrders, uow: FakeUnitOfWork) -> None:
    order_id = db.put(Status.CANCELING, transaction_id="tx-1")
    alerts = counter("tinysaga_refund_failed_total")
    assert await track(db, uow, cancel_answer(ev.INVENTORY_RELEASED, order_id))
    assert await track(db, uow, outcome(ev.REFUND_FAILED, order_id))
    assert await track(db, uow, outcome(ev.REFUND_FAILED, order_id))
    row = db.orders[order_id]
    assert (row["order_status"], row["refund_status"]) == (Status.CANCELED, Refund.REFUND_FAILED)
    assert list(db.alert_rows) == [(order_id, "REFUND_FAILED")]
    assert counter("tinysaga_refund_failed_total") == alerts + 1
    assert uow.names() == [ev.ORDER_CANCELED]


@pytest.mark.parametrize("status", [s for s in Status if s != Status.CANCELING])
@pytest.mark.parametrize("name", ev.CANCEL_OUTCOMES)
async def test_an_answer_to_a_cancel_outside_canceling_is_ignored(
    db: FakeOrders, uow: FakeUnitOfWork, status: Status, name: str
) -> None:
    order_id = db.put(status, **STARTS.get(status, {}))
    before = db.orders[order_id].copy()
    assert await track(db, uow, cancel_answer(name, order_id))
    assert db.orders[order_id] == before and uow.published == []


async def test_an_answer_to_a_cancel_without_its_fields_is_refused_for_the_dead_letter_topic(
    db: FakeOrders, uow: FakeUnitOfWork
) -> None:
    event = ev.Event(eventName=ev.INVENTORY_RELEASED, correlationId="c-1", userId="user-1")
    with pytest.raises(ValueError, match="orderId"):
        await track(db, uow, event)
    assert uow.handled == set() and uow.commits == 0


async def test_the_sweeper_never_touches_a_canceling_order(db: FakeOrders, uow: FakeUnitOfWork) -> None:
    order_id = db.put(Status.CANCELING, deadline_in=-60, transaction_id="tx-1")
    before = db.orders[order_id].copy()
    assert await sweeper(db, uow).sweep_once() == 0
    assert db.orders[order_id] == before and uow.published == []


# ---- cancel_order, ship, deliver -----------------------------------------------------------------


def request_handler(db: FakeOrders, uow: FakeUnitOfWork, cls: type[OrderRequest]) -> OrderRequest:
    @asynccontextmanager
    async def writer() -> AsyncIterator[FakeOrderRepository]:
        async with uow.transaction():
            yield db.of(uow)

    return cls(reader=FakeOrderRepository(db), writer=writer)


@pytest.mark.parametrize("status", list(domain.CANCELABLE))
async def test_a_cancel_makes_the_order_canceling_with_order_cancel_requested(
    db: FakeOrders, uow: FakeUnitOfWork, status: Status
) -> None:
    order_id = db.put(status, **STARTS[status])
    row = await request_handler(db, uow, CancelOrder)(order_id, "user-1")

    assert row == db.orders[order_id]
    assert (row["order_status"], row["payment_settled"], row["stock_settled"]) == (Status.CANCELING, False, False)
    assert row["version"] == 2
    assert db.events_of(order_id)[-1] == ev.ORDER_CANCEL_REQUESTED
    assert await db.of(uow).requested(order_id, ev.ORDER_CANCEL_REQUESTED)
    assert not await db.of(uow).requested(order_id, ev.ORDER_TIMED_OUT)
    [event] = uow.published
    assert isinstance(event, ev.OrderCancelRequested)
    assert (event.orderId, event.orderStatus, event.productId, event.productQuantity, event.totalAmount) == (
        str(order_id),
        Status.CANCELING,
        "PROD-1",
        2,
        Decimal("20.00"),
    )
    assert event.transactionId == STARTS[status].get("transaction_id")


async def test_a_cancel_repeated_answers_the_order_and_does_nothing_more(db: FakeOrders, uow: FakeUnitOfWork) -> None:
    order_id = db.put(Status.PLACED, transaction_id="tx-1")
    cancel = request_handler(db, uow, CancelOrder)
    first = await cancel(order_id, "user-1")
    again = await cancel(order_id, "user-1")
    assert again == first
    db.orders[order_id].update(order_status=Status.CANCELED.value)
    assert (await cancel(order_id, "user-1"))["order_status"] == Status.CANCELED
    assert uow.names() == [ev.ORDER_CANCEL_REQUESTED]
    assert db.events_of(order_id).count(ev.ORDER_CANCEL_REQUESTED) == 1


@pytest.mark.parametrize("status", [Status.ON_THE_WAY, Status.DELIVERED, Status.FAILED, Status.REFUND_INITIATED])
async def test_a_cancel_from_another_status_is_refused_and_changes_nothing(
    db: FakeOrders, uow: FakeUnitOfWork, status: Status
) -> None:
    order_id = db.put(status, **STARTS.get(status, {}))
    before = db.orders[order_id].copy()
    with pytest.raises(domain.Refused) as e:
        await request_handler(db, uow, CancelOrder)(order_id, "user-1")
    assert e.value.status == status
    assert db.orders[order_id] == before and uow.published == []


async def test_a_cancel_of_someone_elses_or_an_unknown_order_is_unknown(db: FakeOrders, uow: FakeUnitOfWork) -> None:
    order_id = db.put(Status.PLACED, user_id="someone-else")
    cancel = request_handler(db, uow, CancelOrder)
    for oid in (order_id, uuid.UUID(int=7)):
        with pytest.raises(domain.UnknownOrder):
            await cancel(oid, "user-1")
    assert db.orders[order_id]["order_status"] == Status.PLACED and uow.published == []


async def test_a_cancel_racing_a_saga_outcome_is_decided_again_on_the_new_status(
    db: FakeOrders, uow: FakeUnitOfWork
) -> None:
    order_id = db.put(Status.PAYMENT_DONE, transaction_id="tx-1")
    cancel = request_handler(db, uow, CancelOrder)
    reads = 0
    real_get = cancel.reader.get

    async def get_then_placed(oid: uuid.UUID) -> dict[str, Any] | None:
        nonlocal reads
        reads += 1
        row = await real_get(oid)
        if reads == 1:  # the reservation lands between the read and the write
            db.orders[order_id]["order_status"] = Status.PLACED.value
        return row

    cancel.reader.get = get_then_placed  # type: ignore[method-assign]
    row = await cancel(order_id, "user-1")

    assert reads == 2
    assert row["order_status"] == Status.CANCELING
    assert uow.names() == [ev.ORDER_CANCEL_REQUESTED]
    history = [h for h in db.history if h["order_id"] == order_id]
    assert [h["event_name"] for h in history] == [ev.ORDER_INITIATED, ev.ORDER_CANCEL_REQUESTED]


async def test_ship_then_deliver_each_once(db: FakeOrders, uow: FakeUnitOfWork) -> None:
    order_id = db.put(Status.PLACED, transaction_id="tx-1")
    ship, deliver_ = request_handler(db, uow, ShipOrder), request_handler(db, uow, DeliverOrder)

    with pytest.raises(domain.Refused):
        await deliver_(order_id)  # not shipped yet
    shipped = await ship(order_id)
    assert shipped["order_status"] == Status.ON_THE_WAY
    assert await ship(order_id) == shipped  # a repeat: 200, nothing new
    delivered = await deliver_(order_id)
    assert delivered["order_status"] == Status.DELIVERED
    assert await deliver_(order_id) == delivered
    with pytest.raises(domain.Refused):
        await ship(order_id)  # past it
    with pytest.raises(domain.Refused):
        await request_handler(db, uow, CancelOrder)(order_id, "user-1")

    assert uow.names() == [ev.ORDER_SHIPPED, ev.ORDER_DELIVERED]
    assert [e.orderStatus for e in uow.published] == [Status.ON_THE_WAY, Status.DELIVERED]
    assert all(isinstance(e, ev.OrderChange) for e in uow.published)
    assert db.events_of(order_id)[1:] == [ev.ORDER_SHIPPED, ev.ORDER_DELIVERED]


@pytest.mark.parametrize("status", [s for s in Status if s not in (Status.PLACED, Status.ON_THE_WAY)])
async def test_ship_from_another_status_is_refused(db: FakeOrders, uow: FakeUnitOfWork, status: Status) -> None:
    order_id = db.put(status, **STARTS.get(status, {}))
    with pytest.raises(domain.Refused):
        await request_handler(db, uow, ShipOrder)(order_id)
    assert uow.published == []


async def test_ship_and_deliver_an_unknown_order(db: FakeOrders, uow: FakeUnitOfWork) -> None:
    for cls in (ShipOrder, DeliverOrder):
        with pytest.raises(domain.UnknownOrder):
            await request_handler(db, uow, cls)(uuid.UUID(int=9))
