"""The order's life after it is placed (SPEC section 2, ADR 13), end to end through the gateway:
cancel at each step of the saga (a participant held down with `stack.hold` pins the step), cancel
twice, cancel racing a burst, and the admin's ship and deliver. Each ends with SPEC section 4."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx

from tests.integration.test_events_on_kafka import read_topic
from tests.support import ApiUser, Stack, check_invariants, eventually, register, run_sync, wait_at_rest
from tinysaga.platform.settings import Settings

PROBLEM = "application/problem+json"
# what Notification calls the news of each change (the type of the inbox row)
CANCEL_REQUESTED, CANCELED, SHIPPED, DELIVERED = (
    "ORDER_CANCELING",
    "ORDER_CANCELED",
    "ORDER_SHIPPED",
    "ORDER_DELIVERED",
)


# ---- helpers -------------------------------------------------------------------------------------


def status_of(u: ApiUser, order_id: str) -> dict[str, Any]:
    r = u.get(f"/api/orders/{order_id}")
    assert r.status_code == 200, r.text
    return r.json()


def history(u: ApiUser, order_id: str) -> list[dict[str, Any]]:
    return u.get(f"/api/orders/{order_id}/history").json()


def stock(u: ApiUser, product_id: str) -> int:
    return u.get(f"/api/products/{product_id}").json()["availableCount"]


def ledger_of(u: ApiUser, order_id: str) -> dict[str, dict[str, Any]]:
    rows = [t for t in u.get("/api/wallet/transactions").json() if t.get("orderId") == order_id]
    kinds = Counter(t["transactionType"] for t in rows)
    assert all(n == 1 for n in kinds.values()), f"order {order_id}: ledger {kinds}"
    return {t["transactionType"]: t for t in rows}


def notifications(u: ApiUser, order_id: str) -> list[dict[str, Any]]:
    return [n for n in u.get("/api/notifications", params={"limit": 500}).json() if n["orderId"] == order_id]


def assert_notified_once(u: ApiUser, order_id: str, required: set[str], absent: set[str] = frozenset()) -> None:
    """The user is told of each `required` change by email and SMS, and of nothing twice."""

    def arrived() -> list[dict[str, Any]] | None:
        mine = notifications(u, order_id)
        got = {(n["type"], n["channel"]) for n in mine}
        return mine if {(t, c) for t in required for c in ("EMAIL", "SMS")} <= got else None

    mine = eventually(arrived, timeout=30, what=f"notifications {sorted(required)} of {order_id}")
    per = Counter((n["type"], n["channel"]) for n in mine)
    assert all(n == 1 for n in per.values()), f"order {order_id}: notified twice: {per}"
    assert not ({t for t, _ in per} & absent), f"order {order_id}: unexpected {sorted(per)}"


def events_on_kafka(settings: Settings, order_id: str) -> Counter:
    records = run_sync(read_topic(settings, settings.topic, {order_id}))
    return Counter(json.loads(r.value)["eventName"] for r in records)


def problem(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith(PROBLEM), r.headers["content-type"]


def assert_canceled_cleanly(
    u: ApiUser, order_id: str, product_id: str, *, balance: Decimal, available: int, charged: bool
) -> dict[str, Any]:
    """CANCELED with the refundStatus that says what was charged, every effect undone: the money
    back (the ledger's charge refunded exactly, or nothing charged), the stock back, the history
    showing the cancel once and ending CANCELED."""
    final = status_of(u, order_id)
    assert final["orderStatus"] == "CANCELED", final
    assert final["refundStatus"] == ("REFUND_DONE" if charged else None), final
    assert final["failReason"] is None, final
    assert u.balance() == balance
    assert stock(u, product_id) == available
    rows = ledger_of(u, order_id)
    if charged:
        assert rows["PAYMENT"]["paymentStatus"] == "COMPLETED" and rows["PAYMENT"]["amount"] == final["totalAmount"]
        assert rows["REFUND"]["paymentStatus"] == "REFUNDED" and rows["REFUND"]["amount"] == final["totalAmount"]
    else:
        assert "PAYMENT" not in rows or rows["PAYMENT"]["paymentStatus"] != "COMPLETED", rows
    steps = history(u, order_id)
    names = [s["eventName"] for s in steps]
    assert steps[0]["orderStatus"] == "INITIATED" and names[0] == "ORDER_INITIATED", steps
    assert names.count("ORDER_CANCEL_REQUESTED") == 1, names
    requested = steps[names.index("ORDER_CANCEL_REQUESTED")]
    assert requested["orderStatus"] == "CANCELING", steps
    assert steps[-1]["orderStatus"] == "CANCELED", steps
    assert [s["orderStatus"] for s in steps].count("CANCELED") == 1, steps
    assert "ORDER_TIMED_OUT" not in names, names
    if charged:
        assert "REFUND_DONE" in names, names
    return final


class StreamReader:
    """Reads an order's live stream on a thread of its own (its own connection) until it ends:
    [(id, orderStatus), ...]; `first` is set once the first state has arrived."""

    def __init__(self, u: ApiUser, order_id: str, timeout: float = 90) -> None:
        self.events: list[tuple[int, str]] = []
        self.first = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, args=(u, order_id, timeout), daemon=True)
        self._thread.start()

    def _read(self, u: ApiUser, order_id: str, timeout: float) -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(timeout)) as http,
                http.stream("GET", f"{u.base}/api/orders/{order_id}/events", headers=u.auth) as r,
            ):
                assert r.status_code == 200, r.read()
                event_id = 0
                for line in r.iter_lines():
                    if line.startswith("id:"):
                        event_id = int(line[3:])
                    elif line.startswith("data:"):
                        self.events.append((event_id, json.loads(line[5:])["orderStatus"]))
                        self.first.set()
        except BaseException as e:  # noqa: BLE001 - reported by join()
            self.error = e
        finally:
            self.first.set()

    def join(self, timeout: float = 90) -> list[tuple[int, str]]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the stream did not end; seen {self.events}"
        assert self.error is None, self.error
        return self.events


# ---- cancel at each step -------------------------------------------------------------------------


def test_cancel_at_initiated_undoes_the_charge_that_lands_after_it(
    gateway: str, product, stack: Stack, settings: Settings
) -> None:
    """Payment is down, so both orders are INITIATED when canceled. When Payment is back it reads
    ORDER_INITIATED first: the one who can pay is charged, then refunded (REFUND_DONE); the one who
    cannot is declined (refundStatus null: nothing was charged). Inventory saw the cancel before any
    PAYMENT_DONE: it reserves nothing."""
    pid = product(stock=5, price="7.00")
    rich, poor = register(gateway, tag="init-rich"), register(gateway, tag="init-poor")
    rich.deposit(50)
    poor.deposit(3)
    stack.hold("payment")
    try:
        paid_oid, unpaid_oid = rich.place(pid, 2), poor.place(pid, 1)
        for u, oid in ((rich, paid_oid), (poor, unpaid_oid)):
            assert status_of(u, oid)["orderStatus"] == "INITIATED"
            r = u.cancel(oid)
            assert r.status_code == 202, r.text
            body = r.json()
            assert body["orderId"] == oid and body["orderStatus"] == "CANCELING", body
        # Inventory settles its side at once; the payment side waits for Payment
        eventually(
            lambda: all(
                "INVENTORY_RELEASED" in [s["eventName"] for s in history(u, o)]
                for u, o in ((rich, paid_oid), (poor, unpaid_oid))
            ),
            timeout=60,
            what="the stock side settled",
        )
        assert status_of(rich, paid_oid)["orderStatus"] == "CANCELING"
        assert status_of(poor, unpaid_oid)["orderStatus"] == "CANCELING"
    finally:
        stack.release("payment")
    assert rich.wait_terminal(paid_oid)["orderStatus"] == "CANCELED"
    assert poor.wait_terminal(unpaid_oid)["orderStatus"] == "CANCELED"
    run_sync(wait_at_rest(settings))
    assert_canceled_cleanly(rich, paid_oid, pid, balance=Decimal("50.00"), available=5, charged=True)
    assert_canceled_cleanly(poor, unpaid_oid, pid, balance=Decimal("3.00"), available=5, charged=False)
    for u, oid in ((rich, paid_oid), (poor, unpaid_oid)):
        names = [s["eventName"] for s in history(u, oid)]
        assert "INVENTORY_RESERVED" not in names, names
    assert_notified_once(rich, paid_oid, {CANCEL_REQUESTED, CANCELED, "REFUND_DONE"}, absent={"ORDER_PLACED"})
    assert_notified_once(poor, unpaid_oid, {CANCEL_REQUESTED, CANCELED}, absent={"ORDER_PLACED", "REFUND_DONE"})
    run_sync(check_invariants(settings, [rich.user_id, poor.user_id], [pid]))


def test_cancel_at_payment_done_waits_for_inventory_and_releases_the_late_reservation(
    user: ApiUser, product, stack: Stack, settings: Settings
) -> None:
    """Both inventory replicas are down after the payment: the cancel refunds at once, and the order
    stays CANCELING (past its saga deadline: the sweeper does not time out a cancel) until Inventory
    is back, reserves late (PAYMENT_DONE comes first in its partition) and gives it back."""
    pid = product(stock=4, price="9.00")
    user.deposit(30)
    stack.hold("payment")
    try:
        oid = user.place(pid, 2)
        stack.hold("inventory-1")
        stack.hold("inventory-2")
    finally:
        stack.release("payment")
    try:
        paid = user.wait_until(oid, lambda o: o["orderStatus"] != "INITIATED", timeout=30)
        assert paid["orderStatus"] == "PAYMENT_DONE", paid
        r = user.cancel(oid)
        assert r.status_code == 202 and r.json()["orderStatus"] == "CANCELING", r.text
        # the payment side: refunded through the wallet at once
        eventually(lambda: user.balance() == Decimal("30.00"), timeout=60, what="the refund")
        # past the saga's deadline (and a few sweeps): still CANCELING, never timed out. What is
        # waited for here is the clock itself: nothing may happen, so there is no event to wait on.
        deadline = datetime.fromisoformat(paid["createdAt"]).timestamp() + settings.saga_timeout_seconds
        time.sleep(max(0.0, deadline - time.time()) + 3 * settings.sweeper_interval_seconds)
        pending = status_of(user, oid)
        assert pending["orderStatus"] == "CANCELING" and pending["failReason"] is None, pending
    finally:
        stack.release("inventory-1")
        stack.release("inventory-2")
    assert user.wait_terminal(oid)["orderStatus"] == "CANCELED"
    run_sync(wait_at_rest(settings))
    assert_canceled_cleanly(user, oid, pid, balance=Decimal("30.00"), available=4, charged=True)
    assert_notified_once(user, oid, {"PAYMENT_DONE", CANCEL_REQUESTED, "REFUND_DONE", CANCELED})
    run_sync(check_invariants(settings, [user.user_id], [pid]))


def test_cancel_at_placed_refunds_and_gives_the_stock_back(user: ApiUser, product, settings: Settings) -> None:
    pid = product(stock=6, price="12.50")
    user.deposit(100)
    oid = user.place(pid, 3)
    assert user.wait_terminal(oid)["orderStatus"] == "PLACED"
    assert stock(user, pid) == 3 and user.balance() == Decimal("62.50")
    r = user.cancel(oid)
    assert r.status_code == 202, r.text
    assert r.json()["orderStatus"] in ("CANCELING", "CANCELED"), r.text
    final = user.wait_terminal(oid)
    assert final["orderStatus"] == "CANCELED" and final["refundStatus"] == "REFUND_DONE", final
    run_sync(wait_at_rest(settings))
    assert_canceled_cleanly(user, oid, pid, balance=Decimal("100.00"), available=6, charged=True)
    names = [s["eventName"] for s in history(user, oid)]
    assert names.index("INVENTORY_RESERVED") < names.index("ORDER_CANCEL_REQUESTED"), names
    assert "INVENTORY_RELEASED" in names, names
    assert_notified_once(user, oid, {"PAYMENT_DONE", "ORDER_PLACED", CANCEL_REQUESTED, "REFUND_DONE", CANCELED})
    run_sync(check_invariants(settings, [user.user_id], [pid]))


def test_the_live_stream_shows_canceling_then_canceled(
    user: ApiUser, product, stack: Stack, settings: Settings
) -> None:
    """A PLACED order's stream had ended; after a cancel a new one shows CANCELING (kept open while
    Payment is down) and then CANCELED, and ends."""
    pid = product(stock=2, price="4.00")
    user.deposit(10)
    oid = user.place(pid)
    assert user.wait_terminal(oid)["orderStatus"] == "PLACED"
    stack.hold("payment")
    try:
        assert user.cancel(oid).status_code == 202
        stream = StreamReader(user, oid)
        assert stream.first.wait(30), "the stream sent nothing"
        assert stream.events[:1] and stream.events[0][1] == "CANCELING", stream.events
    finally:
        stack.release("payment")
    events = stream.join()
    statuses = [s for _, s in events]
    assert statuses[0] == "CANCELING" and statuses[-1] == "CANCELED", statuses
    assert set(statuses) == {"CANCELING", "CANCELED"}, statuses
    ids = [i for i, _ in events]
    assert ids == sorted(set(ids)), ids
    # a reconnect after the end (Last-Event-ID) gets nothing new, and the stream still closes
    r = user.get(f"/api/orders/{oid}/events", headers={"Last-Event-ID": str(ids[-1])})
    assert r.status_code == 200 and "data:" not in r.text
    run_sync(wait_at_rest(settings))
    assert_canceled_cleanly(user, oid, pid, balance=Decimal("10.00"), available=2, charged=True)


# ---- repeats, races, refusals --------------------------------------------------------------------


def test_cancel_twice_answers_202_and_does_nothing_more(user: ApiUser, product, settings: Settings) -> None:
    pid = product(stock=3, price="5.00")
    user.deposit(20)
    oid = user.place(pid)
    assert user.wait_terminal(oid)["orderStatus"] == "PLACED"
    key = {"Idempotency-Key": f"cancel-{oid}"}
    first, again, other_key = user.cancel(oid, headers=key), user.cancel(oid, headers=key), user.cancel(oid)
    for r in (first, again, other_key):
        assert r.status_code == 202, r.text
        assert r.json()["orderId"] == oid and r.json()["orderStatus"] in ("CANCELING", "CANCELED"), r.text
    assert user.wait_terminal(oid)["orderStatus"] == "CANCELED"
    late = user.cancel(oid)
    assert late.status_code == 202 and late.json()["orderStatus"] == "CANCELED", late.text
    run_sync(wait_at_rest(settings))
    assert_canceled_cleanly(user, oid, pid, balance=Decimal("20.00"), available=3, charged=True)
    on_kafka = events_on_kafka(settings, oid)
    assert on_kafka["ORDER_CANCEL_REQUESTED"] == 1 and on_kafka["ORDER_CANCELED"] == 1, on_kafka
    assert on_kafka["REFUND_DONE"] == 1 and on_kafka["INVENTORY_RELEASED"] == 1, on_kafka
    assert_notified_once(user, oid, {CANCEL_REQUESTED, "REFUND_DONE", CANCELED})
    run_sync(check_invariants(settings, [user.user_id], [pid]))


def test_cancel_racing_a_burst_of_orders(gateway: str, product, settings: Settings) -> None:
    """30 orders at once; half are canceled as soon as they are accepted, at whatever step their saga
    is, while the others run. The canceled ones end CANCELED with nothing kept, the others PLACED."""
    pid = product(stock=200, price="2.00")
    users = [register(gateway, tag=f"race{i}") for i in range(6)]
    for u in users:
        u.deposit(100)

    def run(i: int) -> tuple[ApiUser, str, int, int | None]:
        u = users[i % len(users)]
        quantity = 1 + i % 3
        oid = u.place(pid, quantity)
        return u, oid, quantity, (u.cancel(oid).status_code if i % 2 == 0 else None)

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(run, range(30)))
    assert [code for *_, code in results if code is not None] == [202] * 15
    run_sync(wait_at_rest(settings, timeout=180))
    taken = 0
    for u, oid, quantity, code in results:
        final = status_of(u, oid)
        if code is None:
            assert final["orderStatus"] == "PLACED", final
            taken += quantity
        else:
            assert final["orderStatus"] == "CANCELED" and final["refundStatus"] in ("REFUND_DONE", None), final
            steps = history(u, oid)
            assert [s["eventName"] for s in steps].count("ORDER_CANCEL_REQUESTED") == 1, steps
    assert stock(users[0], pid) == 200 - taken
    assert sum(u.balance() for u in users) == Decimal(600) - Decimal(2) * taken
    counts = run_sync(check_invariants(settings, [u.user_id for u in users], [pid]))
    assert counts == {"orders": 30, "placed": 15, "failed": 0, "canceled": 15}, counts


def test_cancel_is_refused_once_shipped_or_failed_and_for_someone_else(
    gateway: str, user: ApiUser, product, admin: ApiUser, settings: Settings
) -> None:
    pid = product(stock=3, price="6.00")
    user.deposit(6)
    oid = user.place(pid)
    assert user.wait_terminal(oid)["orderStatus"] == "PLACED"
    # someone else's order, or none: 404, and nothing changes
    stranger = register(gateway, tag="stranger")
    problem(stranger.cancel(oid), 404)
    problem(user.cancel(str(uuid.uuid4())), 404)
    problem(user.cancel("not-a-uuid"), 404)
    assert status_of(user, oid)["orderStatus"] == "PLACED"
    # shipped: too late to cancel
    assert admin.post(f"/api/admin/orders/{oid}/ship").status_code == 200
    problem(user.cancel(oid), 409)
    assert status_of(user, oid)["orderStatus"] == "ON_THE_WAY"
    assert admin.post(f"/api/admin/orders/{oid}/deliver").status_code == 200
    problem(user.cancel(oid), 409)
    assert status_of(user, oid)["orderStatus"] == "DELIVERED"
    # a FAILED order (nothing left to pay with): 409
    failed = user.place(pid)
    assert user.wait_terminal(failed)["orderStatus"] == "FAILED"
    problem(user.cancel(failed), 409)
    run_sync(wait_at_rest(settings))
    assert stock(user, pid) == 2 and user.balance() == Decimal("0.00")
    names = [s["eventName"] for s in history(user, oid)]
    assert "ORDER_CANCEL_REQUESTED" not in names, names
    run_sync(check_invariants(settings, [user.user_id], [pid]))


# ---- ship and deliver ----------------------------------------------------------------------------


def test_ship_and_deliver_answers(user: ApiUser, product, admin: ApiUser, settings: Settings) -> None:
    pid = product(stock=4, price="3.00")
    user.deposit(20)
    oid = user.place(pid, 2)
    assert user.wait_terminal(oid)["orderStatus"] == "PLACED"
    ship, deliver = f"/api/admin/orders/{oid}/ship", f"/api/admin/orders/{oid}/deliver"

    # a shopper may not, even for their own order; an unknown order is 404
    problem(user.post(ship), 403)
    problem(user.post(deliver), 403)
    problem(admin.post(f"/api/admin/orders/{uuid.uuid4()}/ship"), 404)
    problem(admin.post(f"/api/admin/orders/{uuid.uuid4()}/deliver"), 404)
    problem(admin.post("/api/admin/orders/not-a-uuid/ship"), 404)
    # out of order: deliver before ship
    problem(admin.post(deliver), 409)
    assert status_of(user, oid)["orderStatus"] == "PLACED"

    # ship, then again: 200 both, one change
    for _ in range(2):
        r = admin.post(ship)
        assert r.status_code == 200, r.text
        assert r.json()["orderId"] == oid and r.json()["orderStatus"] == "ON_THE_WAY", r.text
    # deliver, then again: 200 both, one change; shipping a delivered order is out of order
    for _ in range(2):
        r = admin.post(deliver)
        assert r.status_code == 200, r.text
        assert r.json()["orderStatus"] == "DELIVERED", r.text
    problem(admin.post(ship), 409)

    final = status_of(user, oid)
    assert final["orderStatus"] == "DELIVERED" and final["refundStatus"] is None, final
    steps = history(user, oid)
    names = [s["eventName"] for s in steps]
    assert names[-2:] == ["ORDER_SHIPPED", "ORDER_DELIVERED"], steps
    assert [s["orderStatus"] for s in steps[-2:]] == ["ON_THE_WAY", "DELIVERED"], steps
    assert names.count("ORDER_SHIPPED") == 1 and names.count("ORDER_DELIVERED") == 1, names
    # the stock stays taken and the money kept
    assert stock(user, pid) == 2 and user.balance() == Decimal("14.00")
    # the live stream of a delivered order: its state, then the end
    r = user.get(f"/api/orders/{oid}/events")
    assert r.status_code == 200 and r.text.count("data:") == 1 and '"DELIVERED"' in r.text

    # the admin's list filtered by status
    for status in ("DELIVERED", "PLACED"):
        listed = admin.get("/api/admin/sagas", params={"status": status, "limit": 500}).json()
        assert all(o["orderStatus"] == status for o in listed), status
        assert (oid in {o["orderId"] for o in listed}) == (status == "DELIVERED")

    run_sync(wait_at_rest(settings))
    on_kafka = events_on_kafka(settings, oid)
    assert on_kafka["ORDER_SHIPPED"] == 1 and on_kafka["ORDER_DELIVERED"] == 1, on_kafka
    assert_notified_once(user, oid, {"ORDER_PLACED", SHIPPED, DELIVERED})
    run_sync(check_invariants(settings, [user.user_id], [pid]))


def test_only_a_placed_order_can_be_shipped(
    gateway: str, product, admin: ApiUser, stack: Stack, settings: Settings
) -> None:
    """INITIATED (Payment held), FAILED and CANCELED orders: ship and deliver are 409."""
    pid = product(stock=5, price="8.00")
    u = register(gateway, tag="noship")
    u.deposit(10)
    stack.hold("payment")
    try:
        pending = u.place(pid)
        problem(admin.post(f"/api/admin/orders/{pending}/ship"), 409)
        assert u.cancel(pending).status_code == 202
    finally:
        stack.release("payment")
    assert u.wait_terminal(pending)["orderStatus"] == "CANCELED"
    problem(admin.post(f"/api/admin/orders/{pending}/ship"), 409)
    problem(admin.post(f"/api/admin/orders/{pending}/deliver"), 409)
    u2 = register(gateway, tag="noship-poor")
    failed = u2.place(pid)
    assert u2.wait_terminal(failed)["orderStatus"] == "FAILED"
    problem(admin.post(f"/api/admin/orders/{failed}/ship"), 409)
    run_sync(wait_at_rest(settings))
    assert status_of(u, pending)["orderStatus"] == "CANCELED"
    assert status_of(u2, failed)["orderStatus"] == "FAILED"
    run_sync(check_invariants(settings, [u.user_id, u2.user_id], [pid]))
