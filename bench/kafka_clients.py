"""`./tiny-saga bench kafka-clients`: the two Kafka clients for Python side by side (issue 16's lead).

Every Python service fetches and decodes the events of `order-topic`, and publishes its own, with
aiokafka (pure Python). confluent-kafka wraps librdkafka (C). This measures what each costs the
process that uses it, on the broker of a running stack (`./tiny-saga up` first, or --bootstrap):

- a producer process sends `rate` events a second (open loop, a saga event's size and headers), each
  awaited for the broker's acknowledgement as the services' publisher does (idempotent, acks=all,
  no linger);
- a consumer process, in a group of its own, takes them as `ConsumerLoop` does (a poll of up to 500
  records, each record's headers read and its body parsed, offsets committed once a second), with
  the consumer loop's settings (session, heartbeat, how long an idle fetch waits at the broker)
  on both clients, and each client's defaults otherwise;
- each process's CPU (every thread of it, librdkafka's included) from the first event to the last,
  per event; the latency from the send to the consumer's hand, p50 and p99.

Each client runs in processes of their own (one after the other, never side by side), on a topic
of its own with the stack's partition count. Results: kafka-clients.md and .json in --results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import uvloop

REPO = Path(__file__).resolve().parents[1]
CLIENTS = ("aiokafka", "confluent")
PAYLOAD = 600  # bytes: about an event of the saga
MAX_POLL = 500
COMMIT_EVERY = 1.0
WARMUP = 2.0  # seconds of events before the measured ones
IDLE = 20.0  # seconds the consumer then waits with nothing to consume, its CPU measured


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def event(i: int, warmup: bool = False) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    key = str(uuid.uuid4())
    body = {"eventId": str(uuid.uuid4()), "eventName": "PAYMENT_COMPLETED", "orderId": key, "seq": i}
    body["pad"] = "x" * max(0, PAYLOAD - len(orjson.dumps(body)))
    headers = [
        ("eventName", b"PAYMENT_COMPLETED"),
        ("correlationId", key.encode()),
        ("sentAt", repr(time.time()).encode()),
        *([("warmup", b"1")] if warmup else []),
    ]
    return key.encode(), orjson.dumps(body), headers


def handle(headers: list[tuple[str, bytes]] | None, value: bytes | None, lat: list[float]) -> bool:
    """What the consumer loop does with a record before its handler: the name from the headers,
    the body parsed; here also the latency from the send (of a measured event: False for one of
    the warm-up)."""
    sent, warmup = None, False
    for k, v in headers or ():
        if k == "sentAt":
            sent = float(v)
        elif k == "warmup":
            warmup = True
    orjson.loads(value or b"{}")
    if sent is not None and not warmup:
        lat.append(time.time() - sent)
    return not warmup


async def consumed(cpu: float, seconds: float, lat: list[float]) -> dict[str, Any]:
    """The consumer's figures (the latencies in the order the events came, summed up here: the
    child's output stays small), and its CPU over IDLE seconds with nothing to consume after them
    (the client's own wake-ups: heartbeats, fetches that wait at the broker, timers)."""
    ordered = sorted(lat)
    idle0 = cpu_seconds()
    await asyncio.sleep(IDLE)
    return {
        "idle": (cpu_seconds() - idle0) / IDLE,
        "cpu": cpu,
        "seconds": seconds,
        "events": len(lat),
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "max": ordered[-1],
    }


# ---- producers ------------------------------------------------------------------------------------


async def produce_aiokafka(bootstrap: str, topic: str, rate: float, count: int) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415

    p = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=0, request_timeout_ms=15000
    )
    await p.start()
    try:

        async def send(i: int, warmup: bool) -> None:
            key, value, headers = event(i, warmup)
            await (await p.send(topic, value=value, key=key, headers=headers))

        return await _open_loop(send, rate, count)
    finally:
        await p.stop()


async def produce_confluent(bootstrap: str, topic: str, rate: float, count: int) -> dict[str, Any]:
    from confluent_kafka import KafkaException, Producer  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 0})
    stop = False

    def serve_reports() -> None:  # delivery reports are served by poll(), here on a thread of its own
        while not stop:
            p.poll(1.0)

    reporter = loop.run_in_executor(None, serve_reports)

    def delivered(fut: asyncio.Future[None], err: Any, _msg: Any) -> None:
        if err is None:
            loop.call_soon_threadsafe(fut.set_result, None)
        else:
            loop.call_soon_threadsafe(fut.set_exception, KafkaException(err))

    async def send(i: int, warmup: bool) -> None:
        key, value, headers = event(i, warmup)
        fut: asyncio.Future[None] = loop.create_future()
        p.produce(topic, value=value, key=key, headers=headers, on_delivery=lambda e, m: delivered(fut, e, m))
        await fut

    try:
        return await _open_loop(send, rate, count)
    finally:
        stop = True
        await reporter
        p.flush(10)


