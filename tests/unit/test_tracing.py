"""Tracing (ADR 42) without I/O: the W3C context from the span an event is staged in into its outbox
row, from the row through the relay's publish span into the Kafka record's headers, and from the
headers into the consumer's span (one per event, a batch linked both ways); the sampler; the ids in
the log lines; and nothing at all when tracing is off. Spans are made by the real SDK and kept by its
in-memory exporter; the database is a fake connection that keeps the statements it is given."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.unit.fakes import FakeUnitOfWork
from tests.unit.fakes_order import FakeOrders
from tests.unit.test_order_handlers import FakeCatalogue, create_order
from tinysaga.contracts import events as ev
from tinysaga.order.adapters import Product
from tinysaga.order.domain import Status
from tinysaga.order.handlers import TimeOut
from tinysaga.platform import tracing
from tinysaga.platform.consumer import ConsumerLoop, HandlerContext
from tinysaga.platform.logging import JsonFormatter
from tinysaga.platform.publisher import Publisher
from tinysaga.platform.settings import Settings
from tinysaga.platform.uow import PgUnitOfWork, outbox_values, publish_after_commit


@dataclass
class Record:
    """What the loop reads of a Kafka record."""

    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    topic: str = "order-topic"
    partition: int = 2
    offset: int = 41
    key: bytes = b"k"


class FakeConn:
    """An asyncpg connection that keeps what it is asked to execute (the outbox rows among it), and
    records every event id as new."""

    def __init__(self) -> None:
        self.executed: list[tuple[str, tuple[Any, ...]]] = []

    async def execute(self, sql: str, *args: Any) -> None:
        self.executed.append((sql, args))

    async def fetchval(self, sql: str, *args: Any) -> int:
        self.executed.append((sql, args))
        return len(self.executed)  # an outbox row's id

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        assert "processed_events" in sql
        return [{"event_id": i} for i in args[0]]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    def outbox_headers(self) -> list[dict[str, str]]:
        return [orjson.loads(args[4]) for sql, args in self.executed if "INSERT INTO outbox" in sql]


class FakePool:
    def __init__(self) -> None:
        self.conn = FakeConn()

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeConn]:
        yield self.conn


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this test, with the product's sampler; the finished spans in the exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=tracing.sampler(1.0))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider.get_tracer("test"))
    try:
        yield exporter
    finally:
        tracing.use(None)


def an_event(name: str = ev.ORDER_INITIATED, order_id: str | None = None) -> ev.Event:
    oid = order_id or str(uuid.uuid4())
    return ev.new_event(name, correlation_id=oid, orderId=oid, userId="u1")


def traceparent(span: Any) -> str:
    c = span.get_span_context()
    return f"00-{trace.format_trace_id(c.trace_id)}-{trace.format_span_id(c.span_id)}-{c.trace_flags:02x}"


def by_name(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    (s,) = [s for s in exporter.get_finished_spans() if s.name == name]
    return s


class FakeProducer:
    """An aiokafka producer that keeps what it is sent; each send acknowledged at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []

    async def send(self, topic: str, *, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> Any:
        self.sent.append((topic, key, {k: v.decode() for k, v in headers}))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def kafka_headers(row_headers: dict[str, str]) -> list[tuple[str, bytes]]:
    """The record headers the relay sends for an outbox row's headers."""
    return [(k, str(v).encode()) for k, v in row_headers.items()]


def loop(pool: FakePool, handled: dict[str, Any], **kw: Any) -> ConsumerLoop:
    return ConsumerLoop(Settings(), "payment", pool, handled, ("order-topic",), **kw)  # type: ignore[arg-type]


# ---- off -----------------------------------------------------------------------------------------


async def test_off_nothing_is_installed_added_or_started() -> None:
    assert tracing.setup("order", Settings(otlp_endpoint=None)) is False
    assert tracing.setup("order", Settings(otlp_endpoint="")) is False
    assert not tracing.enabled
    event = an_event()
    *_, headers = outbox_values("order-topic", event)
    assert orjson.loads(headers) == {"eventName": event.eventName, "correlationId": event.correlationId}
    assert tracing.context_headers() == {}
    row = {"eventName": "X", "traceparent": f"00-{'a' * 32}-{'b' * 16}-01"}
    assert tracing.start_publish("order-topic", "k", row) is None and row["traceparent"].startswith("00-aaa")
    assert tracing.current_ids() is None
    with tracing.consume_span("payment", "payment", Record(b"", kafka_headers(row)), event) as span:
        assert span is None
    with tracing.batch_span("payment", "payment", [Record(b"")]) as batch:
        assert batch is None
    with tracing.span("time out", order_id="o1") as own:
        assert own is None


# ---- the hops --------------------------------------------------------------------------------------


async def test_an_event_staged_in_a_span_carries_its_context_in_the_outbox_row(spans: InMemorySpanExporter) -> None:
    with tracing.span("POST /api/orders") as request:
        *_, headers = outbox_values("order-topic", an_event())
    row = orjson.loads(headers)
    assert row["traceparent"] == traceparent(request)
    assert "tracestate" not in row  # none was given
    assert row["eventName"] == ev.ORDER_INITIATED  # the rest as before


async def test_the_tracestate_goes_along(spans: InMemorySpanExporter) -> None:
    upstream = tracing.context_of({"traceparent": f"00-{'1' * 32}-{'2' * 16}-01", "tracestate": "shop=1"})
    with trace.use_span(trace.NonRecordingSpan(trace.get_current_span(upstream).get_span_context())):
        with tracing.span("inner"):
            headers = tracing.context_headers()
    assert headers["tracestate"] == "shop=1" and headers["traceparent"].startswith(f"00-{'1' * 32}-")


async def test_the_relay_publish_is_a_span_child_of_the_row_and_hands_its_own_context_on(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.span("POST /api/orders") as request:
        *_, headers = outbox_values("order-topic", an_event())
    row = {k: str(v) for k, v in orjson.loads(headers).items()}
    publish = tracing.start_publish("order-topic", "order-1", row)
    assert publish is not None
    assert row["traceparent"] == traceparent(publish)  # the consumers are the publish span's children
    tracing.end_publish([publish])
    sent = by_name(spans, f"send {ev.ORDER_INITIATED}")
    assert sent.kind == SpanKind.PRODUCER
    assert sent.parent is not None and sent.parent.span_id == request.get_span_context().span_id
    assert sent.context.trace_id == request.get_span_context().trace_id
    assert sent.attributes["messaging.destination.name"] == "order-topic"
    assert sent.attributes["messaging.kafka.message.key"] == "order-1"
    # a row staged outside any span: published as it is, no span
    bare = {"eventName": "X", "correlationId": "c"}
    assert tracing.start_publish("order-topic", "k", bare) is None and bare == {"eventName": "X", "correlationId": "c"}


async def test_the_publish_after_commit_sends_each_row_in_a_span_that_the_record_carries(
    spans: InMemorySpanExporter,
) -> None:
    """The writing process's publisher (ADR 51) and the relay share `send_row`: the row's send is a
    span child of the staging span, ended at Kafka's acknowledgement, whose context the record
    carries; a row staged outside any span is sent as it is."""
    pool, producer = FakePool(), FakeProducer()
    publish_after_commit(Publisher(producer, pool))  # type: ignore[arg-type]
    try:
        with tracing.span("POST /api/orders") as request:
            async with PgUnitOfWork.begin(pool, "order-topic") as uow:  # type: ignore[arg-type]
                await uow.stage(an_event())
        async with PgUnitOfWork.begin(pool, "order-topic") as uow:  # type: ignore[arg-type]
            await uow.stage(an_event(ev.PAYMENT_DONE))
    finally:
        publish_after_commit(None)
    (_, _, traced), (_, _, bare) = producer.sent
    sent = by_name(spans, f"send {ev.ORDER_INITIATED}")
    assert sent.kind == SpanKind.PRODUCER and sent.end_time is not None
    assert sent.parent is not None and sent.parent.span_id == request.get_span_context().span_id
    assert traced["traceparent"] == traceparent(sent)
    assert "traceparent" not in bare and bare["eventName"] == ev.PAYMENT_DONE
    assert [s.name for s in spans.get_finished_spans()].count(f"send {ev.PAYMENT_DONE}") == 0


async def test_a_failed_publish_ends_its_spans_as_errors(spans: InMemorySpanExporter) -> None:
    with tracing.span("request"):
        row = {"eventName": "E", **tracing.context_headers()}
    publish = tracing.start_publish("order-topic", "k", row)
    assert publish is not None
    tracing.end_publish([publish], TimeoutError("no broker"))
    sent = by_name(spans, "send E")
    assert not sent.status.is_ok and sent.events[0].name == "exception"


async def test_one_order_one_trace_through_the_outbox_the_relay_and_a_consumer(spans: InMemorySpanExporter) -> None:
    """Order's request stages ORDER_INITIATED; the relay publishes it; Payment handles it and stages
    PAYMENT_DONE; the next relay hop's context is the Payment span's: one trace, each a child of the one before."""
    pool = FakePool()
    event = an_event()
    seen: dict[str, Any] = {}

    async def charge(e: ev.Event, ctx: HandlerContext) -> None:
        seen["ids"] = tracing.current_ids()
        seen["log"] = orjson.loads(JsonFormatter("payment").format(logging.makeLogRecord({"msg": "charged"})))
        async with ctx.transaction() as uow:
            await uow.stage(an_event(ev.PAYMENT_DONE, e.orderId))

    with tracing.span("POST /api/orders") as request:
        *_, headers = outbox_values("order-topic", event)
    row = {k: str(v) for k, v in orjson.loads(headers).items()}
    publish = tracing.start_publish("order-topic", event.orderId or "", row)
    tracing.end_publish([publish] if publish else [])
    c = loop(pool, {ev.ORDER_INITIATED: charge})
    await c._work_partition([Record(event.to_bytes(), kafka_headers(row))])  # type: ignore[list-item]

    handled = by_name(spans, f"process {ev.ORDER_INITIATED}")
    sent = by_name(spans, f"send {ev.ORDER_INITIATED}")
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in spans.get_finished_spans()} == {trace_id}
    assert handled.kind == SpanKind.CONSUMER and handled.parent is not None
    assert handled.parent.span_id == sent.context.span_id
    assert handled.attributes["tinysaga.order_id"] == event.orderId
    assert handled.attributes["messaging.message.id"] == str(event.eventId)
    assert handled.attributes["messaging.consumer.group.name"] == "payment"
    assert handled.attributes["messaging.destination.partition.id"] == "2"
    # the handler's log line names the trace and its span; its event goes on in the same trace
    assert seen["ids"] == (trace.format_trace_id(trace_id), trace.format_span_id(handled.context.span_id))
    assert (seen["log"]["traceId"], seen["log"]["spanId"]) == seen["ids"]
    assert seen["log"]["correlationId"] == event.correlationId
    (next_row,) = pool.conn.outbox_headers()
    assert next_row["traceparent"].startswith(f"00-{seen['ids'][0]}-{seen['ids'][1]}-")


async def test_a_batch_is_a_span_of_its_own_linked_to_each_event_and_back(spans: InMemorySpanExporter) -> None:
    pool = FakePool()
    first, second = an_event(ev.ORDER_INITIATED), an_event(ev.ORDER_INITIATED)
    parents = {}
    records = []
    for e in (first, second):
        with tracing.span(f"request {e.orderId}") as request:
            parents[e.orderId] = request.get_span_context()
            headers = tracing.context_headers()
        records.append(Record(e.to_bytes(), kafka_headers({"eventName": e.eventName, **headers})))
    prepared_in: list[Any] = []

    async def prepare(events: list[ev.Event]) -> dict[Any, Any]:
        prepared_in.append(trace.get_current_span().get_span_context())
        return {}

    async def charge(e: ev.Event, ctx: HandlerContext) -> None:
        async with ctx.transaction() as uow:
            await uow.stage(an_event(ev.PAYMENT_DONE, e.orderId))

    c = loop(pool, {ev.ORDER_INITIATED: charge}, batch=frozenset({ev.ORDER_INITIATED}), prepare=prepare)
    await c._work_together([records])  # type: ignore[list-item]

    batch = by_name(spans, "process batch of 2")
    assert batch.parent is None and prepared_in == [batch.context]  # the batch's own work is in it
    assert {link.context.span_id for link in batch.links} == {p.span_id for p in parents.values()}
    handled = [s for s in spans.get_finished_spans() if s.name == f"process {ev.ORDER_INITIATED}"]
    assert len(handled) == 2
    for s in handled:
        parent = parents[s.attributes["tinysaga.order_id"]]
        assert s.parent is not None and s.parent.span_id == parent.span_id and s.context.trace_id == parent.trace_id
        assert [link.context.span_id for link in s.links] == [batch.context.span_id]
    # each event's next event goes on in that event's trace
    rows = pool.conn.outbox_headers()
    assert {r["traceparent"].split("-")[1] for r in rows} == {
        trace.format_trace_id(p.trace_id) for p in parents.values()
    }


async def test_a_batch_of_one_is_the_events_span_and_its_prepare_is_in_it(spans: InMemorySpanExporter) -> None:
    pool = FakePool()
    event = an_event()
    with tracing.span("request") as request:
        headers = tracing.context_headers()
    prepared_in: list[Any] = []

    async def prepare(events: list[ev.Event]) -> dict[Any, Any]:
        prepared_in.append(trace.get_current_span().get_span_context())
        return {}

    async def charge(e: ev.Event, ctx: HandlerContext) -> None:
        return None

    c = loop(pool, {ev.ORDER_INITIATED: charge}, batch=frozenset({ev.ORDER_INITIATED}), prepare=prepare)
    await c._work_together([[Record(event.to_bytes(), kafka_headers(headers))]])  # type: ignore[list-item]
    (handled,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert handled.name == f"process {ev.ORDER_INITIATED}" and not handled.links
    assert handled.parent is not None and handled.parent.span_id == request.get_span_context().span_id
    assert prepared_in == [handled.context]  # (Payment's wallet call is in the order's trace)


async def test_a_record_without_or_with_a_broken_context_starts_a_trace_of_its_own(
    spans: InMemorySpanExporter,
) -> None:
    pool = FakePool()
    handled_ids: list[Any] = []

    async def charge(e: ev.Event, ctx: HandlerContext) -> None:
        handled_ids.append(tracing.current_ids())

    c = loop(pool, {ev.ORDER_INITIATED: charge})
    for headers in ([], [("traceparent", b"garbage")], [("traceparent", b"\xff\xfe"), ("tracestate", b"\x00")]):
        await c._work_partition([Record(an_event().to_bytes(), headers)])  # type: ignore[list-item]
    roots = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert len(roots) == 3 and all(s.parent is None for s in roots)
    assert len({s.context.trace_id for s in roots}) == 3 and all(handled_ids)


async def test_an_unreadable_message_is_dead_lettered_in_a_span_of_its_trace(spans: InMemorySpanExporter) -> None:
    pool = FakePool()
    with tracing.span("request") as request:
        headers = tracing.context_headers()
    c = loop(pool, {ev.ORDER_INITIATED: lambda e, ctx: None})
    bad = Record(b"{not json", kafka_headers({"eventName": ev.ORDER_INITIATED, **headers}))
    await c._work_partition([bad])  # type: ignore[list-item]
    handled = by_name(spans, f"process {ev.ORDER_INITIATED}")
    assert handled.context.trace_id == request.get_span_context().trace_id
    (dead,) = pool.conn.outbox_headers()  # the dead letter goes on in the same trace
    assert dead["traceparent"].split("-")[2] == trace.format_span_id(handled.context.span_id)


# ---- the order's trace ------------------------------------------------------------------------------


async def test_the_order_keeps_the_trace_of_its_creation(spans: InMemorySpanExporter) -> None:
    db, uow = FakeOrders(), FakeUnitOfWork()
    create = create_order(db, uow, FakeCatalogue(P1=Product(Decimal("10.00"), 5)))
    with tracing.span("POST /api/orders") as request:
        row = await create("user-1", "P1", 1, "WALLET")
    assert row["trace_id"] == trace.format_trace_id(request.get_span_context().trace_id)
    tracing.use(None)  # off: no trace to keep
    assert (await create("user-1", "P1", 1, "WALLET"))["trace_id"] is None


async def test_the_sweepers_time_out_of_an_order_is_a_trace_that_names_the_orders(
    spans: InMemorySpanExporter,
) -> None:
    db, uow = FakeOrders(), FakeUnitOfWork()
    overdue = db.put(Status.INITIATED, deadline_in=-1, trace_id="c0" * 16)
    assert await TimeOut(begin=uow.transaction, repository=db.of, interval_seconds=1.0).sweep_once() == 1
    swept = by_name(spans, "time out")
    assert swept.parent is None
    assert swept.attributes == {"tinysaga.order_id": str(overdue), "tinysaga.order_trace_id": "c0" * 16}
    assert uow.names() == [ev.ORDER_TIMED_OUT]


# ---- sampling, the collector's address ------------------------------------------------------------


def test_a_trace_starts_at_a_request_or_a_message_never_at_a_bare_query() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=tracing.sampler(1.0))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT) as query:  # the relay's or sweeper's poll
        assert not query.is_recording()
    with tracer.start_as_current_span("POST /api/orders", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("INSERT", kind=SpanKind.CLIENT) as inside:
            assert inside.is_recording()
    with tracer.start_as_current_span("process", kind=SpanKind.CONSUMER) as message:
        assert message.is_recording()
    unsampled = tracing.context_of({"traceparent": f"00-{'3' * 32}-{'4' * 16}-00"})
    with tracer.start_as_current_span("process", context=unsampled, kind=SpanKind.CONSUMER) as follower:
        assert not follower.is_recording()  # the decision made where the trace started is kept
    assert [s.name for s in exporter.get_finished_spans()] == ["INSERT", "POST /api/orders", "process"]


def test_the_ratio_is_applied_where_a_trace_starts_only() -> None:
    tracer = TracerProvider(sampler=tracing.sampler(0.0)).get_tracer("t")
    with tracer.start_as_current_span("POST /api/orders", kind=SpanKind.SERVER) as root:
        assert not root.is_recording()
    sampled = tracing.context_of({"traceparent": f"00-{'5' * 32}-{'6' * 16}-01"})
    with tracer.start_as_current_span("process", context=sampled, kind=SpanKind.CONSUMER) as follower:
        assert follower.is_recording()


async def test_an_unsampled_span_names_no_trace_in_the_logs_or_on_the_order(spans: InMemorySpanExporter) -> None:
    unsampled = tracing.context_of({"traceparent": f"00-{'7' * 32}-{'8' * 16}-00"})
    with trace.use_span(trace.NonRecordingSpan(trace.get_current_span(unsampled).get_span_context())):
        assert tracing.current_ids() is None and tracing.current_trace_id() is None
        line = orjson.loads(JsonFormatter("order").format(logging.makeLogRecord({"msg": "x"})))
    assert "traceId" not in line


def test_the_collectors_address_is_its_base_url_or_the_traces_url() -> None:
    assert tracing.traces_url("http://127.0.0.1:4318") == "http://127.0.0.1:4318/v1/traces"
    assert tracing.traces_url("http://127.0.0.1:4318/") == "http://127.0.0.1:4318/v1/traces"
    assert tracing.traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"


def test_the_settings_name_the_collector_and_the_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TINYSAGA_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("TINYSAGA_TRACE_SAMPLE_RATIO", raising=False)
    assert Settings().otlp_endpoint is None and Settings().trace_sample_ratio == 1.0
    monkeypatch.setenv("TINYSAGA_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("TINYSAGA_TRACE_SAMPLE_RATIO", "0.25")
    s = Settings()
    assert s.otlp_endpoint == "http://127.0.0.1:4318" and s.trace_sample_ratio == 0.25
    monkeypatch.setenv("TINYSAGA_TRACE_SAMPLE_RATIO", "2")
    with pytest.raises(ValueError):
        Settings()
