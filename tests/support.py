"""Test helpers: a client of the public API through the gateway, the stack's processes, and the
invariants of SPEC section 4 checked on the databases."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
import httpx

from tinysaga.infra import supervisor
from tinysaga.platform.secrets import superuser_dsn
from tinysaga.platform.settings import Settings

# The saga has ended (SPEC section 4, 3); ON_THE_WAY and DELIVERED follow PLACED.
TERMINAL = {"PLACED", "FAILED", "CANCELED"}
AFTER_PLACED = {"ON_THE_WAY", "DELIVERED"}
AT_REST = TERMINAL | AFTER_PLACED  # anything else (INITIATED, PAYMENT_DONE, REFUND_INITIATED, CANCELING) is in flight
HOLDS_STOCK = {"PLACED", *AFTER_PLACED}  # the orders the stock is taken for


def run_sync(coro: Any) -> Any:
    """Run a coroutine to the end from sync test code, on a thread of its own, so that it works
    whatever event loop the thread already has (Playwright's sync API keeps one running)."""
    import asyncio
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def unique_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


@dataclass
class ApiUser:
    """A registered, signed-in user talking to the gateway."""

    base: str
    email: str
    password: str
    user_id: str = ""
    token: str = ""
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(self.base + path, headers={**self.auth, **kw.pop("headers", {})}, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.http.post(self.base + path, json=body, headers={**self.auth, **kw.pop("headers", {})}, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.http.put(self.base + path, json=body, headers={**self.auth, **kw.pop("headers", {})}, **kw)

    def cancel(self, order_id: str, **kw: Any) -> httpx.Response:
        return self.post(f"/api/orders/{order_id}/cancel", **kw)

    def deposit(self, amount: float | int | str) -> Decimal:
        r = self.post("/api/wallet/deposits", {"amount": amount})
        assert r.status_code == 201, r.text
        return Decimal(str(r.json()["balance"]))

    def balance(self) -> Decimal:
        r = self.get("/api/wallet")
        assert r.status_code == 200, r.text
        return Decimal(str(r.json()["balance"]))

    def order(self, product_id: str, quantity: int = 1, **kw: Any) -> httpx.Response:
        return self.post(
            "/api/orders", {"productId": product_id, "productQuantity": quantity, "paymentType": "WALLET"}, **kw
        )

    def place(self, product_id: str, quantity: int = 1) -> str:
        r = self.order(product_id, quantity)
        assert r.status_code == 202, r.text
        return r.json()["orderId"]

    def wait_terminal(self, order_id: str, timeout: float = 60) -> dict[str, Any]:
        """Follow the order's live stream (one request) until it ends in PLACED, FAILED or CANCELED."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                with self.http.stream(
                    "GET",
                    f"{self.base}/api/orders/{order_id}/events",
                    headers=self.auth,
                    timeout=httpx.Timeout(deadline - time.monotonic() + 1),
                ) as r:
                    assert r.status_code == 200, r.read()
                    for line in r.iter_lines():
                        if line.startswith("data:"):
                            last = json.loads(line[5:])
                            if last["orderStatus"] in TERMINAL:
                                return last
            except httpx.ReadTimeout:
                break
        raise AssertionError(f"order {order_id} did not end within {timeout}s; last seen {last}")

    def wait_until(self, order_id: str, pred: Any, timeout: float = 60) -> dict[str, Any]:
        """Poll the order (gently: the per-user rate limit applies) until pred(order) holds."""
        deadline = time.monotonic() + timeout
        o: dict[str, Any] = {}
        while time.monotonic() < deadline:
            o = self.get(f"/api/orders/{order_id}").json()
            if pred(o):
                return o
            time.sleep(0.3)
        raise AssertionError(f"order {order_id}: condition not met within {timeout}s; last {o}")


def register(
    base: str,
    *,
    tag: str = "user",
    password: str = "correct-horse-1",
    phone: str | None = "+15550123",
    http: httpx.Client | None = None,
) -> ApiUser:
    u = ApiUser(base, unique_email(tag), password, http=http or httpx.Client(timeout=30))
    body: dict[str, Any] = {"email": u.email, "password": password, "name": f"Test {tag}"}
    if phone:
        body["phone"] = phone
    r = u.http.post(base + "/api/auth/register", json=body)
    assert r.status_code == 201, r.text
    u.user_id = r.json()["userId"]
    return login(u)


def login(u: ApiUser) -> ApiUser:
    r = u.http.post(u.base + "/api/auth/token", json={"email": u.email, "password": u.password})
    assert r.status_code == 200, r.text
    u.token = r.json()["accessToken"]
    return u


# ---- the stack's processes ---------------------------------------------------------------------


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.s = settings

    def state(self) -> dict[str, Any]:
        return json.loads((self.s.run_dir / "state.json").read_text())["children"]

    def pid(self, name: str) -> int | None:
        return self.state()[name]["pid"]

    def kill9(self, name: str) -> int:
        pid = self.pid(name)
        assert pid, f"{name} is not running"
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_restarted(self, name: str, old_pid: int, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.pid(name)
            if pid and pid != old_pid and self.healthy(name) and self.gateway_sees(name):
                return pid
            time.sleep(0.2)
        raise AssertionError(f"{name} was not restarted healthy within {timeout}s")

    def healthy(self, name: str) -> bool:
        from tinysaga.cli import probe
        from tinysaga.infra.topology import processes

        spec = next(p for p in processes(self.s) if p.name == name)
        return probe(spec.health, self.pid(name))

    def hold(self, name: str) -> None:
        (self.s.run_dir / "hold").mkdir(parents=True, exist_ok=True)
        (self.s.run_dir / "hold" / name).touch()
        supervisor.nudge(self.s)
        deadline = time.monotonic() + 30
        while self.pid(name) is not None:
            assert time.monotonic() < deadline, f"{name} was not stopped"
            time.sleep(0.1)

    def release(self, name: str, wait: bool = True) -> None:
        (self.s.run_dir / "hold" / name).unlink(missing_ok=True)
        supervisor.nudge(self.s)
        deadline = time.monotonic() + 60
        while wait and not (self.pid(name) and self.healthy(name) and self.gateway_sees(name)):
            assert time.monotonic() < deadline, f"{name} did not come back"
            time.sleep(0.2)

    def gateway_sees(self, name: str) -> bool:
        """The gateway's health check has this server up again (not just the process)."""
        from tinysaga.infra.gateway import server_states

        server = name if name[-2:-1] == "-" else f"{name}-1"
        states = server_states(self.s.port_of("gateway-stats"))
        return server not in states or states[server].startswith("UP")


# ---- the invariants of SPEC section 4 -----------------------------------------------------------


async def fetch(settings: Settings, service: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(superuser_dsn(settings, f"tinysaga_{service}"))
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def consumer_lag(settings: Settings) -> int:
    """Records on the saga topics that a consumer group has not committed yet (a terminal order can
    still have its compensation on the way, e.g. the refund after a timeout, waiting in Kafka)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    probe = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    await admin.start()
    await probe.start()
    try:
        committed = {}
        for group, *_ in await admin.list_consumer_groups():
            for tp, meta in (await admin.list_consumer_group_offsets(group)).items():
                if tp.topic in (settings.topic, settings.user_topic):
                    committed[(group, tp)] = meta.offset
        ends = await probe.end_offsets(list({tp for _, tp in committed}))
        return sum(max(0, ends[tp] - off) for (_, tp), off in committed.items())
    finally:
        await probe.stop()
        await admin.close()


async def wait_at_rest(settings: Settings, timeout: float = 120) -> None:
    """No saga in flight, nothing left in any outbox or unconsumed in Kafka, no payment pending."""
    deadline = time.monotonic() + timeout
    while True:
        in_flight = await fetch(
            settings,
            "order",
            "SELECT count(*) AS n FROM orders WHERE NOT order_status = ANY($1::text[])",
            list(AT_REST),
        )
        outboxes = 0
        for svc in ("order", "payment", "inventory", "wallet", "auth"):
            outboxes += (await fetch(settings, svc, "SELECT count(*) AS n FROM outbox"))[0]["n"]
        pending = await fetch(
            settings, "payment", "SELECT count(*) AS n FROM payments WHERE status IN ('VOID_PENDING','REFUND_PENDING')"
        )
        lag = await consumer_lag(settings) if in_flight[0]["n"] == 0 and outboxes == 0 else -1
        if in_flight[0]["n"] == 0 and outboxes == 0 and pending[0]["n"] == 0 and lag == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not at rest after {timeout}s: {in_flight[0]['n']} sagas in flight, {outboxes} outbox rows, "
                f"{pending[0]['n']} payments pending, consumer lag {lag}"
            )
        await _sleep(0.5)


async def _sleep(t: float) -> None:
    import asyncio

    await asyncio.sleep(t)


async def check_invariants(
    settings: Settings, user_ids: list[str] | None = None, product_ids: list[str] | None = None
) -> dict[str, int]:
    """Assert SPEC section 4 on the data at rest; returns counts for the report. With `user_ids`,
    only those users' orders are checked, and the stock only of `product_ids` (products that no one
    else orders)."""
    orders = await fetch(settings, "order", "SELECT * FROM orders")
    if user_ids is not None:
        orders = [o for o in orders if o["user_id"] in set(user_ids)]
    ledger = await fetch(settings, "wallet", "SELECT * FROM transactions")
    wallets = {r["user_id"]: r["balance"] for r in await fetch(settings, "wallet", "SELECT * FROM wallets")}
    reservations = {r["order_id"]: r for r in await fetch(settings, "inventory", "SELECT * FROM reservations")}
    alerted = {
        str(r["order_id"])
        for r in await fetch(settings, "order", "SELECT order_id FROM alerts WHERE kind = 'REFUND_FAILED'")
    }

    # 3. every order ended (PLACED, FAILED or CANCELED; a placed one may be shipped or delivered since)
    stuck = [str(o["order_id"]) for o in orders if o["order_status"] not in AT_REST]
    assert not stuck, f"orders not ended: {stuck[:5]}"

    # 1. money, per user
    users = {o["user_id"] for o in orders} if user_ids is None else set(user_ids)
    for uid in users:
        mine = [t for t in ledger if t["user_id"] == uid]
        deposits = sum((t["amount"] for t in mine if t["transaction_type"] == "DEPOSIT"), Decimal(0))
        paid = sum(
            (t["amount"] for t in mine if t["transaction_type"] == "PAYMENT" and t["payment_status"] == "COMPLETED"),
            Decimal(0),
        )
        refunded = sum(
            (t["amount"] for t in mine if t["transaction_type"] == "REFUND" and t["payment_status"] == "REFUNDED"),
            Decimal(0),
        )
        balance = wallets.get(uid, Decimal(0))
        assert balance == deposits - paid + refunded, (
            f"user {uid}: balance {balance} != {deposits} - {paid} + {refunded}"
        )
        assert balance >= 0
    by_order: dict[str, dict[str, asyncpg.Record]] = {}
    for t in ledger:
        if t["order_id"]:
            rows = by_order.setdefault(t["order_id"], {})
            assert t["transaction_type"] not in rows, f"order {t['order_id']}: two {t['transaction_type']} rows"
            rows[t["transaction_type"]] = t
    counts = {"orders": len(orders), "placed": 0, "failed": 0, "canceled": 0}
    for o in orders:
        oid = str(o["order_id"])
        rows = by_order.get(oid, {})
        pay, ref = rows.get("PAYMENT"), rows.get("REFUND")
        charged = pay is not None and pay["payment_status"] == "COMPLETED"
        refunded = ref is not None and ref["payment_status"] == "REFUNDED"
        if refunded:
            assert charged and ref["amount"] == pay["amount"], f"order {oid}: refund without matching charge"
        if o["order_status"] in HOLDS_STOCK:
            counts["placed"] += 1
            status = o["order_status"]
            assert charged and pay["amount"] == o["total_amount"], f"{status} order {oid} not charged its total"
            assert not refunded, f"{status} order {oid} was refunded"
        elif o["order_status"] == "CANCELED":
            # like FAILED: it costs its user nothing unless its refund failed (alerted); and its
            # refundStatus says what happened: REFUND_DONE when charged (and refunded), null when not
            counts["canceled"] += 1
            if o["refund_status"] != "REFUND_FAILED":
                assert not charged or refunded, f"CANCELED order {oid} cost its user money"
            if o["refund_status"] == "REFUND_DONE":
                assert charged and refunded, f"CANCELED order {oid} says REFUND_DONE without a charge refunded"
            if o["refund_status"] is None:
                assert not charged, f"CANCELED order {oid} was charged but its refundStatus is null"
            if o["refund_status"] == "REFUND_FAILED":
                assert oid in alerted, f"CANCELED order {oid}: its refund failed and no alert was raised"
        else:
            counts["failed"] += 1
            if o["refund_status"] != "REFUND_FAILED":
                assert not charged or refunded, f"FAILED order {oid} cost its user money ({o['fail_reason']})"

    # 2. stock: reserved exactly for PLACED orders (and those shipped or delivered since), each its
    # quantity; so available = admin stock - quantities of PLACED, ON_THE_WAY and DELIVERED orders
    placed = {str(o["order_id"]) for o in orders if o["order_status"] in HOLDS_STOCK}
    considered = {str(o["order_id"]) for o in orders}
    reserved = {oid for oid, r in reservations.items() if r["status"] == "RESERVED" and oid in considered}
    assert reserved == placed, f"reservations {len(reserved)} != placed {len(placed)}: {list(reserved ^ placed)[:5]}"
    for o in orders:
        r = reservations.get(str(o["order_id"]))
        if str(o["order_id"]) in placed:
            assert (r["product_id"], r["quantity"]) == (o["product_id"], o["product_quantity"]), (
                f"order {o['order_id']}: reserved {r['quantity']} x {r['product_id']}"
            )
    if user_ids is None or product_ids:
        products = await fetch(settings, "inventory", "SELECT * FROM products")
        if user_ids is not None:
            products = [p for p in products if p["product_id"] in set(product_ids or ())]
        changes = await fetch(
            settings, "inventory", "SELECT DISTINCT ON (product_id) * FROM stock_changes ORDER BY product_id, id DESC"
        )
        last = {c["product_id"]: c for c in changes}
        for p in products:
            c = last[p["product_id"]]
            taken = sum(
                r["quantity"]
                for r in reservations.values()
                if r["product_id"] == p["product_id"]
                and r["status"] == "RESERVED"
                and r["created_at"] > c["changed_at"]
            )
            assert p["available_count"] == c["new_count"] - taken, f"stock of {p['product_id']} drifted"
            assert p["available_count"] >= 0
    return counts
