"""The saga's events on the real broker: wire format, duplicates acted on once, hostile messages to
the dead-letter topic, forged events paying nothing out."""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.support import ApiUser, check_invariants, fetch, register, run_sync, wait_at_rest
from tinysaga.contracts import events as ev
from tinysaga.contracts import saga
from tinysaga.contracts.events import Event
from tinysaga.platform.settings import Settings


async def read_topic(settings: Settings, topic: str, keys: set[str] | None = None) -> list:
    """Every record of `topic` up to its current end (optionally only these keys), without a group."""
    c = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False)
    await c.start()
    out = []
    try:
        parts = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic) or ()]
        if not parts:
            await c._client.force_metadata_update()
            parts = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic) or ()]
        c.assign(parts)
        await c.seek_to_beginning(*parts)
        end = await c.end_offsets(parts)
        remaining = {tp for tp in parts if end[tp] > 0}
        deadline = time.monotonic() + 30
        while remaining and time.monotonic() < deadline:
            batch = await c.getmany(*remaining, timeout_ms=500)
            for tp, recs in batch.items():
                for r in recs:
                    if r.offset < end[tp] and (keys is None or (r.key and r.key.decode() in keys)):
                        out.append(r)
            for tp in list(remaining):
                if await c.position(tp) >= end[tp]:
                    remaining.discard(tp)
        assert not remaining, f"could not read {topic} to its end"
    finally:
        await c.stop()
    return out


async def produce(settings: Settings, records: list[tuple[bytes | None, bytes, list]], topic: str = "") -> None:
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True)
    await p.start()
    try:
        for key, value, headers in records:
            await p.send_and_wait(topic or settings.topic, value=value, key=key, headers=headers)
    finally:
        await p.stop()


def readers_of_order_topic(settings: Settings) -> set[str]:
    """The services whose consumers read order-topic in the stack's saga mode (in orchestration,
    Payment and Inventory read only their commands)."""
    who = (saga.ORDER, saga.PAYMENT, saga.INVENTORY, saga.NOTIFICATION)
    return {p for p in who if saga.ORDER_TOPIC in saga.consumed_topics(p, settings.saga_mode)}


def as_sent(settings: Settings, forged: Event) -> list[tuple[str, Event]]:
    """A forged event as the participants would receive it in the stack's mode: on order-topic, or
    (orchestration) as the commands Order would send for it, on saga-commands."""
    if settings.saga_mode == saga.CHOREOGRAPHY:
        return [(settings.topic, forged)]
    return [
        (settings.commands_topic, ev.command(s.command, forged))
        for s in saga.commanded_by(forged.eventName)
        if s.command
    ]


def produce_forged(settings: Settings, forged: list[Event]) -> list[Event]:
    """Put forged events where the participants read them; what was sent."""
    sent = [x for e in forged for x in as_sent(settings, e)]
    for topic, e in sent:
        run_sync(produce(settings, [(e.orderId.encode(), e.to_bytes(), [])], topic))
    return [e for _, e in sent]


def snapshot(users: list[ApiUser], product_ids: list[str], order_ids: dict[str, ApiUser]) -> dict:
    return {
        "balances": {u.user_id: u.balance() for u in users},
        "stock": {p: users[0].get(f"/api/products/{p}").json()["availableCount"] for p in product_ids},
        "orders": {
            o: {k: v for k, v in u.get(f"/api/orders/{o}").json().items() if k != "updatedAt"}
            for o, u in order_ids.items()
        },
        "history": {o: len(u.get(f"/api/orders/{o}/history").json()) for o, u in order_ids.items()},
        "ledger": {u.user_id: len(u.get("/api/wallet/transactions").json()) for u in users},
        "inbox": {u.user_id: len(u.get("/api/notifications").json()) for u in users},
    }


