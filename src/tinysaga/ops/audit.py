"""`tiny-saga audit`: SPEC section 4 checked on the running stack, across every service's database
(read with the superuser) and Kafka (the consumer groups' lag on the saga topics).

What it checks, and the kind of each violation it reports:
- at rest: every outbox drained (`outbox`), no consumer group behind on the saga topics (`lag`),
  every order in a status where no step is in flight (`in-flight`), no payment waiting for a void
  or a refund (`payment-pending`);
- money, per user: balance = deposits - payments + refunds (`balance`), never negative
  (`negative-balance`); per order: at most one charge (`double-charge`) and one refund
  (`double-refund`), a refund only of a charge (`refund-without-charge`), a `PLACED` order charged
  exactly its total (`placed-not-charged`) and not refunded (`placed-refunded`), a `FAILED` or
  `CANCELED` order costing nothing unless its refund failed (`failed-cost-money`), its
  `refundStatus` telling what happened (`refund-status`: `REFUND_DONE` only for a charge refunded,
  null on a canceled order only when nothing was charged) and a failed refund raising an alert
  (`refund-failed-without-alert`);
- stock, per product: stock held only for orders that keep it (`stock-not-returned`, and a kept
  order must hold it: `placed-without-stock`, its own product and quantity: `placed-wrong-stock`),
  available = what the admin set - the quantities reserved since (`stock`), never negative
  (`negative-stock`).
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg

from tinysaga.contracts import saga
from tinysaga.platform.secrets import superuser_dsn
from tinysaga.platform.settings import Settings

AT_REST = ("PLACED", "FAILED", "CANCELED", "ON_THE_WAY", "DELIVERED")
KEEPS_STOCK = ("PLACED", "ON_THE_WAY", "DELIVERED")  # the orders that keep their reservation
OUTBOX_DATABASES = ("auth", "order", "payment", "wallet", "inventory", "notification")
KAFKA_TIMEOUT = 30.0


@dataclass(frozen=True)
class Violation:
    kind: str
    subject: str  # the order, user, product, database or consumer group concerned
    detail: str


@dataclass
class AuditReport:
    checked: dict[str, int] = field(default_factory=dict)  # what was looked at: how many
    orders_by_status: dict[str, int] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def kinds(self) -> set[str]:
        return {v.kind for v in self.violations}

    def add(self, kind: str, subject: str, detail: str) -> None:
        self.violations.append(Violation(kind, subject, detail))

    def render(self, limit: int = 20) -> str:
        lines = ["Audit of SPEC section 4", ""]
        lines += [f"  checked {what}: {n}" for what, n in self.checked.items()]
        statuses = ", ".join(f"{s} {n}" for s, n in sorted(self.orders_by_status.items())) or "none"
        lines += ["", f"  orders by status: {statuses}", ""]
        if self.ok:
            lines.append("No violation: every invariant holds.")
            return "\n".join(lines)
        by_kind = Counter(v.kind for v in self.violations)
        lines.append(f"{len(self.violations)} violation(s): " + ", ".join(f"{k} {n}" for k, n in by_kind.items()))
        for kind in by_kind:
            shown = [v for v in self.violations if v.kind == kind][:limit]
            for v in shown:
                lines.append(f"  [{v.kind}] {v.subject}: {v.detail}")
            if by_kind[kind] > len(shown):
                lines.append(f"  [{kind}] ... and {by_kind[kind] - len(shown)} more")
        return "\n".join(lines)


Dsn = Callable[[str], str]  # service -> a DSN of its database with rights to read every table


def superuser_dsns(settings: Settings) -> Dsn:
    return lambda service: superuser_dsn(settings, f"tinysaga_{service}")


async def _fetch(dsn: Dsn, service: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn(service))
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def _committed(admin: Any, wanted: set[str], groups: Iterable[str] = ()) -> dict[tuple[str, Any], int]:
    """Each group's committed offset of each partition of the wanted topics: the groups the brokers
    list, and `groups` whether they list them or not (a coordinator still loading its groups, as
    just after a node restarts or a coordinator moves, can leave them out of the list, and a group
    left out would read as caught up). An answer Kafka marks as one to ask again is asked
    again, within the caller's timeout."""
    from aiokafka.errors import KafkaError  # noqa: PLC0415

    while True:
        try:
            committed = {}
            listed = {group for group, *_ in await admin.list_consumer_groups()}
            for group in sorted(listed | set(groups)):
                for tp, meta in (await admin.list_consumer_group_offsets(group)).items():
                    if tp.topic in wanted and meta.offset >= 0:  # -1: nothing committed there
                        committed[(group, tp)] = meta.offset
            return committed
        except KafkaError as e:
            if not e.retriable:
                raise
            await asyncio.sleep(0.5)


