"""`./tiny-saga bench`: the saga under an open-loop load, on a stack of its own.

It starts its own stack (state in .tinysaga/bench-stack, gateway on 28080, rate limits raised and
said so in the report), measures the idle CPU of the whole stack, registers users, then offers
orders through the gateway at a constant arrival rate (open loop: a request is sent at its time
whether or not earlier ones are done, so a stall shows up as latency instead of being hidden),
waits for every saga to end, and reports, per phase:
- completed sagas per second,
- end-to-end latency p50/p95/p99/max from acceptance (INITIATED) to the end (PLACED), taken from
  the order history (database timestamps), not from the HTTP response,
- total CPU milliseconds per completed saga, summed over every process of the stack,
- the peak RSS of each process, and the backlog (sagas in flight) during and after the phase.
Results: bench/results/report.md, report.json and PNG plots.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import resource
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
import uvloop
from hdrh.histogram import HdrHistogram

from bench import fanout, stretches
from bench.client import BadAnswer, Client, prepare

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
OVERLOADED = "urn:tinysaga:problem:overloaded"
OVERLOAD = "overload"  # the phase offered twice the best rate kept up
RAISED_LIMITS = {
    "TINYSAGA_RATE_USER_PER_10S": "1000000",
    "TINYSAGA_RATE_IP_PER_10S": "1000000",
    "TINYSAGA_RATE_AUTH_PER_MIN": "1000000",
}
BENCH_ENV = {
    "TINYSAGA_HOME": str(REPO / ".tinysaga" / "bench-stack"),
    "TINYSAGA_GATEWAY_PORT": "28080",
    "TINYSAGA_KAFKA_PORT": "29092",
    "TINYSAGA_KAFKA_CONTROLLER_PORT": "29093",
    "TINYSAGA_PG_PORT": "25544",
    "TINYSAGA_SERVICE_PORT_BASE": "28100",
    "TINYSAGA_LOG_LEVEL": "WARNING",
    "TINYSAGA_OTLP_ENDPOINT": "",  # the product as it runs by default: tracing off (ADR 42)
    **RAISED_LIMITS,
}


# ---- the stack's processes -------------------------------------------------------------------------


class Processes:
    """Every process of the bench stack, by name: supervisor children (and their children), and
    PostgreSQL (the postmaster and its backends, summed as 'postgres')."""

    def __init__(self, settings: Any) -> None:
        self.s = settings

    def named(self) -> dict[str, list[psutil.Process]]:
        """Each name's processes, the tree's root first."""
        out: dict[str, list[psutil.Process]] = {}
        for name, pids in self.trees(proc_table()).items():
            procs = []
            for pid in pids:
                try:
                    procs.append(psutil.Process(pid))
                except psutil.NoSuchProcess:
                    pass
            if procs:
                out[name] = procs
        return out

    def rss_by_name(self) -> dict[str, int]:
        """Each name's RSS in bytes, the sum over its processes, from one pass over /proc."""
        table = proc_table()
        return {name: sum(table[pid][1] for pid in pids) for name, pids in self.trees(table).items()}

    def trees(self, table: dict[int, tuple[int, int]]) -> dict[str, list[int]]:
        """Each name's process ids (its root first, then its descendants), from the parent of each
        process on the machine in a `proc_table` (others' included: the host is shared). One pass
        over the machine's processes, then each tree from it: asking psutil for each process's
        children scans them all again, each time, and that was most of the load generator's CPU."""
        kids: dict[int, list[int]] = {}
        for pid, (ppid, _) in table.items():
            kids.setdefault(ppid, []).append(pid)

        def tree(pid: int) -> list[int]:
            out, todo = [], [pid]
            while todo:
                q = todo.pop()
                if q in table:
                    out.append(q)
                    todo += kids.get(q, [])
            return out

        out: dict[str, list[int]] = {}
        state = json.loads((self.s.run_dir / "state.json").read_text())
        for name, c in state["children"].items():
            if c.get("pid") and c["pid"] in table:
                out[name] = tree(c["pid"])
        sup = state.get("supervisor")
        if sup and sup in table:
            out["supervisor"] = [sup]
        from tinysaga.infra import postgres

        pm = postgres.pid(self.s)
        if pm and pm in table:
            out["postgres"] = tree(pm)
        return out

    def cpu_by_name(self) -> dict[str, float]:
        """CPU seconds so far of each name's processes. A tree's root adds what its children that
        ended had used (the kernel adds it to the parent that waits for them): without it the sum
        of PostgreSQL's backends fell when one exited, and a fall reads as a restart (`cpu_delta`),
        so a phase or an idle window counted every backend's CPU since the start. The supervisor
        stands alone, without its children's: its children are the other names."""
        out: dict[str, float] = {}
        for name, procs in self.named().items():
            for i, p in enumerate(procs):
                seconds = _cpu_seconds(p, ended_children=i == 0 and name != "supervisor")
                if seconds is not None:
                    out[name] = out.get(name, 0.0) + seconds
        return out

    def cpu_seconds(self) -> float:
        return sum(self.cpu_by_name().values())


def proc_table() -> dict[int, tuple[int, int]]:
    """Every process on the machine: pid -> (its parent's pid, its RSS in bytes), from one read of
    /proc/PID/stat each (psutil reads more files per process: about six times the CPU per pass)."""
    page = os.sysconf("SC_PAGE_SIZE")
    out: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # it ended meanwhile
            continue
        # after the command name, in parentheses (which may hold spaces and parentheses itself):
        # state, ppid, ... rss is the 24th field of the line, the 22nd after the name
        fields = stat[stat.rindex(b")") + 2 :].split()
        out[int(entry)] = (int(fields[1]), int(fields[21]) * page)
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per process name between two samples (a restarted process counts from zero)."""
    return {k: v - before.get(k, 0.0) if v >= before.get(k, 0.0) else v for k, v in after.items()}


def steal_seconds() -> float:
    """CPU time the hypervisor gave to others while this VM wanted it (the `steal` column of
    /proc/stat): a noisy host shows here, not in the stack's own CPU figures."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


async def measure_idle(procs: Processes, seconds: float) -> dict[str, Any]:
    c0 = procs.cpu_by_name()
    await asyncio.sleep(seconds)
    d = cpu_delta(c0, procs.cpu_by_name())
    return {
        "percentOfOneCore": round(sum(d.values()) / seconds * 100, 2),
        "seconds": seconds,
        "byProcess": {k: round(v / seconds * 100, 2) for k, v in sorted(d.items(), key=lambda kv: -kv[1])},
    }