@pytest.fixture
def finished_sagas(gateway: str, product, settings: Settings):
    """A few finished sagas of every kind: placed, insufficient funds, out of stock and refunded."""
    pid_ok, pid_scarce = product(stock=20, price="5.00"), product(stock=1, price="7.00")
    rich, poor = register(gateway, tag="rich"), register(gateway, tag="poor")
    rich.deposit(200)
    poor.deposit(3)
    orders = {rich.place(pid_ok, 2): rich, poor.place(pid_ok, 1): poor}
    orders[rich.place(pid_scarce, 1)] = rich
    for oid, u in orders.items():
        u.wait_terminal(oid)
    # a second order for the scarce product: admin-free way to get an out-of-stock compensation
    adm_stock = rich.get(f"/api/products/{pid_scarce}").json()["availableCount"]
    assert adm_stock == 0
    run_sync(wait_at_rest(settings))
    return [rich, poor], [pid_ok, pid_scarce], orders


def test_events_follow_the_wire_format(finished_sagas, settings: Settings) -> None:
    users, _, orders = finished_sagas
    records = run_sync(read_topic(settings, settings.topic, set(orders)))
    assert records
    for r in records:
        body = json.loads(r.value)
        for k in ("eventId", "correlationId", "eventName", "version", "timestamp", "orderId", "userId"):
            assert k in body, (k, body)
        assert body["version"] == "1.0" and body["timestamp"].endswith("Z")
        assert r.key.decode() == body["orderId"] == body["correlationId"]
        assert dict(r.headers)["eventName"].decode() == body["eventName"]
        uuid.UUID(body["eventId"])
    names = {json.loads(r.value)["eventName"] for r in records}
    assert {"ORDER_INITIATED", "PAYMENT_DONE", "PAYMENT_FAIL", "INVENTORY_RESERVED"} <= names


@pytest.mark.parametrize("fresh_ids", [False, True], ids=["same-event-ids", "new-event-ids"])
def test_every_event_delivered_twice_changes_nothing(
    finished_sagas, product, settings: Settings, fresh_ids: bool
) -> None:
    users, products, orders = finished_sagas
    before = snapshot(users, products, orders)
    records = run_sync(read_topic(settings, settings.topic, set(orders)))
    again = []
    for r in records:
        value = r.value
        if fresh_ids:
            body = json.loads(value)
            body["eventId"] = str(uuid.uuid4())
            value = json.dumps(body).encode()
        again.append((r.key, value, list(r.headers)))
    run_sync(produce(settings, again))
    # a marker saga published after the duplicates: when it is done, the duplicates were consumed
    marker = register(users[0].base, tag="marker")
    marker.deposit(10)
    marker.wait_terminal(marker.place(product(stock=1), 1))
    run_sync(wait_at_rest(settings))
    assert snapshot(users, products, orders) == before
    run_sync(check_invariants(settings, [u.user_id for u in users]))


def test_hostile_messages_go_to_the_dead_letter_topic_and_consumers_go_on(
    gateway: str, product, settings: Settings
) -> None:
    tag = uuid.uuid4().hex
    good = Event(eventName="PAYMENT_DONE", correlationId=tag, orderId=f"o-{tag}").model_dump(mode="json")
    hostile = [
        (tag.encode(), b"\x00\xffnot json", []),
        (tag.encode(), b"[1, 2, 3]", []),
        (tag.encode(), orjson.dumps({**good, "version": "2.0"}), []),
        (tag.encode(), orjson.dumps({**good, "productQuantity": "lots"}), []),
        (tag.encode(), b'{"eventName": "PAYMENT_DONE", "x": "' + b"a" * 70000 + b'"}', []),
    ]
    readers = readers_of_order_topic(settings)
    run_sync(produce(settings, hostile))
    u = register(gateway)
    u.deposit(10)
    pid = product(stock=2, price="1.00")
    assert u.wait_terminal(u.place(pid))["orderStatus"] == "PLACED"
    deadline = time.monotonic() + 30
    mine: list = []
    while time.monotonic() < deadline:
        dlt = run_sync(read_topic(settings, settings.dead_letter_topic, {tag}))
        mine = [json.loads(r.value) for r in dlt]
        # each hostile message is dead-lettered once per service that consumes the topic
        if len({(d["offset"], d["service"]) for d in mine}) >= len(hostile) * len(readers):
            break
        time.sleep(0.5)
    per_message = {}
    for d in mine:
        per_message.setdefault(d["offset"], set()).add(d["service"])
        assert d["error"] and d["topic"] == settings.topic
    assert len(per_message) == len(hostile), per_message
    assert all(readers <= s for s in per_message.values())


