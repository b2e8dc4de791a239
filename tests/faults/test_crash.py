"""Faults: kill -9 in the middle of a burst (a service, the relay, the broker; with three Kafka nodes the
node leading the most partitions and the active controller), then check SPEC section 4 on the data."""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time

import httpx
import pytest

from tests.support import ApiUser, Stack, check_invariants, is_overloaded, register, run_sync, wait_at_rest
from tinysaga.infra import kafka
from tinysaga.platform.settings import Settings, get_settings


def test_supervisor_restarts_a_killed_service_and_nothing_else_moves(stack: Stack, gateway: str) -> None:
    before = stack.state()
    old = stack.kill9("wallet")
    new = stack.wait_restarted("wallet", old)
    assert new != old
    after = stack.state()
    assert after["wallet"]["restarts"] == before["wallet"]["restarts"] + 1
    for name, c in before.items():
        if name != "wallet":
            assert after[name]["pid"] == c["pid"], f"{name} was disturbed"
    u = register(gateway)
    assert u.deposit(1) == 1


def test_gateway_keeps_answering_through_the_other_order_instance(stack: Stack, gateway: str, product) -> None:
    u = register(gateway)
    pid = product(stock=1)
    codes: list[int] = []
    cut: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                try:
                    codes.append(
                        c.get(f"{gateway}/api/checkout/quote", params={"productId": pid}, headers=u.auth).status_code
                    )
                except httpx.RemoteProtocolError as e:
                    # killed between its two writes (uvicorn sends the headers, then the body): the
                    # gateway had passed the headers on and cannot try the request again elsewhere
                    cut.append(str(e))
                time.sleep(0.15)  # under the per-user rate limit

    t = threading.Thread(target=hammer)
    t.start()
    try:
        time.sleep(1)
        old = stack.kill9("order-1")
        time.sleep(3)
    finally:
        stop.set()
        t.join()
    stack.wait_restarted("order-1", old)
    assert len(codes) > 15
    assert set(codes) == {200}, f"answers during the kill: {sorted(set(codes))}"
    # at most the one request order-1 was answering when it died; every other one was answered,
    # those that reached it dead tried again on order-2 (`retry-on` in the gateway)
    assert len(cut) <= 1, cut


