"""Orchestration mode (SPEC section 5, ADR 14): the definition says which steps are commanded and what
each participant consumes in each mode; commands carry the event that led to them; Order, as the
orchestrator, stages the command of each step a change calls for in the same transaction, and none
in choreography."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest

from tests.unit.fakes import FakeUnitOfWork, deliver
from tests.unit.fakes_order import FakeOrders
from tests.unit.test_order_handlers import STARTS, outcome
from tinysaga.contracts import events as ev
from tinysaga.contracts import saga
from tinysaga.order import domain
from tinysaga.order.domain import Status
from tinysaga.order.handlers import CancelOrder, RetryRefund, TimeOut, handlers
from tinysaga.order.orchestrator import CHOREOGRAPHY, Orchestrator

ORCH = Orchestrator(saga.COMMANDS_TOPIC)


# ---- the definition in each mode ------------------------------------------------------------------


def test_in_orchestration_payment_and_inventory_take_only_commands() -> None:
    o = saga.ORCHESTRATION
    assert saga.handled_by(saga.PAYMENT, saga.ORDER_TOPIC, o) == frozenset()
    assert saga.handled_by(saga.INVENTORY, saga.ORDER_TOPIC, o) == frozenset()
    assert saga.handled_by(saga.PAYMENT, saga.COMMANDS_TOPIC, o) == {ev.CHARGE_PAYMENT, ev.REFUND_PAYMENT}
    assert saga.handled_by(saga.INVENTORY, saga.COMMANDS_TOPIC, o) == {ev.RESERVE_STOCK, ev.RELEASE_STOCK}
    assert saga.consumed_topics(saga.PAYMENT, o) == (saga.COMMANDS_TOPIC,)
    # Order follows the outcomes and Notification tells the user about them, in both modes
    for mode in saga.MODES:
        assert saga.handled_by(saga.ORDER, saga.ORDER_TOPIC, mode) == saga.handled_by(saga.ORDER)
        assert saga.handled_by(saga.NOTIFICATION, saga.ORDER_TOPIC, mode) == saga.handled_by(saga.NOTIFICATION)
        assert saga.handled_by(saga.ORDER, saga.COMMANDS_TOPIC, mode) == frozenset()


def test_in_choreography_nothing_reads_the_commands_topic() -> None:
    for who in (saga.ORDER, saga.PAYMENT, saga.WALLET, saga.INVENTORY, saga.NOTIFICATION):
        assert saga.handled_by(who, saga.COMMANDS_TOPIC) == frozenset()
        assert saga.COMMANDS_TOPIC not in saga.consumed_topics(who)


def test_each_command_starts_the_step_its_events_start_in_choreography() -> None:
    routes = saga.routes(saga.PAYMENT, saga.COMMANDS_TOPIC, mode=saga.ORCHESTRATION)
    assert {n: s.name for n, s in routes.items()} == {ev.CHARGE_PAYMENT: "charge", ev.REFUND_PAYMENT: "refund"}
    assert [s.name for s in saga.commanded_by(ev.ORDER_INITIATED)] == ["charge"]
    assert [s.name for s in saga.commanded_by(ev.PAYMENT_DONE)] == ["reserve"]
    assert [s.name for s in saga.commanded_by(ev.INVENTORY_INSUFFICIENT)] == ["refund"]
    assert [s.name for s in saga.commanded_by(ev.ORDER_TIMED_OUT)] == ["refund", "release"]
    assert [s.name for s in saga.commanded_by(ev.ORDER_CANCEL_REQUESTED)] == ["refund", "release"]
    assert [s.name for s in saga.commanded_by(ev.REFUND_RETRY_REQUESTED)] == ["refund"]
    for name in (ev.PAYMENT_FAIL, ev.INVENTORY_RESERVED, ev.REFUND_DONE, ev.ORDER_CANCELED):
        assert saga.commanded_by(name) == ()


def test_a_setting_cannot_route_a_command_to_the_wrong_participant() -> None:
    with pytest.raises(saga.SagaDefinitionError):
        saga.routes(saga.PAYMENT, saga.COMMANDS_TOPIC, {ev.RESERVE_STOCK}, mode=saga.ORCHESTRATION)


# ---- commands on the wire --------------------------------------------------------------------------


def test_a_command_carries_its_cause_and_the_participant_sees_the_cause() -> None:
    paid = outcome(ev.PAYMENT_DONE, uuid.uuid4())
    cmd = ev.command(ev.RESERVE_STOCK, paid)
    assert cmd.eventName == ev.RESERVE_STOCK and cmd.cause == ev.PAYMENT_DONE
    assert cmd.eventId != paid.eventId and cmd.correlationId == paid.correlationId
    wire = ev.Event.from_bytes(cmd.to_bytes())
    assert isinstance(wire, ev.Command)
    seen = ev.as_cause(wire)
    assert isinstance(seen, ev.PaymentDone) and seen.eventName == ev.PAYMENT_DONE
    assert seen.eventId == cmd.eventId  # handled once, under the command's id
    assert (seen.orderId, seen.productQuantity, seen.transactionId) == (paid.orderId, 2, "tx-1")


def test_a_command_without_its_cause_is_refused_for_the_dead_letter_topic() -> None:
    raw = ev.new_event(ev.RESERVE_STOCK, correlation_id="o1", orderId="o1", userId="u1").to_bytes()
    with pytest.raises(ValueError, match="cause"):
        ev.as_cause(ev.Event.from_bytes(raw))


def test_a_command_whose_cause_lacks_fields_reaches_the_step_as_a_bare_event_which_refuses_it() -> None:
    cmd = ev.Command(eventName=ev.RESERVE_STOCK, correlationId="o1", orderId="o1", userId="u1", cause=ev.PAYMENT_DONE)
    seen = ev.as_cause(cmd)
    assert type(seen) is ev.Event and seen.eventName == ev.PAYMENT_DONE
    with pytest.raises(ValueError):
        ev.typed_as(seen, ev.PaymentDone)


# ---- Order as the orchestrator -------------------------------------------------------------------


def commands(uow: FakeUnitOfWork) -> list[tuple[str, str | None]]:
    return [(c.eventName, getattr(c, "cause", None)) for c in uow.on(saga.COMMANDS_TOPIC)]


async def track(db: FakeOrders, uow: FakeUnitOfWork, event: ev.Event, director: Orchestrator = ORCH) -> bool:
    return await deliver("order", handlers(db.of, orchestrator=director), event, uow)


@pytest.mark.parametrize(
    ("name", "start", "wanted"),
    [
        (ev.PAYMENT_DONE, Status.INITIATED, [(ev.RESERVE_STOCK, ev.PAYMENT_DONE)]),
        (ev.INVENTORY_INSUFFICIENT, Status.PAYMENT_DONE, [(ev.REFUND_PAYMENT, ev.INVENTORY_INSUFFICIENT)]),
        (ev.PAYMENT_FAIL, Status.INITIATED, []),
        (ev.INVENTORY_RESERVED, Status.PAYMENT_DONE, []),
        # a late answer to an order that moved on calls for nothing: its compensations were sent
        (ev.PAYMENT_DONE, Status.FAILED, []),
        (ev.PAYMENT_DONE, Status.CANCELING, []),
        (ev.INVENTORY_INSUFFICIENT, Status.CANCELING, []),
    ],
)
async def test_an_outcome_that_moves_the_order_on_sends_the_next_step_in_the_same_transaction(
    name: str, start: Status, wanted: list[Any]
) -> None:
    db, uow = FakeOrders(), FakeUnitOfWork()
    oid = db.put(start, **STARTS[start])
    event = outcome(name, oid)
    assert await track(db, uow, event)
    assert commands(uow) == wanted
    assert uow.commits == 1
    for cmd in uow.on(saga.COMMANDS_TOPIC):
        assert cmd.orderId == str(oid) and ev.as_cause(cmd).transactionId == event.transactionId


async def test_a_redelivered_outcome_sends_no_second_command() -> None:
    db, uow = FakeOrders(), FakeUnitOfWork()
    oid = db.put(Status.INITIATED)
    paid = outcome(ev.PAYMENT_DONE, oid)
    assert await track(db, uow, paid)
    assert not await track(db, uow, paid)  # same eventId: skipped
    await track(db, uow, paid.model_copy(update={"eventId": uuid.uuid4()}))  # republished: no change
    assert commands(uow) == [(ev.RESERVE_STOCK, ev.PAYMENT_DONE)]


async def test_in_choreography_order_sends_no_command() -> None:
    db, uow = FakeOrders(), FakeUnitOfWork()
    oid = db.put(Status.INITIATED)
    assert await track(db, uow, outcome(ev.PAYMENT_DONE, oid), CHOREOGRAPHY)
    await TimeOut(begin=uow.transaction, repository=db.of, interval_seconds=1.0).sweep_once()
    assert uow.on(saga.COMMANDS_TOPIC) == []


async def test_the_sweeper_sends_the_refund_and_the_release_with_the_time_out() -> None:
    db, uow = FakeOrders(), FakeUnitOfWork()
    oid = db.put(Status.PAYMENT_DONE, deadline_in=-1, **STARTS[Status.PAYMENT_DONE])
    sweeper = TimeOut(begin=uow.transaction, repository=db.of, interval_seconds=1.0, orchestrator=ORCH)
    assert await sweeper.sweep_once() == 1
    assert [e.eventName for e in uow.on(saga.ORDER_TOPIC)] == [ev.ORDER_TIMED_OUT]
    assert commands(uow) == [(ev.REFUND_PAYMENT, ev.ORDER_TIMED_OUT), (ev.RELEASE_STOCK, ev.ORDER_TIMED_OUT)]
    assert uow.commits == 1 and db.orders[oid]["order_status"] == Status.FAILED


def _writer(db: FakeOrders, uow: FakeUnitOfWork) -> Any:
    @asynccontextmanager
    async def writer() -> Any:
        async with uow.transaction() as u:
            yield db.of(u)

    return writer


async def test_a_cancel_sends_the_refund_and_the_release_with_its_request() -> None:
    db, uow = FakeOrders(), FakeUnitOfWork()
    oid = db.put(Status.PLACED, **STARTS[Status.PLACED])
    cancel = CancelOrder(reader=db.of(None), writer=_writer(db, uow), orchestrator=ORCH)
    await cancel(oid, owner="user-1")
    assert [e.eventName for e in uow.on(saga.ORDER_TOPIC)] == [ev.ORDER_CANCEL_REQUESTED]
    assert commands(uow) == [
        (ev.REFUND_PAYMENT, ev.ORDER_CANCEL_REQUESTED),
        (ev.RELEASE_STOCK, ev.ORDER_CANCEL_REQUESTED),
    ]
    assert uow.commits == 1


async def test_a_refund_retry_sends_the_refund_command() -> None:
    db, uow = FakeOrders(), FakeUnitOfWork()
    oid = db.put(
        Status.FAILED,
        fail_reason=domain.FailReason.INVENTORY_INSUFFICIENT,
        refund_status=domain.Refund.REFUND_FAILED,
        transaction_id="tx-1",
        total_amount=Decimal("20.00"),
    )
    await RetryRefund(reader=db.of(None), writer=_writer(db, uow), orchestrator=ORCH)(oid)
    assert commands(uow) == [(ev.REFUND_PAYMENT, ev.REFUND_RETRY_REQUESTED)]


def test_the_map_is_told_what_starts_each_step_in_each_mode() -> None:
    for mode in saga.MODES:
        d = saga.definition(mode)
        assert d["mode"] == mode
        steps = {s["name"]: s for s in d["steps"]}  # type: ignore[attr-defined]
        charge = steps["charge"]
        assert charge["command"] == ev.CHARGE_PAYMENT
        wanted = [ev.CHARGE_PAYMENT] if mode == saga.ORCHESTRATION else [ev.ORDER_INITIATED]
        assert charge["startedBy"] == wanted
        assert steps["track"]["startedBy"] == list(saga.BY_NAME["track"].triggers)  # never commanded
