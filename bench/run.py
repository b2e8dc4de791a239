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
from hdrh.histogram import HdrHistogram

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
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
        out: dict[str, list[psutil.Process]] = {}
        state = json.loads((self.s.run_dir / "state.json").read_text())
        for name, c in state["children"].items():
            if c.get("pid"):
                try:
                    p = psutil.Process(c["pid"])
                    out[name] = [p, *p.children(recursive=True)]
                except psutil.NoSuchProcess:
                    pass
        sup = state.get("supervisor")
        if sup:
            try:
                out["supervisor"] = [psutil.Process(sup)]
            except psutil.NoSuchProcess:
                pass
        from tinysaga.infra import postgres

        pm = postgres.pid(self.s)
        if pm:
            try:
                p = psutil.Process(pm)
                out["postgres"] = [p, *p.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return out

    def cpu_by_name(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, procs in self.named().items():
            for p in procs:
                try:
                    t = p.cpu_times()
                    out[name] = out.get(name, 0.0) + t.user + t.system
                except psutil.NoSuchProcess:
                    pass
        return out

    def cpu_seconds(self) -> float:
        return sum(self.cpu_by_name().values())


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
                for name, procs in self.procs.named().items():
                    rss = 0.0
                    for p in procs:
                        try:
                            rss += p.memory_info().rss / 2**20
                        except psutil.NoSuchProcess:
                            pass
                    self.peak[name] = max(self.peak.get(name, 0.0), rss)
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
    dropped: int = 0
    late_ms: list[float] = field(default_factory=list)
    backlog: list[int] = field(default_factory=list)
    cpu_s: float = 0.0
    cpu_by: dict[str, float] = field(default_factory=dict)
    steal_s: float = 0.0
    drain_s: float = 0.0
    kafka_messages: int = 0
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


async def offer(
    phase: Phase,
    http: aiohttp.ClientSession,
    base: str,
    tokens: list[str],
    product: str,
    max_inflight: int,
    pool: asyncpg.Pool,
) -> None:
    """Open loop: request i is sent at t0 + i/rate, whatever happened to the others."""
    inflight = 0
    n = int(phase.rate * phase.seconds)
    tasks = []

    async def one() -> None:
        nonlocal inflight
        inflight += 1
        try:
            body = {"productId": product, "productQuantity": 1, "paymentType": "WALLET"}
            headers = {"Authorization": f"Bearer {random.choice(tokens)}"}
            async with http.post(f"{base}/api/orders", json=body, headers=headers) as r:
                if r.status == 202:
                    phase.accepted.append(((await r.json())["orderId"], time.time()))
                else:
                    phase.errors[str(r.status)] = phase.errors.get(str(r.status), 0) + 1
        except (aiohttp.ClientError, TimeoutError) as e:
            phase.errors[type(e).__name__] = phase.errors.get(type(e).__name__, 0) + 1
        finally:
            inflight -= 1

    async def watch_backlog() -> None:
        while True:
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


async def wait_ended(pool: asyncpg.Pool, ids: list[str], timeout: float) -> float:
    t = time.perf_counter()
    while time.perf_counter() - t < timeout:
        left = await pool.fetchval(
            "SELECT count(*) FROM orders WHERE order_id = ANY($1::uuid[]) AND order_status NOT IN ('PLACED','FAILED')",
            ids,
        )
        if left == 0:
            break
        await asyncio.sleep(0.2)
    return time.perf_counter() - t


async def measure(pool: asyncpg.Pool, phase: Phase) -> None:
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
        "kafkaMessagesPerSaga": round(phase.kafka_messages / len(ended), 2) if ended else None,
        "cpuMsPerSagaByProcess": {
            k: round(v * 1000 / len(ended), 2) for k, v in sorted(phase.cpu_by.items(), key=lambda kv: -kv[1])
        }
        if ended
        else {},
        "cpuCoresBusy": round(phase.cpu_s / (phase.seconds + phase.drain_s), 2),
        "hostStealCores": round(phase.steal_s / (phase.seconds + phase.drain_s), 3),
        "drainSeconds": round(phase.drain_s, 1),
        "backlogMax": max(phase.backlog or [0]),
        "backlogLast": (phase.backlog or [0])[-1],
        "backlogEachSecond": phase.backlog,
        "generatorLateP99Ms": round(sorted(phase.late_ms)[int(len(phase.late_ms) * 0.99) - 1], 1)
        if phase.late_ms
        else 0.0,
    }


async def kafka_messages(settings: Any) -> int:
    """How many records the saga's topics hold (their end offsets summed): the difference over a
    phase is what the stack put on Kafka for it (events, commands, dead letters)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topics = (settings.topic, settings.user_topic, settings.commands_topic, settings.dead_letter_topic)
    c = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    await c.start()
    try:  # the services create every saga topic with the same partitions at start
        parts = [TopicPartition(t, p) for t in topics for p in range(settings.topic_partitions)]
        return sum((await c.end_offsets(parts)).values())
    finally:
        await c.stop()


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


def kept_up(phase: dict[str, Any]) -> bool:
    """A step counts only if it kept up: nearly all it was offered completed within the step, and
    what was left drained at once (a growing backlog shows as a slower rate and a long drain)."""
    return (
        phase["notEnded"] == 0
        and phase["drainSeconds"] < 2
        and phase["completedPerSecond"] >= 0.95 * phase["offeredRate"]
    )


def best_kept_up(report: dict[str, Any]) -> float:
    """The highest rate of completed sagas among the load steps that kept up (0: none did)."""
    return max((p["completedPerSecond"] for p in report["phases"][1:] if kept_up(p)), default=0.0)


def verdicts(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    light = report["phases"][0]["latencyMs"]["p50"]
    sat = best_kept_up(report)
    py = {
        k: v
        for k, v in report["peakRssMb"].items()
        if k not in ("postgres", "gateway", "supervisor") and not k.startswith("kafka")
    }
    worst_py = max(py.values()) if py else 0.0
    idle = report["idleCpuPercentOfOneCore"]

    def v(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    return [
        ("p50 ≤ 50 ms at light load", f"{light} ms", v(light <= 50)),
        ("≥ 150 completed sagas/s with no growing backlog", f"{sat} sagas/s", v(sat >= 150)),
        ("≤ 150 MB RSS per Python service", f"{worst_py:.0f} MB (largest)", v(worst_py <= 150)),
        (
            "< 5 % CPU when idle (whole stack)",
            f"{idle} % of one core (a freshly started stack: {report['idle']['freshStack']['percentOfOneCore']} %)",
            v(idle < 5),
        ),
    ]


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
        "| phase | offered/s | accepted | ended | sagas/s | p50 ms | p95 ms | p99 ms | max ms | CPU ms/saga"
        " | CPU cores busy | host steal (cores) | backlog max | drain s | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in report["phases"]:
        lat = p["latencyMs"]
        lines.append(
            f"| {p['name']} | {p['offeredRate']} | {p['accepted']} | {p['ended']} | {p['completedPerSecond']}"
            f" | {lat['p50']} | {lat['p95']} | {lat['p99']} | {lat['max']} | {p['cpuMsPerSaga']}"
            f" | {p['cpuCoresBusy']} | {p.get('hostStealCores', '-')} | {p['backlogMax']} | {p['drainSeconds']}"
            f" | {p['errors'] or '-'}{' dropped ' + str(p['droppedByGenerator']) if p['droppedByGenerator'] else ''} |"
        )
    lines += [
        "",
        "Latency: from the order's INITIATED history row to its PLACED row (database clock).",
        "sagas/s: sagas ended / (last end − first acceptance). Backlog: sagas in flight, sampled each second;"
        " drain: time after the last offer until every saga of the phase had ended. Host steal: CPU the"
        " hypervisor gave to other guests while this one wanted it; on a shared host the same code can"
        " measure very differently from one run to the next, and this is where that shows.",
        "",
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
        "Plots: [latency](latency.png), [throughput](throughput.png), [resources](resources.png).",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    plots(report, out)


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
        if opts.warmup_seconds > 0:
            print(f"warm-up: {opts.warmup_rate:g}/s for {opts.warmup_seconds:g} s (not measured) ...", flush=True)
            warm = Phase("warm-up", opts.warmup_rate, opts.warmup_seconds)
            await offer(warm, http, base, tokens, product, opts.max_inflight, pool)
            await wait_ended(pool, [o for o, _ in warm.accepted], opts.drain_timeout)
            await asyncio.sleep(3)
        phases = [Phase("light", opts.light_rate, opts.light_seconds)]
        phases += [Phase(f"{r:g}/s", r, opts.step_seconds) for r in opts.rates]
        for ph in phases:
            print(f"phase {ph.name}: {ph.rate:g}/s for {ph.seconds:g} s ...", flush=True)
            c0, st0, k0 = procs.cpu_by_name(), steal_seconds(), await kafka_messages(settings)
            await offer(ph, http, base, tokens, product, opts.max_inflight, pool)
            ph.drain_s = await wait_ended(pool, [o for o, _ in ph.accepted], opts.drain_timeout)
            await asyncio.sleep(1)  # the last sagas' notifications and tracking reach Kafka
            ph.kafka_messages = await kafka_messages(settings) - k0
            ph.cpu_by = cpu_delta(c0, procs.cpu_by_name())
            ph.cpu_s = sum(ph.cpu_by.values())
            ph.steal_s = steal_seconds() - st0
            await measure(pool, ph)
            r = ph.result
            print(
                f"  {r['completedPerSecond']} sagas/s, p50 {r['latencyMs']['p50']} ms, p99 {r['latencyMs']['p99']} ms,"
                f" CPU {r['cpuMsPerSaga']} ms/saga, drain {r['drainSeconds']} s, errors {r['errors'] or '-'}",
                flush=True,
            )
            await asyncio.sleep(3)
    print(f"settling {opts.settle:.0f} s after the load, then measuring idle CPU again ...", flush=True)
    await asyncio.sleep(opts.settle)
    idle_warm = await measure_idle(procs, opts.idle)
    await pool.close()
    rss.stop()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "./tiny-saga bench " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else []),
        "machine": machine(),
        "sagaMode": settings.saga_mode,
        "settingsChanged": RAISED_LIMITS,
        "warmUp": {"rate": opts.warmup_rate, "seconds": opts.warmup_seconds},
        "idleCpuPercentOfOneCore": idle_warm["percentOfOneCore"],
        "idle": {"afterLoad": idle_warm, "freshStack": idle_fresh},
        "peakRssMb": {k: round(v, 1) for k, v in rss.peak.items()},
        "phases": [{"name": p.name, **p.result} for p in phases],
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="tiny-saga bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--warmup-rate", type=float, default=10)
    ap.add_argument("--warmup-seconds", type=float, default=15, help="orders before the measured phases (0: none)")
    ap.add_argument("--light-rate", type=float, default=5)
    ap.add_argument("--light-seconds", type=float, default=20)
    ap.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[20, 40, 80, 120, 150, 180])
    ap.add_argument("--step-seconds", type=float, default=15)
    ap.add_argument("--max-inflight", type=int, default=2000)
    ap.add_argument("--drain-timeout", type=float, default=120)
    ap.add_argument("--settle", type=float, default=20)
    ap.add_argument("--idle", type=float, default=20)
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
        opts.settle, opts.idle, opts.warmup_seconds = 5, 5, 5
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
        report = asyncio.run(run(opts, env))
        write_report(report, results)
        print((results / "report.md").read_text())
    finally:
        if not opts.keep:
            cli(["reset"], env)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