async def _open_loop(send: Any, rate: float, count: int) -> dict[str, Any]:
    """WARMUP seconds of events first (connections, metadata, the consumer's first fetches; not
    measured), then `count` events, each sent at its time whatever became of the earlier ones."""
    loop = asyncio.get_running_loop()
    warmup = int(WARMUP * rate)
    tasks: list[asyncio.Future[None]] = []
    t0 = loop.time()
    for i in range(warmup + count):
        if i == warmup:
            await asyncio.gather(*tasks)
            tasks, cpu0, t0 = [], cpu_seconds(), loop.time()
        delay = t0 + (i - (warmup if i >= warmup else 0)) / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(send(i, i < warmup)))
    await asyncio.gather(*tasks)
    return {"cpu": cpu_seconds() - cpu0, "seconds": loop.time() - t0, "events": count}


# ---- consumers ------------------------------------------------------------------------------------


async def consume_aiokafka(bootstrap: str, topic: str, count: int) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer  # noqa: PLC0415

    from tinysaga.platform.consumer import hold_prefetched  # noqa: PLC0415

    c = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{uuid.uuid4()}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=5000,
        consumer_timeout_ms=10000,
        max_poll_records=MAX_POLL,
        session_timeout_ms=10000,
        heartbeat_interval_ms=3000,
    )
    await c.start()
    hold_prefetched(c)
    while not c.assignment():
        await asyncio.sleep(0.05)
    ready()
    lat: list[float] = []
    cpu0, t0, last_commit = None, 0.0, time.monotonic()
    pending: dict[Any, int] = {}
    try:
        while len(lat) < count:
            batches = await c.getmany(timeout_ms=int(COMMIT_EVERY * 1000))
            for tp, recs in batches.items():
                for r in recs:
                    if handle(list(r.headers or ()), r.value, lat) and cpu0 is None:
                        cpu0, t0 = cpu_seconds(), time.monotonic()
                pending[tp] = recs[-1].offset + 1
            if pending and time.monotonic() - last_commit >= COMMIT_EVERY:
                await c.commit(pending)
                pending, last_commit = {}, time.monotonic()
        return await consumed(cpu_seconds() - (cpu0 or 0.0), time.monotonic() - t0, lat)
    finally:
        await c.stop()


async def consume_confluent(bootstrap: str, topic: str, count: int) -> dict[str, Any]:
    """librdkafka's consume() waits out its timeout unless it fills the batch, so a thread of its
    own waits in poll() for the first record and takes what else is there with consume(n, 0),
    then hands the batch to the event loop. That thread alone calls the consumer (a commit from
    the loop while it polls blocks), so it also sends the commits."""
    from confluent_kafka import Consumer, TopicPartition  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    batches: asyncio.Queue[list[Any]] = asyncio.Queue()
    assigned = threading.Event()
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 3000,
            # as the consumer loop's aiokafka (fetch_max_wait_ms): how long an idle fetch waits
            # at the broker (librdkafka's default, 500 ms, costs the broker and the client CPU when idle)
            "fetch.wait.max.ms": 5000,
        }
    )
    c.subscribe([topic], on_assign=lambda _c, parts: assigned.set() if parts else None)
    stop = threading.Event()

    to_commit: list[list[Any]] = []  # handed from the event loop to the thread, which alone calls the consumer

    def fetch() -> None:
        while not stop.is_set():
            first = c.poll(1.0)
            if to_commit:
                c.commit(offsets=to_commit.pop(), asynchronous=True)
            if first is None:
                continue
            batch = [first, *c.consume(MAX_POLL - 1, 0)]
            loop.call_soon_threadsafe(batches.put_nowait, batch)

    fetcher = threading.Thread(target=fetch, daemon=True)
    fetcher.start()
    lat: list[float] = []
    cpu0, t0, last_commit = None, 0.0, time.monotonic()
    pending: dict[tuple[str, int], int] = {}
    try:
        while not assigned.is_set():
            await asyncio.sleep(0.05)
        ready()
        while len(lat) < count:
            try:
                msgs = await asyncio.wait_for(batches.get(), COMMIT_EVERY)
            except TimeoutError:
                msgs = []
            for m in msgs:
                if m.error():
                    continue
                if handle(m.headers(), m.value(), lat) and cpu0 is None:
                    cpu0, t0 = cpu_seconds(), time.monotonic()
                pending[(m.topic(), m.partition())] = m.offset() + 1
            if pending and time.monotonic() - last_commit >= COMMIT_EVERY:
                to_commit.append([TopicPartition(t, p, o) for (t, p), o in pending.items()])
                pending, last_commit = {}, time.monotonic()
        return await consumed(cpu_seconds() - (cpu0 or 0.0), time.monotonic() - t0, lat)
    finally:
        stop.set()
        await loop.run_in_executor(None, fetcher.join)
        c.close()