def test_forged_refund_events_pay_nothing_out(gateway: str, product, settings: Settings) -> None:
    victim, thief = register(gateway, tag="victim"), register(gateway, tag="thief")
    victim.deposit(50)
    pid = product(stock=5, price="20.00")
    real = victim.place(pid)
    assert victim.wait_terminal(real)["orderStatus"] == "PLACED"
    forged = [
        # an order that was never charged: nothing to refund
        Event(
            eventName="INVENTORY_INSUFFICIENT",
            correlationId="x",
            orderId=str(uuid.uuid4()),
            userId=thief.user_id,
            totalAmount=Decimal("999.00"),
            currency="USD",
            productId=pid,
            productQuantity=1,
        ),
        # a timeout of an order nobody placed, in the thief's name: voided, nothing paid
        Event(
            eventName="ORDER_TIMED_OUT",
            correlationId="x",
            orderId=str(uuid.uuid4()),
            userId=thief.user_id,
            totalAmount=Decimal("999.00"),
            currency="USD",
        ),
    ]
    produce_forged(settings, forged)
    marker = register(gateway, tag="marker")
    marker.deposit(20)
    marker.wait_terminal(marker.place(pid))
    run_sync(wait_at_rest(settings))
    assert thief.balance() == Decimal("0.00")
    assert victim.balance() == Decimal("30.00")
    assert victim.get(f"/api/orders/{real}").json()["orderStatus"] == "PLACED"


def test_a_replayed_dead_letter_goes_back_to_the_service_that_dead_lettered_it_only(
    gateway: str, admin: ApiUser, settings: Settings
) -> None:
    key = f"replay-{uuid.uuid4().hex}"
    services = readers_of_order_topic(settings)
    chosen = "inventory" if "inventory" in services else "notification"

    def dead_letters() -> list[dict]:
        return [d for d in admin.get("/api/admin/dead-letters", params={"limit": 500}).json() if d["key"] == key]

    def wait_for(pred, what: str) -> list[dict]:  # noqa: ANN001
        deadline = time.monotonic() + 60
        while not pred(found := dead_letters()):
            assert time.monotonic() < deadline, what
            time.sleep(0.5)
        return found

    run_sync(produce(settings, [(key.encode(), b"[1, 2, 3]", [])]))
    first = wait_for(lambda ds: {d["service"] for d in ds} >= services, "every consumer dead-letters it")
    original = first[0]["sourceOffset"]
    target = next(d for d in first if d["service"] == chosen)
    assert admin.post(f"/api/admin/dead-letters/{target['id']}/replay").status_code == 202
    replayed = wait_for(
        lambda ds: any(d["sourceOffset"] != original for d in ds), f"{chosen} dead-letters the replay again"
    )
    replay_offset = next(d["sourceOffset"] for d in replayed if d["sourceOffset"] != original)
    # a marker after the replay, in the same partition (same key): once every consumer has
    # dead-lettered it, every consumer has passed the replayed message too
    run_sync(produce(settings, [(key.encode(), b"[4, 5, 6]", [])]))
    done = wait_for(
        lambda ds: {d["service"] for d in ds if d["sourceOffset"] not in (original, replay_offset)} >= services,
        "every consumer dead-letters the marker",
    )
    assert {d["service"] for d in done if d["sourceOffset"] == replay_offset} == {chosen}


