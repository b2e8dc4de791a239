"""The saga mode of the running stack (SPEC section 5, ADR 14), on the real broker.

In orchestration mode no participant reacts to another's event without a command: Payment and
Inventory do not even read order-topic, a forged ORDER_INITIATED or PAYMENT_DONE there charges and
reserves nothing, and every charge, refund, reservation and release of a real order was asked for by
a command of Order's on saga-commands, whose cause is the event the step follows. In choreography
nothing is sent on saga-commands at all."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import orjson
import pytest

from tests.integration.test_events_on_kafka import produce, read_topic
from tests.support import ApiUser, fetch, register, run_sync, wait_at_rest
from tinysaga.contracts import events as ev
from tinysaga.contracts import saga
from tinysaga.platform.settings import Settings


@pytest.fixture
def sagas(gateway: str, product, settings: Settings) -> tuple[ApiUser, dict[str, str]]:
    """Orders of each kind, at rest: placed, paid then out of stock (refunded), canceled."""
    scarce, plenty = product(stock=1, price="4.00"), product(stock=50, price="2.00")
    u = register(gateway, tag="modes")
    u.deposit(100)
    kinds = {"placed": u.place(plenty, 1)}
    first, second = u.place(scarce, 1), u.place(scarce, 1)  # one of them finds no stock after paying
    kinds["canceled"] = u.place(plenty, 2)
    u.wait_terminal(kinds["placed"])
    assert u.cancel(kinds["canceled"]).status_code == 202
    for oid in (first, second, kinds["canceled"]):
        u.wait_terminal(oid)
    kinds["raced-1"], kinds["raced-2"] = first, second
    run_sync(wait_at_rest(settings))
    return u, kinds


def commands_by_order(settings: Settings, order_ids: set[str]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {o: [] for o in order_ids}
    for r in run_sync(read_topic(settings, settings.commands_topic, order_ids)):
        body = orjson.loads(r.value)
        out[body["orderId"]].append((body["eventName"], body["cause"]))
    return out


def test_in_choreography_nothing_is_sent_as_a_command(sagas, settings: Settings) -> None:
    if settings.saga_mode != saga.CHOREOGRAPHY:
        pytest.skip("a choreography stack's property")
    _, kinds = sagas
    assert commands_by_order(settings, set(kinds.values())) == {o: [] for o in kinds.values()}


def test_in_orchestration_every_step_was_asked_for_by_a_command(sagas, settings: Settings) -> None:
    if settings.saga_mode != saga.ORCHESTRATION:
        pytest.skip("an orchestration stack's property")
    u, kinds = sagas
    sent = commands_by_order(settings, set(kinds.values()))
    assert sent[kinds["placed"]] == [(ev.CHARGE_PAYMENT, ev.ORDER_INITIATED), (ev.RESERVE_STOCK, ev.PAYMENT_DONE)]
    raced = {u.get(f"/api/orders/{kinds[k]}").json()["orderStatus"]: kinds[k] for k in ("raced-1", "raced-2")}
    assert set(raced) == {"PLACED", "FAILED"}, raced
    assert sent[raced["FAILED"]] == [
        (ev.CHARGE_PAYMENT, ev.ORDER_INITIATED),
        (ev.RESERVE_STOCK, ev.PAYMENT_DONE),
        (ev.REFUND_PAYMENT, ev.INVENTORY_INSUFFICIENT),
    ]
    canceled = sent[kinds["canceled"]]
    assert canceled[-2:] == [
        (ev.REFUND_PAYMENT, ev.ORDER_CANCEL_REQUESTED),
        (ev.RELEASE_STOCK, ev.ORDER_CANCEL_REQUESTED),
    ]
    # what each participant did, from its own records, each asked for by a command
    for oid, cmds in sent.items():
        names = {name for name, _ in cmds}
        payments = run_sync(fetch(settings, "payment", "SELECT status FROM payments WHERE order_id=$1", oid))
        reservations = run_sync(fetch(settings, "inventory", "SELECT status FROM reservations WHERE order_id=$1", oid))
        assert payments and ev.CHARGE_PAYMENT in names
        if reservations:
            assert names & {ev.RESERVE_STOCK, ev.RELEASE_STOCK}, (oid, reservations, cmds)


def test_in_orchestration_payment_and_inventory_ignore_events_on_order_topic(
    sagas, gateway: str, product, settings: Settings
) -> None:
    if settings.saga_mode != saga.ORCHESTRATION:
        pytest.skip("an orchestration stack's property")
    # their consumer groups read only saga-commands
    lag_topics = run_sync(_group_topics(settings))
    for group in (saga.PAYMENT, saga.INVENTORY):
        assert lag_topics.get(group) == {settings.commands_topic}, lag_topics
    # a forged ORDER_INITIATED and PAYMENT_DONE for a user with money, and a product in stock
    victim = register(gateway, tag="forged")
    victim.deposit(50)
    pid = product(stock=5, price="10.00")
    oid = str(uuid.uuid4())
    fields = {
        "orderId": oid,
        "userId": victim.user_id,
        "paymentType": "WALLET",
        "productId": pid,
        "productQuantity": 1,
        "price": Decimal("10.00"),
        "totalAmount": Decimal("10.00"),
        "currency": "USD",
    }
    forged = [
        ev.make_event(ev.ORDER_INITIATED, correlation_id=oid, **fields),
        ev.make_event(ev.PAYMENT_DONE, correlation_id=oid, transactionId="tx-forged", **fields),
    ]
    run_sync(produce(settings, [(oid.encode(), e.to_bytes(), [("eventName", e.eventName.encode())]) for e in forged]))
    # a real order after them, on its own partition perhaps: once it is PLACED, give the forged
    # events a few more seconds (the participants would have read them by now, if they read them)
    victim.wait_terminal(victim.place(pid, 1))
    time.sleep(3)
    run_sync(wait_at_rest(settings))
    assert run_sync(fetch(settings, "payment", "SELECT 1 FROM payments WHERE order_id=$1", oid)) == []
    assert run_sync(fetch(settings, "inventory", "SELECT 1 FROM reservations WHERE order_id=$1", oid)) == []
    assert victim.balance() == Decimal("40.00")  # the real order only
    assert victim.get(f"/api/products/{pid}").json()["availableCount"] == 4


async def _group_topics(settings: Settings) -> dict[str, set[str]]:
    """The topics each consumer group has committed offsets on."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        out: dict[str, set[str]] = {}
        for group, *_ in await admin.list_consumer_groups():
            out[group] = {tp.topic for tp in await admin.list_consumer_group_offsets(group)}
        return out
    finally:
        await admin.close()
