"""What one event on `order-topic` costs the stack before any step handles it (the fan-out probe).

The seed's design puts every event of the saga on one topic, and every participant's consumer group
reads all of it, skipping what it does not handle ("each microservice will ignore the event that
they don't want"). Each event is therefore fetched, answered and decoded once per group, and the
broker parks and answers each group's fetch, whether or not anyone acts on it. The probe measures
that share on the bench stack, once it is warm and before the measured phases:

- an idle window of `seconds`: every process's CPU with no traffic;
- then, for each of `rates` in turn, as long at that many events a second, sent open loop to
  `order-topic` with a name no step handles (PROBE_EVENT) and a saga event's size, by a producer
  of this process (idempotent, acks=all, as the services' publisher sends);
- per process and rate, the CPU of that window less the idle window's (scaled to the same
  length), per event sent. The producer's own CPU is this process's, counted in neither.

Every consumer skips such an event by its `eventName` header without parsing it (the consumer
loop's `_decode`), so the figure is the delivery alone: what the saga's own events cost each group
that does not handle them, and the floor under those that do.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Protocol

import orjson

from tinysaga.contracts.saga import ORDER_TOPIC
from tinysaga.platform.settings import Settings

PROBE_EVENT = "BENCH_FAN_OUT_PROBE"  # no step handles it: every group receives it and skips it
PAYLOAD = 600  # bytes: about a saga event's body


class CpuReader(Protocol):
    def cpu_by_name(self) -> dict[str, float]: ...


def probe_record(i: int) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """Key, body and headers of the i-th probe event: a saga event's size, keyed like one (so it
    lands on any partition), with the headers the relay and publisher set."""
    key = str(uuid.uuid4())
    body: dict[str, Any] = {"eventId": str(uuid.uuid4()), "eventName": PROBE_EVENT, "orderId": key, "seq": i, "pad": ""}
    body["pad"] = "x" * max(0, PAYLOAD - len(orjson.dumps(body)))
    return key.encode(), orjson.dumps(body), [("eventName", PROBE_EVENT.encode()), ("correlationId", key.encode())]


def per_event(
    idle: dict[str, float], idle_s: float, busy: dict[str, float], busy_s: float, events: int
) -> dict[str, float]:
    """Each process's CPU per event in ms: its CPU while the events came, less its idle CPU over as
    long, divided by the events. A process that used less than at idle reads 0 (noise, not a
    saving); one absent from the idle window counts from zero."""
    if events <= 0 or idle_s <= 0:
        return {}
    out = {}
    for name, used in busy.items():
        extra = used - idle.get(name, 0.0) * busy_s / idle_s
        out[name] = round(max(0.0, extra) / events * 1000, 3)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


async def measure(procs: CpuReader, settings: Settings, rates: list[float], seconds: float) -> dict[str, Any]:
    """The probe (see the module's docstring): one idle window, then a window at each rate in
    turn; the figures for the report."""
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415

    from bench.run import cpu_delta  # noqa: PLC0415

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True, linger_ms=0
    )
    await producer.start()
    try:
        c0, t0 = procs.cpu_by_name(), time.monotonic()
        await asyncio.sleep(seconds)
        idle, idle_s = cpu_delta(c0, procs.cpu_by_name()), time.monotonic() - t0
        out = []
        for rate in rates:
            c1, t1 = procs.cpu_by_name(), time.monotonic()
            sent = await _send(producer, rate, seconds)
            await asyncio.sleep(max(0.0, t1 + seconds - time.monotonic()) + 1.0)  # the last deliveries
            by = per_event(idle, idle_s, cpu_delta(c1, procs.cpu_by_name()), time.monotonic() - t1, sent)
            out.append(
                {"rate": rate, "events": sent, "msPerEventByProcess": by, "msPerEvent": round(sum(by.values()), 3)}
            )
    finally:
        await producer.stop()
    return {"seconds": seconds, "rates": out}


async def _send(producer: Any, rate: float, seconds: float) -> int:
    """`rate` probe events a second for `seconds`, open loop, all acknowledged; how many."""
    start, sent = time.monotonic(), 0
    acks: list[asyncio.Future[Any]] = []
    while (due := start + sent / rate) < start + seconds:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        key, body, headers = probe_record(sent)
        acks.append(await producer.send(ORDER_TOPIC, value=body, key=key, headers=headers))
        sent += 1
    await asyncio.gather(*acks)
    return sent


def lines(report: dict[str, Any]) -> list[str]:
    """The report's section: each process's CPU per probe event at each rate, and the share of a
    saga's CPU that its own events' delivery is, in the phase whose events came as fast."""
    probe = report.get("fanOut")
    runs = [r for r in (probe or {}).get("rates", []) if r.get("events")]
    if not runs:
        return []
    names = sorted(
        {k for r in runs for k, v in r["msPerEventByProcess"].items() if v > 0},
        key=lambda k: -max(r["msPerEventByProcess"].get(k, 0) for r in runs),
    )
    shares = []
    for r in runs:
        phase, n = _phase_at(report["phases"], r["rate"])
        if phase is not None:
            when = "At light load" if phase["name"] == "light" else f"At {phase['name']}"
            shares.append(
                f"{when} a saga put {n:g} events on `{ORDER_TOPIC}` ({r['rate']:g} a second):"
                f" up to about {n * r['msPerEvent']:.1f} ms of its {phase['cpuMsPerSaga']} ms of CPU is their"
                " delivery to every group, before any step acts on them."
            )
    return [
        f"## What an event on `{ORDER_TOPIC}` costs before anyone handles it",
        "",
        f"Before the measured phases, an idle window of {probe['seconds']:g} s, then {probe['seconds']:g} s at each"
        f" rate of events with a name no step handles, sent to `{ORDER_TOPIC}` by the bench's own producer; each"
        " process's CPU beyond its idle CPU over as long, per event. Every group reads the whole topic and skips"
        " such an event by its header without parsing it, so this is what the fan-out of one topic to every"
        " group costs: the broker's answers to each group's fetch, and each consumer's response read and"
        " decoded (`bench/fanout.py`). A saga's events come in bursts, and a group sometimes gets two in one"
        " answer, so for the saga this is an upper bound.",
        "",
        "| process | " + " | ".join(f"ms per event at {r['rate']:g}/s" for r in runs) + " |",
        "|---|" + "---|" * len(runs),
        *[f"| {k} | " + " | ".join(str(r["msPerEventByProcess"].get(k, 0.0)) for r in runs) + " |" for k in names],
        "| all | " + " | ".join(str(r["msPerEvent"]) for r in runs) + " |",
        "",
        *[line for s in shares for line in (s, "")],
    ]


def _phase_at(phases: list[dict[str, Any]], rate: float) -> tuple[dict[str, Any] | None, float]:
    """The phase whose sagas put events on the topic at about `rate` a second (the sagas it
    completed, not those it was offered: a step past saturation turns orders away), and its events
    per saga."""
    for p in phases:
        n = p.get("perSaga", {}).get("messagesByTopic", {}).get(ORDER_TOPIC)
        if n and p.get("completedPerSecond") and abs(p["completedPerSecond"] * n - rate) <= 0.1 * rate:
            return p, n
    return None, 0.0
