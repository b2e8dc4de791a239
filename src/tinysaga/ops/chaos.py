"""`tiny-saga chaos`: an open-loop load of orders under a schedule of faults, then, once the stack is
at rest, `tiny-saga audit`. It runs on a stack of its own, started by `tiny-saga chaos` with
Toxiproxy between the services and PostgreSQL, Kafka and Wallet (`TINYSAGA_FAULT_PROXY=1`).

The schedule comes from `--seed` alone (with `--minutes` and the number of Kafka nodes): the same
seed gives the same faults, targets, times and lengths. One fault at a time, each in a window of its
own, so that the sagas begun in a window tell what that fault cost (before each fault the driver
waits, bounded, until every process is back and healthy and the gateway sees every replica up):
- kill -9 of each service process and of the relay (the supervisor restarts it);
- kill -9 of a Kafka node, and with three nodes of the active controller (a Kafka fault waits until
  every partition has all its replicas in sync again, so at most one node is ever lost);
- PostgreSQL restarted (`pg_ctl stop -m fast`, then started);
- latency added on the way to PostgreSQL, to Wallet and to a Kafka node (Toxiproxy `latency`);
- connections dropped to PostgreSQL, to Wallet and to a Kafka node (the proxy disabled for 2 s,
  which closes every open connection and refuses new ones);
- with three nodes, one Kafka node cut off from the services for a while (its proxy disabled);
- a stretch where every event on `order-topic` (and command on `saga-commands`) is delivered twice
  (each record copied, with its key, headers and partition, as it is published).

Then it waits (bounded) until nothing is in flight, runs the audit, and prints the schedule as it
ran, the orders by outcome, the saga durations (p50, p99, max) per fault window, and the
violations. Exit 0 only when the audit finds none and every order is at rest. Traffic goes only to
127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from tinysaga.infra import kafka, postgres, toxiproxy
from tinysaga.infra.gateway import server_states
from tinysaga.infra.topology import ProcSpec, processes
from tinysaga.ops.audit import AT_REST, audit, superuser_dsns, wait_at_rest
from tinysaga.platform.settings import Settings, get_settings

KILLED_SERVICES = (
    "auth",
    "order-1",
    "order-2",
    "payment",
    "wallet",
    "inventory-1",
    "inventory-2",
    "notification",
    "relay",
)
COPY_HEADER = "chaosCopy"  # marks the duplicator's copies, so that it does not copy them again
MAX_IN_FLIGHT = 256  # requests of the load at once (open loop: beyond that, the load is late)


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the load starts
    kind: str
    target: str
    seconds: float  # how long it is applied (0: an instant, like a kill)
    amount: int = 0  # the latency in ms, for a latency fault

    def describe(self) -> str:
        what = {
            "kill": f"kill -9 {self.target}",
            "kafka-kill": "kill -9 the active Kafka controller"
            if self.target == "active controller"
            else f"kill -9 Kafka node {self.target}",
            "pg-restart": "restart PostgreSQL",
            "latency": f"+{self.amount} ms latency to {self.target} for {self.seconds:.0f} s",
            "drop": f"drop every connection to {self.target} ({self.seconds:.0f} s refused)",
            "kafka-cut": f"cut Kafka node {self.target} off from the services for {self.seconds:.0f} s",
            "duplicate": f"deliver every event twice for {self.seconds:.0f} s",
        }
        return what[self.kind]


def build_schedule(seed: int, minutes: float, kafka_nodes: int) -> list[Fault]:
    """The faults of a run, from the seed alone: which, on what, when and for how long."""
    rng = random.Random(seed)
    node = "kafka" if kafka_nodes == 1 else f"kafka-{rng.randint(1, 3)}"
    wanted: list[tuple[str, str, float, int]] = [("kill", name, 0, 0) for name in KILLED_SERVICES]
    wanted += [
        ("kafka-kill", "kafka" if kafka_nodes == 1 else f"kafka-{rng.randint(1, 3)}", 0, 0),
        ("pg-restart", "postgres", 0, 0),
        ("latency", "postgres", 10, 20),
        ("latency", "wallet", 10, 300),
        ("latency", node, 10, 100),
        ("drop", "postgres", 2, 0),
        ("drop", "wallet", 2, 0),
        ("drop", node, 2, 0),
        ("duplicate", "order-topic", 15, 0),
    ]
    if kafka_nodes == 3:
        wanted += [("kafka-kill", "active controller", 0, 0), ("kafka-cut", f"kafka-{rng.randint(1, 3)}", 20, 0)]
    rng.shuffle(wanted)
    duration = minutes * 60
    lead = min(10.0, duration * 0.05)  # a calm start: the baseline
    slot = (duration * 0.85 - lead) / len(wanted)
    out = []
    for i, (kind, target, nominal, amount) in enumerate(wanted):
        at = lead + i * slot + rng.uniform(0, slot * 0.2)
        out.append(Fault(round(at, 1), kind, target, round(min(nominal, slot * 0.7), 1), amount))
    return out


def format_schedule(schedule: list[Fault]) -> str:
    return "\n".join(f"  t+{f.at:6.1f} s  {f.describe()}" for f in schedule)


# ---- the faults ----------------------------------------------------------------------------------


class Injector:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.api = f"http://127.0.0.1:{toxiproxy.api_port(settings)}"
        self.http = httpx.AsyncClient(timeout=10)

    def pid(self, name: str) -> int | None:
        try:
            state = json.loads((self.s.run_dir / "state.json").read_text())["children"]
        except (OSError, ValueError):
            return None
        return (state.get(name) or {}).get("pid")

    async def kill(self, name: str) -> str:
        deadline = time.monotonic() + 60
        while (pid := self.pid(name)) is None:  # killed a moment ago: wait for the supervisor's restart
            if time.monotonic() > deadline:
                return f"{name} was not running"
            await asyncio.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        return f"killed {name} (pid {pid})"

    async def healthy(self, spec: ProcSpec) -> bool:
        if self.pid(spec.name) is None:
            return False
        if spec.health is None:
            return True
        if spec.health.startswith("tcp:"):
            try:
                _, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", int(spec.health[4:])), 2)
                w.close()
                return True
            except (OSError, TimeoutError):
                return False
        try:
            return (await self.http.get(spec.health, timeout=2)).status_code == 200
        except httpx.HTTPError:
            return False

    async def stack_whole(self, timeout: float = 90) -> list[str]:
        """Wait (bounded) until every process is up and healthy and the gateway sees every replica
        up: one fault at a time, never two replicas of a service down together by accident. Returns
        what was still down at the end."""
        deadline = time.monotonic() + timeout
        while True:
            down = [p.name for p in processes(self.s) if not await self.healthy(p)]
            try:
                states = await asyncio.to_thread(server_states, self.s.port_of("gateway-stats"))
                down += [name for name, st in states.items() if not st.startswith("UP")]
            except OSError:
                down.append("gateway")
            if not down or time.monotonic() > deadline:
                return down
            await asyncio.sleep(0.5)

    async def kafka_whole(self, timeout: float = 90) -> None:
        """Every partition of the saga topic with all its replicas in sync (at most one node is ever
        lost at a time)."""
        from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.s.kafka_bootstrap_direct, request_timeout_ms=5000)
            try:
                await admin.start()
                topics = await admin.describe_topics([self.s.topic])
                parts = [p for t in topics for p in t["partitions"]]
                if parts and all(len(p["isr"]) == len(p["replicas"]) and p["leader"] >= 0 for p in parts):
                    return
            except Exception:  # a node still starting: ask again
                pass
            finally:
                await admin.close()
            await asyncio.sleep(1)

    async def toxic(self, proxy: str, latency_ms: int) -> None:
        r = await self.http.post(
            f"{self.api}/proxies/{proxy}/toxics",
            json={
                "name": "chaos-latency",
                "type": "latency",
                "stream": "downstream",
                "toxicity": 1.0,
                "attributes": {"latency": latency_ms, "jitter": latency_ms // 4},
            },
        )
        r.raise_for_status()

    async def untoxic(self, proxy: str) -> None:
        (await self.http.delete(f"{self.api}/proxies/{proxy}/toxics/chaos-latency")).raise_for_status()

    async def enable(self, proxy: str, enabled: bool) -> None:
        (await self.http.post(f"{self.api}/proxies/{proxy}", json={"enabled": enabled})).raise_for_status()

    async def apply(self, f: Fault) -> str:
        """Apply the fault and, for one that lasts, take it away after its time."""
        if f.kind == "kill":
            return await self.kill(f.target)
        if f.kind == "kafka-kill":
            await self.kafka_whole()
            name = f.target
            if name == "active controller":
                name = kafka.node_name(self.s, await asyncio.to_thread(kafka.active_controller, self.s))
            return await self.kill(name) + (" (the active controller)" if f.target == "active controller" else "")
        if f.kind == "pg-restart":
            await asyncio.to_thread(postgres.stop, self.s)
            await asyncio.to_thread(postgres.start, self.s)
            return "PostgreSQL stopped and started again"
        if f.kind == "latency":
            await self.toxic(f.target, f.amount)
            await asyncio.sleep(f.seconds)
            await self.untoxic(f.target)
            return f"{f.amount} ms latency to {f.target} for {f.seconds} s"
        if f.kind in ("drop", "kafka-cut"):
            if f.target.startswith("kafka"):
                await self.kafka_whole()
            await self.enable(f.target, False)
            await asyncio.sleep(f.seconds)
            await self.enable(f.target, True)
            return f"{f.target} unreachable for {f.seconds} s"
        if f.kind == "duplicate":
            n = await duplicate(self.s, f.seconds)
            return f"{n} events delivered a second time"
        raise ValueError(f.kind)


async def duplicate(settings: Settings, seconds: float) -> int:
    """Copy every record published on the saga topic (and, in orchestration mode, the commands topic)
    during `seconds` (same partition, key, value and headers): each is delivered twice."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: PLC0415

    bootstrap = settings.kafka_bootstrap_direct
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    copied = 0
    try:
        topics = (settings.topic, settings.commands_topic)
        parts = [TopicPartition(t, p) for t in topics for p in range(settings.topic_partitions)]
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        for tp in parts:  # fix the starting point now: only what is published from here on is copied
            await consumer.position(tp)
        end = time.monotonic() + seconds
        sends = []
        while (left := end - time.monotonic()) > 0:
            batches = await consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for tp, records in batches.items():
                for r in records:
                    headers = list(r.headers or ())
                    if any(k == COPY_HEADER for k, _ in headers):
                        continue
                    headers.append((COPY_HEADER, b"1"))
                    sends.append(
                        await producer.send(tp.topic, r.value, key=r.key, partition=tp.partition, headers=headers)
                    )
                    copied += 1
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
        await consumer.stop()
    return copied