def test_a_timeout_order_did_not_send_compensates_nothing(gateway: str, product, settings: Settings) -> None:
    """ORDER_TIMED_OUT for a placed order (not from Order's sweeper; in orchestration, the refund and
    release commands for it, not from Order either): no refund, no stock back."""
    u = register(gateway)
    u.deposit(50)
    pid = product(stock=5, price="20.00")
    oid = u.place(pid)
    assert u.wait_terminal(oid)["orderStatus"] == "PLACED"
    forged = Event(
        eventName="ORDER_TIMED_OUT",
        correlationId=oid,
        orderId=oid,
        userId=u.user_id,
        orderStatus="FAILED",
        failReason="TIMEOUT",
        productId=pid,
        productQuantity=1,
        totalAmount=Decimal("20.00"),
        currency="USD",
    )
    sent = produce_forged(settings, [forged])
    deadline = time.monotonic() + 60
    sql = "SELECT 1 FROM processed_events WHERE event_id = ANY($1::uuid[])"
    for service in ("payment", "inventory"):  # both have read it
        while not run_sync(fetch(settings, service, sql, [e.eventId for e in sent])):
            assert time.monotonic() < deadline, f"{service} did not consume the event"
            time.sleep(0.3)
    run_sync(wait_at_rest(settings))
    assert u.balance() == Decimal("30.00")
    assert u.get(f"/api/products/{pid}").json()["availableCount"] == 4
    assert u.get(f"/api/orders/{oid}").json()["orderStatus"] == "PLACED"
    assert [t["transactionType"] for t in u.get("/api/wallet/transactions").json()] == ["PAYMENT", "DEPOSIT"]
    reservation = run_sync(fetch(settings, "inventory", "SELECT status FROM reservations WHERE order_id=$1", oid))
    assert reservation[0]["status"] == "RESERVED"


def test_every_event_the_services_publish_validates_against_its_schema(
    gateway: str, product, stack, settings: Settings
) -> None:
    """The producers' contract test on the real broker: a placed order, an insufficient-funds one and
    one refunded after payment (two orders for the last unit, Payment held so both pass the early
    check); each event of theirs on order-topic validates against docs/events/<name>.json, and
    every step of the saga that publishes in those flows is seen."""
    import jsonschema_rs

    from tinysaga.contracts import docs

    validators = {n: jsonschema_rs.validator_for(s) for n, s in docs.event_schemas().items()}
    pid = product(stock=1, price="15.00")
    a, b, poor = register(gateway, tag="a"), register(gateway, tag="b"), register(gateway, tag="poor")
    a.deposit(100)
    b.deposit(100)
    stack.hold("payment")
    try:
        orders = {a.place(pid): a, b.place(pid): b}
    finally:
        stack.release("payment")
    orders[poor.place(product(stock=5, price="15.00"))] = poor
    for oid, u in orders.items():
        u.wait_until(
            oid,
            lambda o: (
                o["orderStatus"] == "PLACED"
                or o["refundStatus"] == "REFUND_DONE"
                or o["failReason"] == "INSUFFICIENT_FUNDS"
            ),
        )
    run_sync(wait_at_rest(settings))
    records = run_sync(read_topic(settings, settings.topic, set(orders)))
    seen = set()
    for r in records:
        data = orjson.loads(r.value)
        validators[data["eventName"]].validate(data)
        assert dict(r.headers)["eventName"].decode() == data["eventName"]
        seen.add(data["eventName"])
    assert {
        "ORDER_INITIATED",
        "PAYMENT_DONE",
        "PAYMENT_FAIL",
        "INVENTORY_RESERVED",
        "INVENTORY_INSUFFICIENT",
        "REFUND_INITIATED",
        "REFUND_DONE",
    } <= seen, seen