def generator_cpu_seconds() -> float:
    """CPU of this process (the load generator, its RSS sampler and its readings of the stack)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class StackCounters:
    """Cumulative counters of the stack, read at each end of a phase (their differences are the
    phase's): PostgreSQL's transactions committed per database (pg_stat_database.xact_commit, reads
    included), the write transactions (transaction ids assigned, cluster-wide), its WAL
    (pg_stat_wal: records, bytes, writes, syncs); the broker's requests by API (its RequestMetrics,
    read by deploy/kafka/BrokerRequests.java attached to its JVM); and the messages on each topic
    (the sum of its partitions' end offsets)."""

    def __init__(self, settings: Any) -> None:
        self.s = settings
        self.pg: asyncpg.Connection | None = None
        self.probe: asyncio.subprocess.Process | None = None
        self.consumer: Any = None
        self.partitions: list[Any] = []

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        from tinysaga.infra import kafka
        from tinysaga.platform.secrets import superuser_dsn

        self.pg = await asyncpg.connect(superuser_dsn(self.s, "postgres"))
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.s.kafka_bootstrap_direct)
        await self.consumer.start()
        admin = AIOKafkaAdminClient(bootstrap_servers=self.s.kafka_bootstrap_direct)
        await admin.start()
        try:
            topics = [t for t in await admin.list_topics() if not t.startswith("__")]
            self.partitions = [
                TopicPartition(d["topic"], p["partition"])
                for d in await admin.describe_topics(topics)
                for p in d["partitions"]
            ]
        finally:
            await admin.close()
        broker = json.loads((self.s.run_dir / "state.json").read_text())["children"][kafka.node_name(self.s, 1)]
        self.probe = await asyncio.create_subprocess_exec(
            "java",
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "-cp",
            f"{kafka.libs_dir(self.s)}/*",
            str(REPO / "deploy" / "kafka" / "BrokerRequests.java"),
            str(broker["pid"]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.probe.stdout is not None
        ready = await asyncio.wait_for(self.probe.stdout.readline(), 60)
        if ready.strip() != b"ready":
            raise RuntimeError(f"the broker's request counts cannot be read: {ready!r}")

    async def _broker_requests(self) -> dict[str, float]:
        assert self.probe and self.probe.stdin and self.probe.stdout
        self.probe.stdin.write(b"\n")
        await self.probe.stdin.drain()
        line = (await asyncio.wait_for(self.probe.stdout.readline(), 30)).decode().split()
        return {k: float(v) for k, v in (kv.split("=", 1) for kv in line)}

    async def _topic_messages(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for tp, end in (await self.consumer.end_offsets(self.partitions)).items():
            out[tp.topic] = out.get(tp.topic, 0.0) + end
        return out

    async def offsets(self) -> dict[Any, int]:
        """Where each partition of the stack's topics ends now."""
        return dict(await self.consumer.end_offsets(self.partitions))

    async def sent_between(self, start: dict[Any, int], end: dict[Any, int]) -> list[stretches.Sent]:
        """The records written between two readings of `offsets`: the order each is about (its key),
        its event (the eventName header), when its producer sent it."""
        wanted = {tp: (start.get(tp, 0), stop) for tp, stop in end.items() if stop > start.get(tp, 0)}
        out: list[stretches.Sent] = []
        if not wanted:
            return out
        self.consumer.assign(list(wanted))
        for tp, (first, _) in wanted.items():
            self.consumer.seek(tp, first)
        left = set(wanted)
        while left:
            for tp, records in (await self.consumer.getmany(*left, timeout_ms=5000)).items():
                for r in records:
                    if r.offset >= wanted[tp][1] or r.key is None:
                        continue
                    name = dict(r.headers or ()).get("eventName", b"?").decode("utf-8", "replace")
                    out.append(stretches.Sent(r.key.decode("utf-8", "replace"), name, float(r.timestamp)))
                if records and records[-1].offset + 1 >= wanted[tp][1]:
                    left.discard(tp)
        self.consumer.unsubscribe()
        return out

    async def read(self) -> dict[str, dict[str, float]]:
        assert self.pg is not None
        commits = {
            r["datname"].removeprefix("tinysaga_"): float(r["xact_commit"])
            for r in await self.pg.fetch(
                "SELECT datname, xact_commit FROM pg_stat_database WHERE datname LIKE 'tinysaga_%'"
            )
        }
        wal = dict(
            await self.pg.fetchrow(
                "SELECT wal_records::float8 AS records, wal_bytes::float8 AS bytes, wal_write::float8 AS writes,"
                " wal_sync::float8 AS syncs, pg_snapshot_xmax(pg_current_snapshot())::text::float8"
                " AS write_transactions FROM pg_stat_wal"
            )
        )
        return {
            "commits": commits,
            "wal": wal,
            "kafkaRequests": await self._broker_requests(),
            "topicMessages": await self._topic_messages(),
        }

    async def close(self) -> None:
        if self.probe is not None and self.probe.stdin is not None:
            self.probe.stdin.close()
            await self.probe.wait()
        if self.consumer is not None:
            await self.consumer.stop()
        if self.pg is not None:
            await self.pg.close()


def counters_delta(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, Any]:
    return {group: {k: v - before[group].get(k, 0.0) for k, v in vals.items()} for group, vals in after.items()}


# ---- the services' garbage collection (ADR 60) ----------------------------------------------------


def gc_reading(text: str) -> dict[str, dict[str, Any]]:
    """A service's collections so far, from its /metrics (`tinysaga_gc_pause_seconds`): by
    generation, how many, their seconds, and the histogram's cumulative counts by upper bound."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "tinysaga_gc_pause_seconds":
            continue
        for sample in family.samples:
            gen = out.setdefault(sample.labels["generation"], {"count": 0.0, "seconds": 0.0, "buckets": {}})
            if sample.name.endswith("_count"):
                gen["count"] = sample.value
            elif sample.name.endswith("_sum"):
                gen["seconds"] = sample.value
            elif sample.name.endswith("_bucket"):
                gen["buckets"][sample.labels["le"]] = sample.value
    return out


async def read_gc(http: aiohttp.ClientSession, settings: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """Each service process's `gc_reading`, by process name (one that does not answer is left out)."""
    state = json.loads((settings.run_dir / "state.json").read_text())
    out = {}
    for name, child in state["children"].items():
        health = child.get("health") or ""
        if not health.endswith("/health/ready"):  # not a service with /metrics
            continue
        try:
            async with http.get(health.removesuffix("/health/ready") + "/metrics") as r:
                out[name] = gc_reading(await r.text())
        except (aiohttp.ClientError, TimeoutError):
            continue
    return out


def gc_during(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """By process, the collections between two readings: full ones (generation 2) and young ones
    (0 and 1), how many and their ms, and the longest full one as the least histogram bound that
    holds them all (None when there was none)."""
    out = {}
    for name, gens in sorted(after.items()):
        prior = before.get(name, {})

        def grew(gen: str, key: str, gens: dict[str, Any] = gens, prior: dict[str, Any] = prior) -> float:
            return gens.get(gen, {}).get(key, 0.0) - prior.get(gen, {}).get(key, 0.0)

        full = grew("2", "count")
        longest = None
        if full > 0:
            buckets = gens["2"]["buckets"]
            was = prior.get("2", {}).get("buckets", {})
            bounds = sorted((float(le), n - was.get(le, 0.0)) for le, n in buckets.items())
            longest = next((b * 1000 for b, n in bounds if n >= full), None)
        out[name] = {
            "full": round(full),
            "fullMs": round(grew("2", "seconds") * 1000, 1),
            "longestFullMsAtMost": longest,
            "young": round(grew("0", "count") + grew("1", "count")),
            "youngMs": round((grew("0", "seconds") + grew("1", "seconds")) * 1000, 1),
        }
    return out


def _at_most(ms: float | None) -> str:
    return "-" if ms is None else "over 500" if ms == float("inf") else f"{ms:g}"


def gc_lines(gc: dict[str, dict[str, Any]]) -> list[str]:
    if not gc:
        return []
    return [
        "## Garbage collection in the services during the load",
        "",
        "Each service process's cyclic collections from the first measured phase to the end of the last"
        " (`tinysaga_gc_pause_seconds`, ADR 60): while one runs, the process answers nothing. What a service"
        " built to start is frozen out of the collector's reach, so a full collection looks only at what"
        " was made since.",
        "",
        "| process | full collections | their ms | longest full (ms, at most) | young collections | their ms |",
        "|---|---|---|---|---|---|",
        *[
            f"| {k} | {v['full']} | {v['fullMs']} | {_at_most(v['longestFullMsAtMost'])}"
            f" | {v['young']} | {v['youngMs']} |"
            for k, v in gc.items()
        ],
        "",
    ]


# PostgreSQL's backends report their counters when they go idle, at most once a second, and an idle
# one at the latest 10 s later: the pause between phases lets the last ones in before the reading.
STATS_SETTLE_SECONDS = 11


@dataclass
class RssSampler:
    procs: Processes
    peak: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for name, rss in self.procs.rss_by_name().items():
                    self.peak[name] = max(self.peak.get(name, 0.0), rss / 2**20)
            except (OSError, ValueError):
                pass
            time.sleep(0.5)


# ---- load ------------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    rate: float
    seconds: float
    accepted: list[tuple[str, float]] = field(default_factory=list)  # (orderId, wall time)
    errors: dict[str, int] = field(default_factory=dict)
    turned_away: int = 0  # answered 503 overloaded: the bound on sagas in flight (ADR 50) or the wait (ADR 52)
    turned_away_by: dict[str, int] = field(default_factory=dict)  # by the limit the answer names
    dropped: int = 0
    late_ms: list[float] = field(default_factory=list)
    backlog: list[int] = field(default_factory=list)
    cpu_s: float = 0.0
    cpu_by: dict[str, float] = field(default_factory=dict)
    steal_s: float = 0.0
    generator_cpu_s: float = 0.0
    wall_s: float = 0.0  # from the first offer until every saga had ended (the CPU's window)
    counters: dict[str, Any] = field(default_factory=dict)
    bench_queries: int = 0  # the bench's own transactions on Order's database (backlog, waiting)
    drain_s: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)


async def _post_until_served(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    """POST, again while the gateway answers 503 (no server up: on a busy machine a service can
    miss its health checks for a while); at most 30 times, 0.5 s apart."""
    for _ in range(30):
        async with http.post(url, json=body) as r:
            if r.status != 503:
                return r.status, await r.json()
        await asyncio.sleep(0.5)
    raise RuntimeError(f"{url}: still 503 after 30 tries")


async def register_users(http: aiohttp.ClientSession, base: str, n: int) -> list[str]:
    async def one(i: int) -> str:
        email, pw = f"bench-{uuid.uuid4().hex[:10]}@example.com", "bench-password"
        status, body = await _post_until_served(
            http, f"{base}/api/auth/register", {"email": email, "password": pw, "name": f"B{i}"}
        )
        assert status == 201, body
        status, body = await _post_until_served(http, f"{base}/api/auth/token", {"email": email, "password": pw})
        assert status == 200, body
        token = body["accessToken"]
        async with http.post(
            f"{base}/api/wallet/deposits", json={"amount": 10000}, headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status == 201, await r.text()
        return token

    sem = asyncio.Semaphore(8)

    async def limited(i: int) -> str:
        async with sem:
            return await one(i)

    return await asyncio.gather(*(limited(i) for i in range(n)))


def order_requests(client: Client, tokens: list[str], product: str) -> list[bytes]:
    """The load's request, one per user, made once: `offer` sends one of them as it is."""
    body = json.dumps({"productId": product, "productQuantity": 1, "paymentType": "WALLET"}).encode()
    return [
        prepare(
            "POST",
            "/api/orders",
            f"{client.host}:{client.port}",
            {"Authorization": f"Bearer {t}", "Content-Type": "application/json"},
            body,
        )
        for t in tokens
    ]


async def offer(phase: Phase, client: Client, requests: list[bytes], max_inflight: int, pool: asyncpg.Pool) -> None:
    """Open loop: request i is sent at t0 + i/rate, whatever happened to the others."""
    inflight = 0
    n = int(phase.rate * phase.seconds)
    tasks = []

    async def one() -> None:
        nonlocal inflight
        inflight += 1
        try:
            r = await client.send(random.choice(requests))
            if r.status == 202:
                phase.accepted.append((json.loads(r.body)["orderId"], time.time()))
            elif r.status == 503 and (problem := json.loads(r.body or b"{}")).get("type") == OVERLOADED:
                phase.turned_away += 1
                limit = str(problem.get("limit", "unnamed"))
                phase.turned_away_by[limit] = phase.turned_away_by.get(limit, 0) + 1
            else:
                phase.errors[str(r.status)] = phase.errors.get(str(r.status), 0) + 1
        except (OSError, EOFError, BadAnswer, ValueError, TimeoutError) as e:
            phase.errors[type(e).__name__] = phase.errors.get(type(e).__name__, 0) + 1
        finally:
            inflight -= 1

    async def watch_backlog() -> None:
        while True:
            phase.bench_queries += 1
            phase.backlog.append(
                await pool.fetchval(
                    "SELECT count(*) FROM orders WHERE order_status IN ('INITIATED','PAYMENT_DONE','REFUND_INITIATED')"
                )
            )
            await asyncio.sleep(1)

    watcher = asyncio.create_task(watch_backlog())
    t0 = time.perf_counter()
    for i in range(n):
        due = t0 + i / phase.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        phase.late_ms.append(max(0.0, -delay) * 1000)
        if inflight >= max_inflight:
            phase.dropped += 1
            continue
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    watcher.cancel()


async def wait_ended(pool: asyncpg.Pool, phase: Phase, timeout: float) -> float:
    ids = [o for o, _ in phase.accepted]
    t = time.perf_counter()
    while time.perf_counter() - t < timeout:
        phase.bench_queries += 1
        left = await pool.fetchval(
            "SELECT count(*) FROM orders WHERE order_id = ANY($1::uuid[]) AND order_status NOT IN ('PLACED','FAILED')",
            ids,
        )
        if left == 0:
            break
        await asyncio.sleep(0.2)
    return time.perf_counter() - t


async def measure(pool: asyncpg.Pool, phase: Phase, sent: list[stretches.Sent] | None = None) -> None:
    ids = [o for o, _ in phase.accepted]
    rows = await pool.fetch(
        "SELECT o.order_id, o.order_status, min(h.at) AS start, max(h.at) AS stop FROM orders o"
        " JOIN order_history h USING (order_id) WHERE o.order_id = ANY($1::uuid[]) GROUP BY 1, 2",
        ids,
    )
    hist = HdrHistogram(1, 600_000_000, 3)  # microseconds, up to 10 minutes
    ended = [r for r in rows if r["order_status"] in ("PLACED", "FAILED")]
    placed = [r for r in rows if r["order_status"] == "PLACED"]
    for r in placed:
        hist.record_value(max(1, int((r["stop"] - r["start"]).total_seconds() * 1000 * 1000)))
    span = 0.0
    if ended:
        span = (max(r["stop"] for r in ended) - min(r["start"] for r in ended)).total_seconds()

    def ms(p: float) -> float:
        return round(hist.get_value_at_percentile(p) / 1000, 1) if placed else float("nan")

    def epoch_ms(r: asyncpg.Record) -> tuple[float, float]:
        return r["start"].timestamp() * 1000, r["stop"].timestamp() * 1000

    phase.result = {
        "offeredRate": phase.rate,
        "seconds": phase.seconds,
        "offered": int(phase.rate * phase.seconds),
        "accepted": len(phase.accepted),
        "errors": phase.errors,
        "droppedByGenerator": phase.dropped,
        "ended": len(ended),
        "placed": len(placed),
        "notEnded": len(rows) - len(ended),
        "completedPerSecond": round(len(ended) / span, 1) if span else 0.0,
        "latencyMs": {
            "p50": ms(50),
            "p95": ms(95),
            "p99": ms(99),
            "max": round(hist.get_max_value() / 1000, 1) if placed else float("nan"),
        },
        "cpuMsPerSaga": round(phase.cpu_s * 1000 / len(ended), 1) if ended else None,
        "cpuMsPerSagaByProcess": {
            k: round(v * 1000 / len(ended), 2) for k, v in sorted(phase.cpu_by.items(), key=lambda kv: -kv[1])
        }
        if ended
        else {},
        "cpuCoresBusy": round(phase.cpu_s / phase.wall_s, 2) if phase.wall_s else None,
        "hostStealCores": round(phase.steal_s / phase.wall_s, 3) if phase.wall_s else None,
        "drainSeconds": round(phase.drain_s, 1),
        "backlogMax": max(phase.backlog or [0]),
        "backlogLast": (phase.backlog or [0])[-1],
        "backlogEachSecond": phase.backlog,
        "generatorLateP99Ms": round(sorted(phase.late_ms)[int(len(phase.late_ms) * 0.99) - 1], 1)
        if phase.late_ms
        else 0.0,
        "turnedAway": phase.turned_away,
        "turnedAwayBy": dict(sorted(phase.turned_away_by.items())),
        "generatorCpuMsPerSaga": round(phase.generator_cpu_s * 1000 / len(ended), 2) if ended else None,
        "generatorCores": round(phase.generator_cpu_s / phase.wall_s, 3) if phase.wall_s else None,
        "perSaga": per_saga(phase, len(ended)) if ended and phase.counters else {},
        "stretchesMs": stretches.stretches({str(r["order_id"]): epoch_ms(r) for r in placed}, sent) if sent else {},
    }


# The broker's breakdown of its Fetch requests into consumers' and followers' (already in Fetch).
FETCH_BREAKDOWN = ("FetchConsumer", "FetchFollower")


def per_saga(phase: Phase, n: int) -> dict[str, Any]:
    """The phase's counters divided by its sagas ended (the bench's own reads of Order's database
    taken out of its commits)."""
    c = phase.counters
    commits = dict(c["commits"])
    commits["order"] = commits.get("order", 0.0) - phase.bench_queries

    requests = {k: v for k, v in c["kafkaRequests"].items() if k not in FETCH_BREAKDOWN}

    def each(d: dict[str, float]) -> dict[str, float]:
        return {k: round(v / n, 2) for k, v in sorted(d.items(), key=lambda kv: -kv[1]) if v > 0}

    return {
        "commits": round(sum(commits.values()) / n, 2),
        "commitsByDatabase": each(commits),
        "writeTransactions": round(c["wal"]["write_transactions"] / n, 2),
        "walSyncs": round(c["wal"]["syncs"] / n, 2),
        "walWrites": round(c["wal"]["writes"] / n, 2),
        "walKiB": round(c["wal"]["bytes"] / 1024 / n, 2),
        "kafkaRequests": round(sum(requests.values()) / n, 2),
        "kafkaRequestsByApi": each(requests),
        "messages": round(sum(c["topicMessages"].values()) / n, 2),
        "messagesByTopic": each(c["topicMessages"]),
    }


# ---- report ----------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    try:
        model = next(
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {
        "cpus": os.cpu_count(),
        "memoryGiB": round(psutil.virtual_memory().total / 2**30, 1),
        "cpuModel": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def _reference_work() -> int:
    """A fixed piece of interpreter work of the kind the services spend their CPU on (dict lookups,
    string formatting, small integers, calls)."""
    seen: dict[str, int] = {}
    acc = 0
    for i in range(100_000):
        key = f"order-{i % 512}"
        seen[key] = seen.get(key, 0) + i
        acc ^= len(key) + (i & 0xFF)
    return acc + len(seen)


def host_speed(rounds: int = 5) -> float:
    """How fast this host runs Python now, in ms: the least CPU time of `rounds` runs of the same
    reference loop. The machines of one kind differ (the same services' code measured 71.5 ms of CPU
    per saga at 5/s one morning and 45.1 that afternoon on another, ADR 59), and a neighbour can slow
    one down for a while; CPU time leaves out the time the hypervisor gave to others (that is the
    steal column), so this is the speed of a CPU second here. Lower is faster."""
    best = float("inf")
    for _ in range(rounds):
        t = time.process_time()
        _reference_work()
        best = min(best, time.process_time() - t)
    return round(best * 1000, 1)


def kept_up(phase: dict[str, Any]) -> bool:
    """A load step counts only if it kept up: nearly all it was offered completed within the step
    (so few or none were turned away), and what was left drained at once (a growing backlog shows
    as a slower rate and a long drain). The overload phase never counts."""
    return (
        phase["name"] != OVERLOAD
        and phase["notEnded"] == 0
        and phase["drainSeconds"] < 2
        and phase["completedPerSecond"] >= 0.95 * phase["offeredRate"]
    )


def best_kept_up(phases: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The step with the best completed rate among those that kept up (None: none did)."""
    return max((p for p in phases if kept_up(p)), key=lambda p: p["completedPerSecond"], default=None)


def verdicts(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    phases = report["phases"]
    best = best_kept_up(phases[1:])
    sat = best["completedPerSecond"] if best else 0.0
    py = {
        k: v
        for k, v in report["peakRssMb"].items()
        if k not in ("postgres", "gateway", "supervisor") and not k.startswith("kafka")
    }
    worst_py = max(py.values()) if py else 0.0
    idle = report["idleCpuPercentOfOneCore"]

    def v(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    def at(rate: float) -> dict[str, Any] | None:
        return next((p for p in phases[1:] if p["offeredRate"] == rate and p["name"] != OVERLOAD), None)

    out = []
    light = phases[0]
    out.append(("CPU per saga ≤ 20 ms at light load", f"{light['cpuMsPerSaga']} ms", v(light["cpuMsPerSaga"] <= 20)))
    if (p := at(40)) is not None:
        out.append(("p99 ≤ 50 ms at 40/s", f"{p['latencyMs']['p99']} ms", v(p["latencyMs"]["p99"] <= 50)))
    if (p := at(150)) is not None:
        lat = p["latencyMs"]
        out.append(
            (
                "p99 ≤ 100 ms and p50 ≤ 40 ms at 150/s",
                f"p99 {lat['p99']} ms, p50 {lat['p50']} ms",
                v(lat["p99"] <= 100 and lat["p50"] <= 40),
            )
        )
        out.append(("CPU per saga ≤ 6 ms at 150/s", f"{p['cpuMsPerSaga']} ms", v((p["cpuMsPerSaga"] or 99) <= 6)))
    out.append(
        (
            "≥ 300 completed sagas/s keeping up",
            f"{sat} sagas/s" + (f" (offered {best['offeredRate']}/s)" if best else ""),
            v(sat >= 300),
        )
    )
    over = next((p for p in phases if p["name"] == OVERLOAD), None)
    if over is not None:
        ok = over["completedPerSecond"] >= 0.9 * sat and over["latencyMs"]["p99"] <= 1000
        out.append(
            (
                "offered twice the best rate kept up: ≥ 90 % of it completed, p99 ≤ 1 s for those accepted",
                f"{over['completedPerSecond']} sagas/s ({round(100 * over['completedPerSecond'] / (sat or 1))} %),"
                f" p99 {over['latencyMs']['p99']} ms, {over['turnedAway']} of {over['offered']} turned away",
                v(ok),
            )
        )
    out.append(("≤ 150 MB RSS per Python service", f"{worst_py:.0f} MB (largest)", v(worst_py <= 150)))
    out.append(
        (
            "< 3 % CPU when idle (whole stack)",
            f"{idle} % of one core (a freshly started stack: {report['idle']['freshStack']['percentOfOneCore']} %)",
            v(idle < 3),
        )
    )
    a = report["audit"]
    out.append(
        (
            "the audit after the run: every invariant holds",
            "no violation" if a["ok"] else f"{a['violations']} violation(s), not at rest: {a['notAtRest']}",
            v(a["ok"]),
        )
    )
    return out


def host_speed_lines(report: dict[str, Any]) -> list[str]:
    speed = report.get("hostSpeedMs")
    if not speed:
        return []
    return [
        "",
        f"This host's speed: {speed['start']:g} ms of CPU for the bench's reference Python loop before the run,"
        f" {speed['end']:g} ms after it (lower is faster; the machines of one kind differ, so compare runs on"
        " different hosts with this in mind, and read a change between the two as a host slowed or sped up"
        " meanwhile).",
    ]


def turned_away_cell(phase: dict[str, Any]) -> str:
    """How many of a phase's orders were turned away and, when any were, by which limit."""
    n, by = phase.get("turnedAway", 0), phase.get("turnedAwayBy") or {}
    return f"{n} ({', '.join(f'{limit} {k}' for limit, k in by.items())})" if n and by else str(n)


def write_report(report: dict[str, Any], out: Path = RESULTS) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    lines = [
        "# Tiny-Saga benchmark",
        "",
        f"Run {report['date']} with `{report['command']}`, the saga run by {report.get('sagaMode', 'choreography')}.",
        "",
        f"Machine: {report['machine']['cpus']} CPUs ({report['machine']['cpuModel']}), "
        f"{report['machine']['memoryGiB']} GiB, Python {report['machine']['python']}; everything co-located "
        "(PostgreSQL, Kafka, HAProxy, 9 Python services, the relay, the supervisor, and this load generator).",
        *host_speed_lines(report),
        "",
        "Settings changed for the run: the gateway's rate limits were raised so the load generator (one user pool"
        " on one address) is not throttled: " + ", ".join(f"`{k}={v}`" for k, v in RAISED_LIMITS.items()) + ".",
        "",
        f"Before the measured phases, {report['warmUp']['rate']:g} orders/s for {report['warmUp']['seconds']:g} s"
        " warm the stack up (connection pools, prepared statements, the broker's JIT); they are not measured.",
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in verdicts(report)],
        "",
        "## Phases (open loop, constant arrival rate)",
        "",
        "| phase | offered/s | accepted | turned away | ended | sagas/s | p50 ms | p95 ms | p99 ms | max ms"
        " | CPU ms/saga | CPU cores busy | host steal (cores) | backlog max | drain s | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in report["phases"]:
        lat = p["latencyMs"]
        lines.append(
            f"| {p['name']} | {p['offeredRate']} | {p['accepted']} | {turned_away_cell(p)} | {p['ended']}"
            f" | {p['completedPerSecond']} | {lat['p50']} | {lat['p95']} | {lat['p99']} | {lat['max']}"
            f" | {p['cpuMsPerSaga']} | {p['cpuCoresBusy']} | {p.get('hostStealCores', '-')} | {p['backlogMax']}"
            f" | {p['drainSeconds']}"
            f" | {p['errors'] or '-'}{' dropped ' + str(p['droppedByGenerator']) if p['droppedByGenerator'] else ''} |"
        )
    lines.append(
        "| load generator (not in the figures above) | | | | | | | | | | "
        + " / ".join(str(p.get("generatorCpuMsPerSaga", "-")) for p in report["phases"])
        + " | "
        + " / ".join(str(p.get("generatorCores", "-")) for p in report["phases"])
        + " | | | | |"
    )
    lines += [
        "",
        "Latency: from the order's INITIATED history row to its PLACED row (database clock)."
        f" Turned away: answered 503 because {report.get('maxSagasInFlight')} sagas were in flight"
        " (`TINYSAGA_MAX_SAGAS_IN_FLIGHT`, ADR 50), or because, with at least"
        f" {report.get('maxSagaSecondsFrom')} in flight, a new one would have taken over"
        f" {report.get('maxSagaSeconds')} s (`TINYSAGA_MAX_SAGA_SECONDS`, ADR 52), as each answer names it"
        " (`bound`, `wait`); the overload phase is offered twice the best rate kept up."
        " The load generator's line: its own CPU (this process: the load, its readings of the stack), in ms per"
        " saga and in cores, phase by phase, on the same two cores as the stack.",
        "sagas/s: sagas ended / (last end − first acceptance). Backlog: sagas in flight, sampled each second;"
        " drain: time after the last offer until every saga of the phase had ended. Host steal: CPU the"
        " hypervisor gave to other guests while this one wanted it; on a shared host the same code can"
        " measure very differently from one run to the next, and this is where that shows.",
        "",
        *stretches.lines(report["phases"]),
        "## Per saga: commits, WAL, Kafka",
        "",
        "Counters of the stack over each phase, divided by its sagas ended. Commits: transactions committed"
        " (pg_stat_database.xact_commit, reads on a pool included; the bench's own reads taken out), and"
        " write transactions (transaction ids assigned). WAL: pg_stat_wal (syncs: the fsyncs behind the"
        " commits). Kafka: the broker's requests by API (its RequestMetrics; Fetch is consumers' and"
        " followers' fetches together) and the messages written (topic end offsets).",
        "",
        "| phase | commits | by database | write transactions | WAL syncs | WAL KiB | Kafka requests | by API"
        " | messages | by topic |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *[
            f"| {p['name']} | {c.get('commits', '-')} | "
            + ", ".join(f"{k} {v}" for k, v in c.get("commitsByDatabase", {}).items())
            + f" | {c.get('writeTransactions', '-')} | {c.get('walSyncs', '-')} | {c.get('walKiB', '-')}"
            f" | {c.get('kafkaRequests', '-')} | "
            + ", ".join(f"{k} {v}" for k, v in list(c.get("kafkaRequestsByApi", {}).items())[:6])
            + f" | {c.get('messages', '-')} | "
            + ", ".join(f"{k} {v}" for k, v in c.get("messagesByTopic", {}).items())
            + " |"
            for p in report["phases"]
            for c in [p.get("perSaga", {})]
        ],
        "",
        *flame_lines(report.get("flameGraph") or {}),
        *gc_lines(report.get("garbageCollection") or {}),
        "## Peak RSS per process (MB)",
        "",
        "| process | MB |",
        "|---|---|",
        *[f"| {k} | {v:.0f} |" for k, v in sorted(report["peakRssMb"].items())],
        "",
        "postgres and kafka: the sum over their processes (PostgreSQL's shared buffers are counted in each"
        " backend that touched them, so that sum overstates it).",
        "",
        "## Idle CPU of the whole stack (% of one core)",
        "",
        "Measured twice with no traffic: on the freshly started stack (after the settle), and again after"
        " the load phases and the same settle, once the JVM has compiled its hot code. The target is read"
        " on the second (a system that has been running and is now idle); both are shown.",
        "",
        "| when | total | largest |",
        "|---|---|---|",
        *[
            f"| {label} | {i['percentOfOneCore']} | "
            + ", ".join(f"{k} {v}" for k, v in list(i["byProcess"].items())[:5])
            + " |"
            for label, i in (
                ("after the load", report["idle"]["afterLoad"]),
                ("fresh stack", report["idle"]["freshStack"]),
            )
        ],
        "",
        "## CPU per saga by process (ms)",
        "",
        "| process | " + " | ".join(p["name"] for p in report["phases"]) + " |",
        "|---|" + "---|" * len(report["phases"]),
        *[
            f"| {name} | " + " | ".join(str(p["cpuMsPerSagaByProcess"].get(name, "-")) for p in report["phases"]) + " |"
            for name in sorted(
                {n for p in report["phases"] for n in p["cpuMsPerSagaByProcess"]},
                key=lambda n: -max(p["cpuMsPerSagaByProcess"].get(n, 0) for p in report["phases"]),
            )
        ],
        "",
        *fanout.lines(report),
        "## Audit",
        "",
        "After the run, once at rest, `tiny-saga audit` checked SPEC section 4 on every order of the run:",
        "",
        "```",
        report["audit"]["text"],
        "```",
        "",
        "Plots: [latency](latency.png), [throughput](throughput.png), [resources](resources.png).",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    plots(report, out)


FLAME_RATE = 100  # py-spy's samples per second


def flame_lines(flame: dict[str, Any]) -> list[str]:
    if not flame:
        return []
    if not flame.get("file"):
        return ["## Flame graph", "", f"py-spy could not record {flame.get('process')}: {flame.get('error')}", ""]
    return [
        "## Flame graph",
        "",
        f"[{flame['file']}]({flame['file']}): {flame['process']}, the busiest Python process at {flame['phase']}"
        f" ({flame['cpuShareAtPick']} of a core when picked), sampled by py-spy at {FLAME_RATE} Hz for"
        f" {flame['seconds']} s without stopping it (py-spy's own CPU is on the two cores too, counted in neither"
        " line). Only samples where the process held the GIL are counted: its Python code and the C code it"
        " calls without releasing the GIL." + _samples_against_cpu(flame),
        "",
    ]


def _samples_against_cpu(flame: dict[str, Any]) -> str:
    samples, cpu = flame.get("samples"), flame.get("cpuSecondsWhileSampled")
    if samples is None or cpu is None:
        return ""
    return (
        f" {samples} samples ({samples / FLAME_RATE:.1f} s at {FLAME_RATE} Hz), against {cpu:g} s of CPU the"
        " process used meanwhile: py-spy samples by the wall clock, so a process that waits for a core while"
        " it holds the GIL (the cores are saturated at this rate) is sampled too, and one that runs with the"
        " GIL released is not. Read the graph's shares, not its seconds."
    )


def plots(report: dict[str, Any], out: Path = RESULTS) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ph = report["phases"]
    rates = [p["offeredRate"] for p in ph]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("p50", "p95", "p99"):
        ax.plot(rates, [p["latencyMs"][key] for p in ph], marker="o", label=key)
    ax.axhline(50, color="grey", linestyle=":", label="50 ms target (light load)")
    ax.set_xlabel("offered sagas/s")
    ax.set_ylabel("accepted → PLACED (ms)")
    ax.set_yscale("log")
    ax.set_title("End-to-end saga latency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(rates, rates, linestyle=":", color="grey", label="offered")
    ax.plot(rates, [p["completedPerSecond"] for p in ph], marker="o", label="completed")
    ax.axhline(150, color="red", linestyle="--", label="150/s target")
    ax.set_xlabel("offered sagas/s")
    ax.set_ylabel("sagas/s")
    ax.set_title("Throughput")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    names = sorted(report["peakRssMb"])
    a1.barh(names, [report["peakRssMb"][n] for n in names])
    a1.axvline(150, color="red", linestyle="--")
    a1.set_xlabel("peak RSS (MB)")
    a2.bar([p["name"] for p in ph], [p["cpuMsPerSaga"] or 0 for p in ph])
    a2.set_ylabel("CPU ms per saga (all processes)")
    a2.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(out / "resources.png", dpi=110)
    plt.close(fig)


# ---- main --------------------------------------------------------------------------------------------


def cli(args: list[str], env: dict[str, str]) -> int:
    return subprocess.call([str(REPO / "tiny-saga"), *args], env=env)


async def run(opts: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    from tinysaga.platform.secrets import superuser_dsn
    from tinysaga.platform.settings import Settings

    settings = Settings()
    base = f"http://127.0.0.1:{settings.gateway_port}"
    procs = Processes(settings)
    speed_before = host_speed()  # before the settle: the idle reading after it is not disturbed
    print(f"settling {opts.settle:.0f} s, then measuring idle CPU for {opts.idle:.0f} s ...", flush=True)
    await asyncio.sleep(opts.settle)
    idle_fresh = await measure_idle(procs, opts.idle)
    rss = RssSampler(procs)
    rss.start()
    pool = await asyncpg.create_pool(superuser_dsn(settings, "tinysaga_order"), min_size=1, max_size=4)
    conn = aiohttp.TCPConnector(limit=opts.max_inflight, limit_per_host=opts.max_inflight)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as http:
        print(f"registering {opts.users} users ...", flush=True)
        tokens = await register_users(http, base, opts.users)
        admin = await (
            await http.post(
                f"{base}/api/auth/token",
                json={"email": settings.admin_email, "password": settings.effective_admin_password},
            )
        ).json()
        product = f"bench-{uuid.uuid4().hex[:8]}"
        async with http.post(
            f"{base}/api/admin/products",
            json={
                "productId": product,
                "name": "Bench widget",
                "type": "bench",
                "price": 1.0,
                "availableCount": 1000000,
            },
            headers={"Authorization": f"Bearer {admin['accessToken']}"},
        ) as r:
            assert r.status == 201, await r.text()
        client = Client("127.0.0.1", settings.gateway_port)
        requests = order_requests(client, tokens, product)
        if opts.warmup_seconds > 0:
            print(f"warm-up: {opts.warmup_rate:g}/s for {opts.warmup_seconds:g} s (not measured) ...", flush=True)
            warm = Phase("warm-up", opts.warmup_rate, opts.warmup_seconds)
            await offer(warm, client, requests, opts.max_inflight, pool)
            await wait_ended(pool, warm, opts.drain_timeout)
        fan = None
        if opts.probe_seconds > 0:
            print(f"fan-out probe: events that no step handles, {opts.probe_seconds:g} s idle then at each rate ...")
            fan = await fanout.measure(procs, settings, opts.probe_rates, opts.probe_seconds)
            for r in fan["rates"]:
                print(f"  {r['rate']:g}/s: {r['msPerEvent']} ms of CPU per event", flush=True)
        counters = StackCounters(settings)
        await counters.start()
        await asyncio.sleep(STATS_SETTLE_SECONDS)
        before = await counters.read()
        gc_before = await read_gc(http, settings)
        phases = [Phase("light", opts.light_rate, opts.light_seconds)]
        phases += [Phase(f"{r:g}/s", r, opts.step_seconds) for r in opts.rates]
        flame: dict[str, Any] = {}

        async def one_phase(ph: Phase) -> None:
            nonlocal before
            print(f"phase {ph.name}: {ph.rate:g}/s for {ph.seconds:g} s ...", flush=True)
            c0, st0, g0, w0 = procs.cpu_by_name(), steal_seconds(), generator_cpu_seconds(), time.perf_counter()
            o0 = await counters.offsets()
            profiling = (
                asyncio.create_task(profile(procs, ph, opts.results, flame))
                if ph.rate == opts.flame_rate and ph.name != OVERLOAD
                else None
            )
            await offer(ph, client, requests, opts.max_inflight, pool)
            ph.drain_s = await wait_ended(pool, ph, opts.drain_timeout)

            ph.cpu_by = cpu_delta(c0, procs.cpu_by_name())
            ph.cpu_s = sum(ph.cpu_by.values())
            ph.steal_s = steal_seconds() - st0
            ph.generator_cpu_s = generator_cpu_seconds() - g0
            ph.wall_s = time.perf_counter() - w0
            if profiling is not None:
                await profiling
            await asyncio.sleep(STATS_SETTLE_SECONDS)
            after = await counters.read()
            ph.counters, before = counters_delta(before, after), after
            await measure(pool, ph, await counters.sent_between(o0, await counters.offsets()))
            r = ph.result
            print(
                f"  {r['completedPerSecond']} sagas/s, p50 {r['latencyMs']['p50']} ms, p99 {r['latencyMs']['p99']} ms,"
                f" CPU {r['cpuMsPerSaga']} ms/saga (generator {r['generatorCpuMsPerSaga']}), drain"
                f" {r['drainSeconds']} s, turned away {r['turnedAway']}, errors {r['errors'] or '-'},"
                f" commits/saga {r['perSaga'].get('commits')}, Kafka requests/saga {r['perSaga'].get('kafkaRequests')}",
                flush=True,
            )

        for ph in phases:
            await one_phase(ph)
        best = best_kept_up([p.result | {"name": p.name} for p in phases[1:]])
        if best is not None and opts.overload_seconds > 0:
            over = Phase(OVERLOAD, round(2 * best["completedPerSecond"]), opts.overload_seconds)
            phases.append(over)
            await one_phase(over)
        gc = gc_during(gc_before, await read_gc(http, settings))
        await counters.close()
        await client.close()
    print(f"settling {opts.settle:.0f} s after the load, then measuring idle CPU again ...", flush=True)
    await asyncio.sleep(opts.settle)
    idle_warm = await measure_idle(procs, opts.idle)
    await pool.close()
    rss.stop()
    print("auditing the data (tiny-saga audit) ...", flush=True)
    from tinysaga.ops import audit

    left = await audit.wait_at_rest(settings, opts.drain_timeout)
    checked = await audit.audit(settings)
    speed_after = host_speed()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "./tiny-saga bench " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else []),
        "machine": machine(),
        "hostSpeedMs": {"start": speed_before, "end": speed_after},
        "sagaMode": settings.saga_mode,
        "settingsChanged": RAISED_LIMITS,
        "maxSagasInFlight": settings.max_sagas_in_flight,
        "maxSagaSeconds": settings.max_saga_seconds,
        "maxSagaSecondsFrom": settings.max_saga_seconds_from,
        "warmUp": {"rate": opts.warmup_rate, "seconds": opts.warmup_seconds},
        "idleCpuPercentOfOneCore": idle_warm["percentOfOneCore"],
        "idle": {"afterLoad": idle_warm, "freshStack": idle_fresh},
        "peakRssMb": {k: round(v, 1) for k, v in rss.peak.items()},
        "phases": [{"name": p.name, **p.result} for p in phases],
        "flameGraph": flame,
        "fanOut": fan,
        "garbageCollection": gc,
        "audit": {
            "ok": checked.ok and not any(left.values()),
            "notAtRest": left,
            "violations": len(checked.violations),
            "text": checked.render(),
        },
    }


async def profile(procs: Processes, phase: Phase, out: Path, flame: dict[str, Any]) -> None:
    """The flame graph of the busiest Python process of the phase: its CPU over the phase's first
    3 s picks it, then py-spy samples it (without stopping it) until the phase's offers end."""
    await asyncio.sleep(1)
    c0 = procs.cpu_by_name()
    await asyncio.sleep(2)
    d = cpu_delta(c0, procs.cpu_by_name())
    named = procs.named()

    def is_python(name: str) -> bool:
        try:
            return "python" in named[name][0].name().lower() or "python" in " ".join(named[name][0].cmdline()[:1])
        except (psutil.NoSuchProcess, KeyError, IndexError):
            return False

    busiest = max((n for n in d if n in named and is_python(n)), key=lambda n: d[n], default=None)
    if busiest is None:
        return
    svg = out / "flame.svg"
    seconds = max(1, int(phase.seconds - 4))
    py_spy = Path(sys.executable).with_name("py-spy")
    target = named[busiest][0]
    cpu_before = _cpu_seconds(target)
    proc = await asyncio.create_subprocess_exec(
        str(py_spy),
        "record",
        "--pid",
        str(target.pid),
        "--duration",
        str(seconds),
        "--rate",
        str(FLAME_RATE),
        "--nonblocking",
        # only the samples where the thread holds the GIL: without it, a quarter of the graph was the
        # event loop between a wake-up and the core it waited for (Runner.run: 215 of 942 samples)
        "--gil",
        "--format",
        "flamegraph",
        "--output",
        str(svg),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, err = await proc.communicate()
    cpu_after = _cpu_seconds(target)
    flame.update(
        {
            "process": busiest,
            "phase": phase.name,
            "seconds": seconds,
            "file": svg.name if proc.returncode == 0 else None,
            "error": err.decode()[-500:] if proc.returncode else None,
            "cpuShareAtPick": round(d[busiest] / 2, 2),
            "samples": flame_samples(svg) if proc.returncode == 0 else None,
            "cpuSecondsWhileSampled": round(cpu_after - cpu_before, 2)
            if cpu_before is not None and cpu_after is not None
            else None,
        }
    )


def _cpu_seconds(p: psutil.Process, ended_children: bool = False) -> float | None:
    """A process's CPU seconds so far (user and system), and with `ended_children` those of its
    children that ended and were waited for; None when it has ended."""
    try:
        t = p.cpu_times()
    except psutil.NoSuchProcess:
        return None
    return t.user + t.system + (t.children_user + t.children_system if ended_children else 0.0)


def flame_samples(svg: Path) -> int | None:
    """The samples in a py-spy flame graph (its root frame's count)."""
    try:
        m = re.search(r"<title>all \(([\d,]+) samples?", svg.read_text())
    except OSError:
        return None
    return int(m.group(1).replace(",", "")) if m else None


def main(argv: list[str]) -> int:
    if argv[:1] == ["kafka-clients"]:  # the two Kafka clients side by side (bench/kafka_clients.py)
        from bench.kafka_clients import main as clients_main  # noqa: PLC0415

        return clients_main(argv[1:])
    if argv[:1] == ["compare"]:  # runs of two versions side by side, with their spread (bench/compare.py)
        from bench.compare import main as compare_main  # noqa: PLC0415

        return compare_main(argv[1:])
    ap = argparse.ArgumentParser(
        prog="tiny-saga bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--warmup-rate", type=float, default=10)
    ap.add_argument("--warmup-seconds", type=float, default=15, help="orders before the measured phases (0: none)")
    ap.add_argument("--light-rate", type=float, default=5)
    ap.add_argument("--light-seconds", type=float, default=20)
    ap.add_argument(
        "--rates", type=lambda s: [float(x) for x in s.split(",")], default=[20, 40, 80, 120, 150, 180, 240, 300, 330]
    )
    ap.add_argument("--step-seconds", type=float, default=15)
    ap.add_argument("--max-inflight", type=int, default=2000)
    ap.add_argument("--drain-timeout", type=float, default=120)
    ap.add_argument("--settle", type=float, default=20)
    ap.add_argument("--idle", type=float, default=20)
    ap.add_argument(
        "--overload-seconds", type=float, default=15, help="the overload phase: twice the best rate kept up (0: none)"
    )
    ap.add_argument(
        "--flame-rate", type=float, default=150, help="the step whose busiest Python process py-spy records"
    )
    ap.add_argument(
        "--probe-seconds",
        type=float,
        default=20,
        help="the fan-out probe: seconds of each of its windows, idle then each rate (0: no probe)",
    )
    ap.add_argument(
        "--probe-rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[15],
        help="the probe's events per second, one window each (15: a saga's 3 at 5/s)",
    )
    ap.add_argument("--quick", action="store_true", help="10 users, light 5 s, one step of 30/s for 5 s")
    ap.add_argument("--keep", action="store_true", help="leave the bench stack running (then: reset it yourself)")
    ap.add_argument("--port-offset", type=int, default=0, help="add this to every port of the bench stack")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the report and plots go")
    ap.add_argument(
        "--mode",
        choices=("choreography", "orchestration", "both"),
        default=os.environ.get("TINYSAGA_SAGA_MODE", "choreography"),
        help="how the saga runs (TINYSAGA_SAGA_MODE); both: one after the other, then the two side by side",
    )
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.users, opts.light_seconds, opts.rates, opts.step_seconds = 10, 5, [30.0], 5
        opts.settle, opts.idle, opts.warmup_seconds, opts.probe_seconds = 5, 5, 5, 5
    if opts.mode != "both":
        return run_mode(opts, opts.mode, opts.results)
    from bench.modes import write_comparison

    for mode in ("choreography", "orchestration"):
        if run_mode(opts, mode, opts.results / mode) != 0:
            return 1
    write_comparison(opts.results, ["choreography", "orchestration"])
    print((opts.results / "modes.md").read_text())
    return 0


def run_mode(opts: argparse.Namespace, mode: str, results: Path) -> int:
    """The whole benchmark on a fresh stack running the saga in `mode`; its report in `results`."""
    bench_env = {
        k: str(int(v) + opts.port_offset) if k.endswith("_PORT") or k.endswith("_PORT_BASE") else v
        for k, v in BENCH_ENV.items()
    }
    bench_env["TINYSAGA_SAGA_MODE"] = mode
    env = {**os.environ, **bench_env}
    os.environ.update(bench_env)
    if cli(["reset"], env) != 0 or cli(["up"], env) != 0:
        print("the bench stack did not come up")
        return 1
    try:
        opts.results.mkdir(parents=True, exist_ok=True)
        report = uvloop.run(run(opts, env))  # the generator's loop: uvloop, as the services' (bench/client.py)
        write_report(report, results)
        print((results / "report.md").read_text())
    finally:
        if not opts.keep:
            cli(["reset"], env)
    if not report["audit"]["ok"]:
        print("the audit found a violation: the run fails")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