# ---- the load ------------------------------------------------------------------------------------


@dataclass
class Shop:
    base: str
    tokens: list[str] = field(default_factory=list)
    plenty: str = ""
    scarce: str = ""


async def _call(http: httpx.AsyncClient, url: str, body: dict[str, Any], want: int, **kw: Any) -> dict[str, Any]:
    """A set-up call, retried while the answer is a 5xx (argon2 keeps Auth busy on 2 cores, and its
    health check can fail meanwhile)."""
    for attempt in range(8):
        r = await http.post(url, json=body, **kw)
        if r.status_code < 500:
            break
        await asyncio.sleep(0.5 * 2 ** min(attempt, 4))
    if r.status_code != want:
        raise RuntimeError(f"POST {r.request.url.path}: {r.status_code} {r.text[:300]}")
    return r.json()


async def set_up_shop(settings: Settings, http: httpx.AsyncClient, orders: int, users: int, tag: str) -> Shop:
    """Two products (one that runs out: compensations), users who can pay and some who cannot."""
    shop = Shop(f"http://127.0.0.1:{settings.gateway_port}")
    admin = await _call(
        http,
        f"{shop.base}/api/auth/token",
        {"email": settings.admin_email, "password": settings.effective_admin_password},
        200,
    )
    auth = {"Authorization": f"Bearer {admin['accessToken']}"}
    for attr, stock, price in (("plenty", orders * 4, 1.0), ("scarce", max(5, orders // 25), 3.0)):
        pid = f"chaos-{tag}-{attr}"
        await _call(
            http,
            f"{shop.base}/api/admin/products",
            {"productId": pid, "name": pid, "type": "test", "price": price, "availableCount": stock},
            201,
            headers=auth,
        )
        setattr(shop, attr, pid)

    async def one(i: int) -> str:
        email = f"chaos-{tag}-{i}@example.com"
        body = {"email": email, "password": "chaos-password", "name": f"Chaos {i}"}
        await _call(http, f"{shop.base}/api/auth/register", body, 201)
        tok = await _call(http, f"{shop.base}/api/auth/token", body, 200)
        token = tok["accessToken"]
        amount = 5 if i % 10 == 9 else 10000  # one in ten runs out of money
        bearer = {"Authorization": f"Bearer {token}"}
        await _call(http, f"{shop.base}/api/wallet/deposits", {"amount": amount}, 201, headers=bearer)
        return token

    sem = asyncio.Semaphore(2)

    async def bounded(i: int) -> str:
        async with sem:
            return await one(i)

    shop.tokens = list(await asyncio.gather(*(bounded(i) for i in range(users))))
    return shop


@dataclass
class LoadResult:
    codes: Counter = field(default_factory=Counter)
    late: int = 0  # requests sent later than their time (the load could not keep its rate)
    retried: int = 0
    sent: list[tuple[float, str]] = field(default_factory=list)  # (wall time sent, final answer)


async def run_load(shop: Shop, http: httpx.AsyncClient, orders: int, seconds: float, tag: str) -> LoadResult:
    """Open loop: order i is sent at i * seconds / orders, whether the earlier ones are answered or
    not. A 5xx or a broken connection is retried (up to 3 times, same Idempotency-Key), as a client
    would; the final answer is counted."""
    res = LoadResult()
    sem = asyncio.Semaphore(MAX_IN_FLIGHT)
    interval = seconds / orders
    t0 = time.monotonic()

    async def place(i: int) -> None:
        token = shop.tokens[i % len(shop.tokens)]
        body = {
            "productId": shop.scarce if i % 10 == 3 else shop.plenty,
            "productQuantity": 1 + i % 3,
            "paymentType": "WALLET",
        }
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": f"chaos-{tag}-{i}"}
        code, sent_at = "error", time.time()
        async with sem:
            for attempt in range(4):
                if attempt:
                    res.retried += 1
                    await asyncio.sleep(0.5 * 2 ** (attempt - 1))
                try:
                    r = await http.post(f"{shop.base}/api/orders", json=body, headers=headers)
                    code = str(r.status_code)
                    if r.status_code < 500:
                        break
                except httpx.HTTPError as e:
                    code = type(e).__name__
        res.codes[code] += 1
        res.sent.append((sent_at, code))

    tasks = []
    for i in range(orders):
        delay = t0 + i * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -1:
            res.late += 1
        tasks.append(asyncio.create_task(place(i)))
    await asyncio.gather(*tasks)
    return res


# ---- the report ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


async def saga_durations(settings: Settings, since: float) -> list[tuple[float, float, str, str | None]]:
    """(created, seconds to the end of the saga, status, fail reason) of the orders created since."""
    conn = await asyncpg.connect(superuser_dsns(settings)("order"))
    try:
        rows = await conn.fetch(
            "SELECT extract(epoch FROM o.created_at)::float8 AS created, o.order_status, o.fail_reason,"
            " extract(epoch FROM min(h.at) FILTER (WHERE h.order_status = ANY($2)))::float8 AS ended"
            " FROM orders o LEFT JOIN order_history h ON h.order_id = o.order_id"
            " WHERE o.created_at >= to_timestamp($1) GROUP BY o.order_id",
            since,
            list(AT_REST),
        )
    finally:
        await conn.close()
    return [
        (r["created"], (r["ended"] - r["created"]) if r["ended"] else float("nan"), r["order_status"], r["fail_reason"])
        for r in rows
    ]


def window_table(
    ran: list[tuple[Fault, float, str]],
    sagas: list[tuple[float, float, str, str | None]],
    sent: list[tuple[float, str]],
    t0: float,
) -> list[tuple[str, float, int, int, list[float]]]:
    """Per fault window (from its fault's start to the next fault's): its label, start, orders sent,
    orders refused (final answer not 202, or none), and the durations of the sagas begun in it."""
    starts = [(t0, "no fault yet (baseline)")] + [(at, f.describe()) for f, at, _ in ran]
    rows = []
    for i, (start, label) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else float("inf")
        ds = [d for c, d, _, _ in sagas if start <= c < end and not math.isnan(d)]
        mine = [code for at, code in sent if start <= at < end]
        rows.append((label, start - t0, len(mine), sum(1 for c in mine if c != "202"), ds))
    return rows


def render(
    schedule_ran: list[tuple[Fault, float, str]],
    load: LoadResult,
    sagas: list[tuple[float, float, str, str | None]],
    t0: float,
) -> str:
    lines = ["", "Faults as they ran:"]
    for f, at, outcome in schedule_ran:
        lines.append(f"  t+{at - t0:6.1f} s  {f.describe():<60} {outcome}")
    answers = ", ".join(f"{k}: {v}" for k, v in sorted(load.codes.items()))
    lines += ["", f"Requests (final answer after retries): {answers}"]
    lines.append(f"  retried {load.retried}, sent late {load.late}")
    outcomes = Counter(st + (f"/{fr}" if fr else "") for _, _, st, fr in sagas)
    by_outcome = ", ".join(f"{k} {v}" for k, v in outcomes.most_common())
    lines += ["", f"Orders created: {len(sagas)}; by outcome: {by_outcome}"]
    lines += ["", "By fault window: orders sent, refused (after retries), saga durations (accepted -> at rest) in ms:"]
    lines.append(f"  {'window':<60}{'start':>7}{'sent':>6}{'refused':>8}{'sagas':>7}{'p50':>8}{'p99':>8}{'max':>8}")
    for label, start, n_sent, refused, ds in window_table(schedule_ran, sagas, load.sent, t0):
        stats = (
            f"{percentile(ds, 0.5) * 1000:>8.0f}{percentile(ds, 0.99) * 1000:>8.0f}{max(ds) * 1000:>8.0f}"
            if ds
            else f"{'-':>8}{'-':>8}{'-':>8}"
        )
        lines.append(f"  {label[:59]:<60}{start:>6.0f}s{n_sent:>6}{refused:>8}{len(ds):>7}{stats}")
    every = [d for _, d, _, _ in sagas if not math.isnan(d)]
    if every:
        refused = sum(1 for _, c in load.sent if c != "202")
        lines.append(
            f"  {'all':<60}{'':>7}{len(load.sent):>6}{refused:>8}{len(every):>7}{percentile(every, 0.5) * 1000:>8.0f}"
            f"{percentile(every, 0.99) * 1000:>8.0f}{max(every) * 1000:>8.0f}"
        )
    return "\n".join(lines)


async def run(settings: Settings, seed: int, orders: int, minutes: float, rest_timeout: float) -> int:
    schedule = build_schedule(seed, minutes, settings.kafka_nodes)
    print(f"Chaos: seed {seed}, {orders} orders over {minutes:g} min, {settings.kafka_nodes} Kafka node(s)")
    print("Schedule:\n" + format_schedule(schedule), flush=True)
    tag = f"{seed}-{int(time.time())}"
    injector = Injector(settings)
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        users = max(20, math.ceil(orders / (minutes * 60) / 2))
        shop = await set_up_shop(settings, http, orders, users, tag)
        print(f"Shop ready: {users} users, products {shop.plenty} and {shop.scarce}; load starts", flush=True)
        t0_wall, t0 = time.time(), time.monotonic()
        ran: list[tuple[Fault, float, str]] = []

        async def faults() -> None:
            for f in schedule:
                delay = t0 + f.at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                down = await injector.stack_whole()
                started = time.time()
                try:
                    outcome = await injector.apply(f)
                except Exception as e:  # a fault that could not be made is reported, not hidden
                    outcome = f"NOT APPLIED: {type(e).__name__}: {e}"
                if down:
                    outcome += f" (while still down from before: {', '.join(down)})"
                ran.append((f, started, outcome))
                print(f"  t+{started - t0_wall:6.1f} s  {f.describe()}: {outcome}", flush=True)

        fault_task = asyncio.create_task(faults())
        load = await run_load(shop, http, orders, minutes * 60 * 0.9, tag)
        await fault_task
    await injector.http.aclose()
    print(f"Load done ({sum(load.codes.values())} requests); waiting for the stack to be at rest ...", flush=True)
    left = await wait_at_rest(settings, rest_timeout)
    report = await audit(settings)
    sagas = await saga_durations(settings, t0_wall - 1)
    print(render(ran, load, sagas, t0_wall))
    print("")
    if any(left.values()):
        print(f"NOT AT REST after {rest_timeout:.0f} s: {left}")
    print(report.render())
    not_at_rest = sum(1 for _, _, st, _ in sagas if st not in AT_REST)
    failed_faults = sum(1 for _, _, o in ran if o.startswith("NOT APPLIED"))
    print(
        f"\nviolations: {len(report.violations)}; orders not at rest: {not_at_rest};"
        f" faults not applied: {failed_faults}"
    )
    return 0 if report.ok and not not_at_rest and not any(left.values()) and not failed_faults else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tiny-saga chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--orders", type=int, default=300)
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--rest-timeout", type=float, default=300.0, help="seconds to wait for the stack to be at rest")
    p.add_argument("--schedule-only", action="store_true", help="print the schedule of the seed and exit")
    args = p.parse_args(argv)
    if args.orders < 1 or args.orders > 100_000 or not 0.5 <= args.minutes <= 120:
        p.error("--orders must be 1..100000 and --minutes 0.5..120")
    # the report is the output: a client's reconnect warnings while a node is down are expected
    logging.basicConfig(level=logging.ERROR, format="  (%(name)s) %(message)s")
    s = get_settings()
    if args.schedule_only:
        print(format_schedule(build_schedule(args.seed, args.minutes, s.kafka_nodes)))
        return 0
    if not s.fault_proxy:
        p.error("chaos runs on a stack with TINYSAGA_FAULT_PROXY=1 (`tiny-saga chaos` starts one)")
    return asyncio.run(run(s, args.seed, args.orders, args.minutes, args.rest_timeout))


if __name__ == "__main__":
    sys.exit(main())