async def consumer_lag(settings: Settings, topics: Iterable[str] | None = None) -> dict[str, int]:
    """Per consumer group, the records on the saga topics it has not committed yet."""
    from aiokafka import AIOKafkaConsumer  # noqa: PLC0415
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415

    wanted = set(topics or (settings.topic, settings.user_topic, settings.commands_topic))
    bootstrap = settings.kafka_bootstrap_direct
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, request_timeout_ms=10000)
    async with asyncio.timeout(KAFKA_TIMEOUT):
        await admin.start()
        try:
            await probe.start()
            try:
                committed = await _committed(admin, wanted, saga.consumer_groups(settings.saga_mode))
                ends = await probe.end_offsets(list({tp for _, tp in committed})) if committed else {}
                lag: dict[str, int] = defaultdict(int)
                for (group, tp), off in committed.items():
                    lag[group] += max(0, ends[tp] - off)
                return dict(lag)
            finally:
                await probe.stop()
        finally:
            await admin.close()


async def in_flight(
    settings: Settings, *, dsn: Dsn | None = None, topics: Iterable[str] | None = None, kafka: bool = True
) -> dict[str, int]:
    """What is not at rest yet: sagas in flight, outbox rows, pending payments, consumer lag (asked
    of Kafka only once the databases are at rest). All zeros: at rest."""
    dsn = dsn or superuser_dsns(settings)
    rest = list(AT_REST)
    out = {
        "sagas in flight": (
            await _fetch(dsn, "order", "SELECT count(*) AS n FROM orders WHERE order_status <> ALL($1)", rest)
        )[0]["n"],
        "outbox rows": 0,
        "payments pending": (
            await _fetch(
                dsn, "payment", "SELECT count(*) AS n FROM payments WHERE status IN ('VOID_PENDING','REFUND_PENDING')"
            )
        )[0]["n"],
    }
    for svc in OUTBOX_DATABASES:
        out["outbox rows"] += (await _fetch(dsn, svc, "SELECT count(*) AS n FROM outbox"))[0]["n"]
    if kafka:
        busy = any(out.values())
        out["consumer lag"] = sum((await consumer_lag(settings, topics)).values()) if not busy else -1
    return out