def test_kill9_payment_inventory_and_relay_during_a_burst_of_100_orders(
    stack: Stack, gateway: str, product, settings: Settings
) -> None:
    plenty, scarce = product(stock=1000, price="3.00"), product(stock=15, price="2.00")
    users = [register(gateway, tag=f"burst{i}") for i in range(10)]
    for i, u in enumerate(users):
        u.deposit(40 if i % 5 else 4)  # every fifth user cannot pay for much
    victims = ["payment", "inventory-1", "relay", "inventory-2", "payment", "relay"]
    to_cancel: queue.Queue[tuple[ApiUser, str] | None] = queue.Queue()
    canceled: dict[str, int] = {}  # order id -> the answer to its cancel

    def place(i: int) -> tuple[int, int]:
        u = users[i % len(users)]
        deadline = time.monotonic() + 60
        # turned away because the sagas held by a dead participant are too many and too old (ADR
        # 52): come back after Retry-After, as a client is told to (nothing was written)
        while is_overloaded(r := u.order(plenty if i % 3 else scarce, 1 + i % 2)) and time.monotonic() < deadline:
            time.sleep(float(r.headers["retry-after"]))
        if r.status_code == 202 and i % 4 == 1:
            to_cancel.put((u, r.json()["orderId"]))
        return i, r.status_code

    def canceler() -> None:
        """Cancels every fourth accepted order as soon as it is accepted, beside the burst (not in
        its way), at whatever step its saga is (a participant may be dead): 202, or 409 if it has
        already failed (the poor users) or is being refunded."""
        while (item := to_cancel.get()) is not None:
            u, oid = item
            canceled[oid] = u.cancel(oid).status_code

    killed = []

    def killer() -> None:
        for name in victims:
            time.sleep(0.4)
            deadline = time.monotonic() + 30
            while stack.pid(name) is None and time.monotonic() < deadline:
                time.sleep(0.05)  # killed a moment ago: wait for the supervisor's restart
            killed.append((name, stack.kill9(name)))

    k = threading.Thread(target=killer)
    c = threading.Thread(target=canceler)
    k.start()
    c.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(place, range(100)))
    finally:
        to_cancel.put(None)
    k.join()
    c.join()
    assert [n for n, _ in killed] == victims, killed
    accepted = [i for i, code in results if code == 202]
    # 409: out of stock at that moment (early fail); 503: both inventory replicas were down at
    # once, so the early check could not be made and no order was created. Nothing else.
    codes = sorted({code for _, code in results})
    assert set(codes) <= {202, 409, 503}, codes
    assert len(accepted) >= 50, codes
    assert set(canceled.values()) <= {202, 409}, canceled
    assert list(canceled.values()).count(202) >= 5, canceled
    for name in {n for n, _ in killed}:
        deadline = time.monotonic() + 60
        while not stack.healthy(name):
            assert time.monotonic() < deadline, f"{name} did not come back"
            time.sleep(0.2)
    run_sync(wait_at_rest(settings, timeout=180))
    counts = run_sync(check_invariants(settings, [u.user_id for u in users], [plenty, scarce]))
    assert counts["orders"] == len(accepted)
    assert counts["placed"] > 0 and counts["failed"] > 0 and counts["canceled"] > 0
    # a cancel that was accepted ends CANCELED; one refused left its order as it was
    owner = {o["orderId"]: u for u in users for o in u.get("/api/orders", params={"limit": 100}).json()}
    for oid, code in canceled.items():
        final = owner[oid].get(f"/api/orders/{oid}").json()
        if code == 202:
            assert final["orderStatus"] == "CANCELED", final
        else:
            assert final["orderStatus"] == "FAILED", final


def test_kill9_both_order_replicas_in_turn_mid_saga(stack: Stack, gateway: str, product, settings: Settings) -> None:
    """Order is where the saga's state lives, and in orchestration mode it is the orchestrator that
    sends every step: each of its two replicas is killed in turn (and Payment between them) while 60
    sagas are in flight. A client whose request died with its replica retries it with the same
    Idempotency-Key, as a client should: every order it was answered 202 for ends PLACED or FAILED
    (a saga held up past its deadline by the restarts fails with TIMEOUT and is compensated), each
    charged at most once, with nothing lost (SPEC section 4)."""
    pid = product(stock=1000, price="2.00")
    users = [register(gateway, tag=f"orch{i}") for i in range(6)]
    for u in users:
        u.deposit(40)
    victims = ["order-1", "payment", "order-2", "inventory-1"]
    accepted: dict[str, str] = {}  # idempotency key -> order id

    def place(i: int) -> int:
        u, key = users[i % len(users)], f"kill9-{i}-{time.monotonic_ns()}"
        deadline = time.monotonic() + 90
        while True:
            try:
                r = u.order(pid, 1, headers={"Idempotency-Key": key})
            except httpx.HTTPError:
                r = None
            if r is not None and r.status_code in (202, 409):
                if r.status_code == 202:
                    accepted[key] = r.json()["orderId"]
                return r.status_code
            assert time.monotonic() < deadline, f"order {i} not accepted: {r and r.status_code}"
            # 502/503 while its replica dies, 503 overloaded while the restarts hold sagas up (ADR
            # 52), 429 past the rate limit: the same request again, after Retry-After when told
            after = r.headers.get("retry-after", "") if r is not None else ""
            time.sleep(max(0.2, float(after)) if after.isdigit() else 0.2)

    killed = []

    def killer() -> None:
        for name in victims:
            time.sleep(0.6)
            deadline = time.monotonic() + 30
            while not all(stack.healthy(n) for n in {name, "order-1", "order-2"}) and time.monotonic() < deadline:
                time.sleep(0.05)  # so that one Order replica is always up
            killed.append((name, stack.kill9(name)))

    k = threading.Thread(target=killer)
    k.start()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(place, range(60)))
    k.join()
    assert [n for n, _ in killed] == victims, killed
    assert codes.count(202) == len(set(accepted.values())) >= 55, codes
    for name in victims:
        deadline = time.monotonic() + 60
        while not stack.healthy(name):
            assert time.monotonic() < deadline, f"{name} did not come back"
            time.sleep(0.2)
    run_sync(wait_at_rest(settings, timeout=180))
    counts = run_sync(check_invariants(settings, [u.user_id for u in users], [pid]))
    assert counts["orders"] == len(accepted)
    assert counts["placed"] > 0, counts