def ready() -> None:
    print("ready", flush=True)


# ---- the run --------------------------------------------------------------------------------------


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # noqa: PLC0415

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        fut.result(30)


def child(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    return subprocess.Popen(
        [sys.executable, "-m", "bench.kafka_clients", *args], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO
    )


def one(client: str, bootstrap: str, partitions: int, rate: float, seconds: float) -> dict[str, Any]:
    topic = f"bench-kc-{client}-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions)
    count = int(rate * seconds)
    consumer = child(["consume", client, bootstrap, topic, str(count)])
    assert consumer.stdout is not None
    if consumer.stdout.readline().strip() != "ready":
        raise SystemExit(f"the {client} consumer did not join its group")
    producer = child(["produce", client, bootstrap, topic, str(count), str(rate)])
    prod = json.loads(producer.communicate(timeout=seconds * 4 + 60)[0])
    cons = json.loads(consumer.communicate(timeout=60)[0])
    return {
        "client": client,
        "rate": rate,
        "events": count,
        "producerCpuMsPerEvent": round(1000 * prod["cpu"] / count, 3),
        "consumerCpuMsPerEvent": round(1000 * cons["cpu"] / count, 3),
        "consumerIdlePercent": round(100 * cons["idle"], 3),
        "latencyP50Ms": round(1000 * cons["p50"], 2),
        "latencyP99Ms": round(1000 * cons["p99"], 2),
        "latencyMaxMs": round(1000 * cons["max"], 2),
    }


def report(rows: list[dict[str, Any]], argv: list[str]) -> str:
    out = [
        "# The Kafka clients for Python, side by side",
        "",
        f"Run {time.strftime('%Y-%m-%dT%H:%M:%S%z')} with `./tiny-saga bench kafka-clients {' '.join(argv)}`"
        " (bench/kafka_clients.py).",
        "",
        "CPU of the producing and of the consuming process per event (all their threads), and the latency"
        " from the send to the consumer's hand. Each client in processes of its own, one after the other.",
        "",
        "| client | events/s | events | producer CPU ms/event | consumer CPU ms/event | p50 ms | p99 ms |"
        " consumer idle, % of a core |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['client']} | {r['rate']:g} | {r['events']} | {r['producerCpuMsPerEvent']} |"
            f" {r['consumerCpuMsPerEvent']} | {r['latencyP50Ms']} | {r['latencyP99Ms']} |"
            f" {r['consumerIdlePercent']} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    from tinysaga.platform.settings import Settings  # noqa: PLC0415

    ap = argparse.ArgumentParser(prog="tiny-saga bench kafka-clients", description=__doc__)
    ap.add_argument("--bootstrap", help="the broker (default: the stack's, from the settings)")
    ap.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[20, 100, 400])
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--clients", type=lambda s: s.split(","), default=list(CLIENTS))
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "results")
    args = ap.parse_args(argv)
    settings = Settings()
    bootstrap = args.bootstrap or settings.kafka_bootstrap
    rows = []
    for rate in args.rates:
        for client in args.clients:
            row = one(client, bootstrap, settings.topic_partitions, rate, args.seconds)
            print(json.dumps(row), flush=True)
            rows.append(row)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "kafka-clients.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.results / "kafka-clients.md").write_text(report(rows, argv))
    print(report(rows, argv))
    return 0


def _child(argv: list[str]) -> None:
    role, client, bootstrap, topic, count = argv[:5]
    if role == "produce":
        result = uvloop.run(globals()[f"produce_{client}"](bootstrap, topic, float(argv[5]), int(count)))
    else:
        result = uvloop.run(globals()[f"consume_{client}"](bootstrap, topic, int(count)))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] in (["produce"], ["consume"]):
        _child(sys.argv[1:])
    else:
        sys.exit(main(sys.argv[1:]))