async def audit(
    settings: Settings,
    *,
    users: Iterable[str] | None = None,
    products: Iterable[str] | None = None,
    dsn: Dsn | None = None,
    topics: Iterable[str] | None = None,
    kafka: bool = True,
) -> AuditReport:
    """Check SPEC section 4. `users`: only their orders and wallets (the stock of every product is
    then not checked, other users' orders take from it too, unless `products` names the ones that
    only they order). `dsn` and `topics`: other databases and topics than the stack's own (the
    audit's tests build violations in scratch ones)."""
    dsn = dsn or superuser_dsns(settings)
    scope = sorted(set(users)) if users is not None else None
    report = AuditReport()

    # ---- at rest ----
    for svc in OUTBOX_DATABASES:
        rows = await _fetch(dsn, svc, "SELECT count(*) AS n, min(created_at) AS oldest FROM outbox")
        if rows[0]["n"]:
            report.add("outbox", svc, f"{rows[0]['n']} event(s) not sent to Kafka, oldest from {rows[0]['oldest']}")
    report.checked["outboxes"] = len(OUTBOX_DATABASES)
    if kafka:
        try:
            lag = await consumer_lag(settings, topics)
        except Exception as e:  # any client error or timeout: Kafka cannot be read
            report.add("lag", "kafka", f"cannot read the consumer groups' offsets: {type(e).__name__}: {e}")
            lag = {}
        for group, n in sorted(lag.items()):
            if n:
                report.add("lag", group, f"{n} record(s) on the saga topics not consumed")
        report.checked["consumer groups"] = len(lag)

    where, args = ("WHERE user_id = ANY($1)", [scope]) if scope is not None else ("", [])
    orders = await _fetch(dsn, "order", f"SELECT * FROM orders {where}", *args)
    ledger = await _fetch(dsn, "wallet", f"SELECT * FROM transactions {where}", *args)
    wallets = {r["user_id"]: r["balance"] for r in await _fetch(dsn, "wallet", f"SELECT * FROM wallets {where}", *args)}
    pending = await _fetch(
        dsn,
        "payment",
        f"SELECT order_id, status FROM payments {where} {'AND' if where else 'WHERE'}"
        " status IN ('VOID_PENDING','REFUND_PENDING')",
        *args,
    )
    order_ids = [str(o["order_id"]) for o in orders]
    reservations = {
        r["order_id"]: r
        for r in await _fetch(
            dsn,
            "inventory",
            "SELECT * FROM reservations" + (" WHERE order_id = ANY($1)" if scope is not None else ""),
            *([order_ids] if scope is not None else []),
        )
    }
    alerted = {
        str(r["order_id"])
        for r in await _fetch(dsn, "order", "SELECT order_id FROM alerts WHERE kind = 'REFUND_FAILED'")
    }
    report.orders_by_status = dict(Counter(o["order_status"] for o in orders))
    report.checked["orders"] = len(orders)
    for o in orders:
        if o["order_status"] not in AT_REST:
            report.add("in-flight", str(o["order_id"]), f"still {o['order_status']} (since {o['updated_at']})")
    for p in pending:
        report.add("payment-pending", p["order_id"], f"payment {p['status']}")

    # ---- money ----
    users_seen = {o["user_id"] for o in orders} | set(wallets) | {t["user_id"] for t in ledger}
    report.checked["wallets"] = len(users_seen)
    by_user: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for t in ledger:
        by_user[t["user_id"]].append(t)
    for uid in sorted(users_seen):
        mine = by_user[uid]
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
        if balance != deposits - paid + refunded:
            report.add("balance", uid, f"balance {balance} != deposits {deposits} - paid {paid} + refunded {refunded}")
        if balance < 0:
            report.add("negative-balance", uid, f"balance {balance}")
    charges: dict[str, list[asyncpg.Record]] = defaultdict(list)
    refunds: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for t in ledger:
        if t["order_id"] and t["transaction_type"] == "PAYMENT" and t["payment_status"] == "COMPLETED":
            charges[t["order_id"]].append(t)
        elif t["order_id"] and t["transaction_type"] == "REFUND" and t["payment_status"] == "REFUNDED":
            refunds[t["order_id"]].append(t)
    for oid, rows in charges.items():
        if len(rows) > 1:
            report.add("double-charge", oid, f"charged {len(rows)} times: {', '.join(str(r['amount']) for r in rows)}")
    for oid, rows in refunds.items():
        if len(rows) > 1:
            report.add("double-refund", oid, f"refunded {len(rows)} times")
        charged = sum((c["amount"] for c in charges.get(oid, [])), Decimal(0))
        if sum((r["amount"] for r in rows), Decimal(0)) > charged:
            report.add("refund-without-charge", oid, f"refunded {rows[0]['amount']}, charged {charged}")
    for o in orders:
        oid, status = str(o["order_id"]), o["order_status"]
        charged = sum((c["amount"] for c in charges.get(oid, [])), Decimal(0))
        refunded = sum((r["amount"] for r in refunds.get(oid, [])), Decimal(0))
        if status in KEEPS_STOCK:
            if len(charges.get(oid, [])) <= 1 and charged != o["total_amount"]:  # (two: a double-charge)
                report.add("placed-not-charged", oid, f"{status}, total {o['total_amount']}, charged {charged}")
            if refunded:
                report.add("placed-refunded", oid, f"{status} but refunded {refunded}")
        elif status in ("FAILED", "CANCELED") and o["refund_status"] != "REFUND_FAILED" and charged != refunded:
            report.add(
                "failed-cost-money",
                oid,
                f"{status} ({o['fail_reason']}): charged {charged}, refunded {refunded}",
            )
        if o["refund_status"] == "REFUND_DONE" and not (charged and refunded == charged):
            report.add("refund-status", oid, f"{status} says REFUND_DONE: charged {charged}, refunded {refunded}")
        if status == "CANCELED" and o["refund_status"] is None and charged:
            report.add("refund-status", oid, f"CANCELED with no refund status, but charged {charged}")
        if o["refund_status"] == "REFUND_FAILED" and oid not in alerted:
            report.add("refund-failed-without-alert", oid, f"{status}: its refund failed and no alert was raised")

    # ---- stock ----
    status_of = {str(o["order_id"]): o["order_status"] for o in orders}
    held = {oid for oid, r in reservations.items() if r["status"] == "RESERVED"}
    for oid in sorted(held):
        st, r = status_of.get(oid), reservations[oid]
        if st is None and scope is None:
            report.add("stock-not-returned", oid, f"{r['quantity']} of {r['product_id']} held for no order")
        elif st in AT_REST and st not in KEEPS_STOCK:
            report.add("stock-not-returned", oid, f"{st} order still holds {r['quantity']} of {r['product_id']}")
    for o in orders:
        oid, st = str(o["order_id"]), o["order_status"]
        if st in KEEPS_STOCK and oid not in held:
            report.add("placed-without-stock", oid, f"{st} order holds no reservation")
        elif st in KEEPS_STOCK:
            r = reservations[oid]
            if (r["product_id"], r["quantity"]) != (o["product_id"], o["product_quantity"]):
                report.add(
                    "placed-wrong-stock",
                    oid,
                    f"holds {r['quantity']} of {r['product_id']} for {o['product_quantity']} of {o['product_id']}",
                )
    report.checked["reservations"] = len(reservations)
    only = sorted(set(products)) if products is not None else None
    if scope is None or only:
        products_rows = await _fetch(dsn, "inventory", "SELECT product_id, available_count FROM products")
        products = [p for p in products_rows if only is None or p["product_id"] in only]
        last_set = {
            c["product_id"]: c
            for c in await _fetch(
                dsn,
                "inventory",
                "SELECT DISTINCT ON (product_id) * FROM stock_changes ORDER BY product_id, id DESC",
            )
        }
        report.checked["products"] = len(products)
        for p in products:
            pid, available = p["product_id"], p["available_count"]
            if available < 0:
                report.add("negative-stock", pid, f"available {available}")
            c = last_set.get(pid)
            if c is None:
                report.add("stock", pid, "no stock was ever set for it")
                continue
            taken = sum(
                r["quantity"]
                for r in reservations.values()
                if r["product_id"] == pid and r["status"] == "RESERVED" and r["created_at"] > c["changed_at"]
            )
            if available != c["new_count"] - taken:
                report.add(
                    "stock",
                    pid,
                    f"available {available} != set {c['new_count']} - reserved since {taken}",
                )
    return report


async def wait_at_rest(
    settings: Settings, timeout: float, *, dsn: Dsn | None = None, topics: Iterable[str] | None = None
) -> dict[str, int]:
    """Wait (bounded) until nothing is in flight; returns what was still in flight at the end (all
    zeros: at rest)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            left = await in_flight(settings, dsn=dsn, topics=topics)
        except (OSError, asyncpg.PostgresError, TimeoutError) as e:  # a database or Kafka still restarting
            left = {"unreachable": 1, "error": 0}
            if loop.time() > deadline:
                raise RuntimeError(f"the stack cannot be read: {e}") from e
        if not any(left.values()) or loop.time() > deadline:
            return left
        await asyncio.sleep(0.5)