def _broker_to_kill(settings: Settings, which: str) -> str:
    """The process to kill: the one broker, or in a three-node cluster the node that leads the most
    partitions of the saga topic, or the active controller."""
    if which == "broker":
        return kafka.node_name(settings, 1)
    if which == "partition leader":
        leaders = run_sync(kafka.partition_leaders(settings))
        return kafka.node_name(settings, max(leaders, key=leaders.__getitem__))
    return kafka.node_name(settings, kafka.active_controller(settings))


@pytest.mark.parametrize(
    "which", ["broker"] if get_settings().kafka_nodes == 1 else ["partition leader", "active controller"]
)
def test_kill9_the_broker_during_a_burst(stack: Stack, gateway: str, product, settings: Settings, which: str) -> None:
    """The broker dies with sagas in flight: orders are still accepted (they wait in the outbox, or
    with three nodes go on through the others; once the held sagas are too many and too old for
    the wait allowed, ADR 52, new ones are told to come back after Retry-After, and do), and once it
    is back every saga ends and nothing is lost or doubled."""
    pid = product(stock=500, price="1.50")
    users = [register(gateway, tag=f"broker{i}") for i in range(5)]
    for u in users:
        u.deposit(30)
    victim = _broker_to_kill(settings, which)
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        list(pool.map(lambda i: users[i % 5].place(pid, 1), range(20)))  # each accepted
        old = stack.kill9(victim)
        list(pool.map(lambda i: users[i % 5].place(pid, 1, patience=150), range(20)))
    stack.wait_restarted(victim, old, timeout=90)
    run_sync(wait_at_rest(settings, timeout=180))
    counts = run_sync(check_invariants(settings, [u.user_id for u in users]))
    assert counts["orders"] == 40
    # the broker's restart can outlast a short saga deadline: then the saga fails with TIMEOUT and
    # is compensated; no other failure is acceptable (everyone could pay, stock was plenty)
    for u in users:
        for o in u.get("/api/orders", params={"limit": 100}).json():
            assert o["orderStatus"] == "PLACED" or (
                o["failReason"] == "TIMEOUT" and o["refundStatus"] in (None, "REFUND_DONE")
            ), o


@pytest.mark.skipif(get_settings().kafka_nodes != 3, reason="needs TINYSAGA_KAFKA_NODES=3 (CI's three-node phase)")
def test_the_saga_goes_on_while_one_kafka_node_is_stopped(stack: Stack, gateway: str, product, settings) -> None:
    """`tiny-saga stop kafka-2`: with two nodes of three (min.insync.replicas 2) every saga still
    ends PLACED, none waits for the node to come back."""
    pid = product(stock=100, price="1.00")
    users = [register(gateway, tag=f"twonodes{i}") for i in range(3)]
    for u in users:
        u.deposit(20)
    stack.hold("kafka-2")
    try:
        orders = [(u, u.place(pid)) for u in users for _ in range(4)]
        for u, oid in orders:
            assert u.wait_terminal(oid, timeout=60)["orderStatus"] == "PLACED"
    finally:
        stack.release("kafka-2")
    run_sync(wait_at_rest(settings, timeout=120))
    assert run_sync(check_invariants(settings, [u.user_id for u in users]))["placed"] == 12
