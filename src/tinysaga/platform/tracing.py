"""OpenTelemetry tracing: one trace per order, from Order's POST /api/orders through the outbox, the
relay, every consumer, the wallet call and Notification (ADR 42).

Off unless `TINYSAGA_OTLP_ENDPOINT` is set. Off, nothing is installed (no SDK provider, no
instrumentation, the SDK is not even imported), no header is added to an outbox row or a Kafka
record, and every helper below returns at once after one check of `enabled`.

On, a process (`setup`, from the service bootstrap and the relay) has a tracer provider named
`tinysaga-<service>` that exports in batches over OTLP/HTTP (protobuf); FastAPI's server spans and
the asyncpg and aiohttp client spans come from their instrumentations. The W3C trace context
(`traceparent`, `tracestate`) travels:

- on internal HTTP (Payment → Wallet, Order → Inventory), in the request's headers (aiohttp's
  instrumentation injects it, the ASGI one extracts it);
- across the outbox: `context_headers` captures the staging span's context into the outbox row's
  `headers` (platform/uow.py), the send to Kafka (by the publisher after the commit, or by the
  relay) is a span that is its child (`start_publish`) and puts its context in the record's headers;
- to each consumer: `consume_span` extracts it from the record's headers and handles the event in
  a span that is its child. Work done once for a batch of events (Payment's one wallet call for a
  poll's charges) is a span of its own (`batch_span`) with a link to each event's context, and each
  event's span has a link back to it.

The event's envelope (SPEC section 3) is not touched: the context is in headers only.

Sampling is decided once per trace, where it starts (a request, a message without a context, the
sweeper's time-out of an order), with `TINYSAGA_TRACE_SAMPLE_RATIO`; everything after follows the
parent's decision. A database query or an HTTP call outside any span starts no trace (the relay's
and the sweeper's polls, health checks).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler

    from tinysaga.platform.settings import Settings

# Not traced: the probes and the scrapes (the supervisor's, the gateway's, Prometheus')
EXCLUDED_URLS = "/health/,/metrics"
CONTEXT_HEADERS = ("traceparent", "tracestate")

_propagator = TraceContextTextMapPropagator()
_tracer: trace.Tracer | None = None
enabled = False  # one cheap check everywhere: is tracing on in this process?
_NOOP: contextlib.nullcontext[None] = contextlib.nullcontext()


# ---- set-up ---------------------------------------------------------------------------------------


def setup(service: str, settings: Settings) -> bool:
    """Tracing on in this process when the settings name an OTLP endpoint (and only then; once)."""
    if not settings.otlp_endpoint:
        return False
    if enabled:
        return True
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = OTLPSpanExporter(endpoint=traces_url(settings.otlp_endpoint))
    start(service, BatchSpanProcessor(exporter), settings.trace_sample_ratio)
    return True


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector given by its base URL (`http://host:4318`), or as it is
    when it already names the traces path."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def start(service: str, processor: SpanProcessor, ratio: float = 1.0) -> TracerProvider:
    """Install the tracer provider of `tinysaga-<service>` with `processor`, globally (for the
    instrumentations), and instrument asyncpg and aiohttp; `instrument_app` does each FastAPI app."""
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource.create({"service.name": f"tinysaga-{service}"}), sampler=sampler(ratio))
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    AsyncPGInstrumentor().instrument(tracer_provider=provider)
    AioHttpClientInstrumentor().instrument(tracer_provider=provider)
    use(provider.get_tracer("tinysaga"))
    return provider


def use(tracer: trace.Tracer | None) -> None:
    """The tracer of the helpers below (None: tracing off)."""
    global _tracer, enabled
    _tracer, enabled = tracer, tracer is not None


def sampler(ratio: float) -> Sampler:
    """Follow the parent's decision; where a trace starts, keep `ratio` of them, but never start one
    at a client span (a query or a call made outside any request, message or sweep)."""
    from opentelemetry.sdk.trace.sampling import (
        Decision,
        ParentBased,
        Sampler,
        SamplingResult,
        TraceIdRatioBased,
    )

    class _Roots(Sampler):
        def __init__(self) -> None:
            self.ratio = TraceIdRatioBased(ratio)

        def should_sample(
            self,
            parent_context: Context | None,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            if kind in (SpanKind.CLIENT, SpanKind.PRODUCER):
                return SamplingResult(Decision.DROP)
            return self.ratio.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

        def get_description(self) -> str:
            return f"TinySagaRoots{{{ratio}}}"

    return ParentBased(root=_Roots())


def instrument_app(app: Any) -> None:
    """Server spans for a FastAPI app (not for its probes and scrapes); a no-op when tracing is off."""
    if not enabled:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    provider = trace.get_tracer_provider()
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls=EXCLUDED_URLS, exclude_spans=["receive", "send"]
    )


# ---- the context, in an outbox row's headers and a Kafka record's --------------------------------


def context_headers() -> dict[str, str]:
    """The current span's W3C context (`traceparent`, `tracestate`), for an outbox row's headers;
    empty when tracing is off or no span is current."""
    if not enabled:
        return {}
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier


def context_of(headers: Mapping[str, Any]) -> Context:
    """The W3C context in headers: an outbox row's (str values) or a Kafka record's (bytes values)."""
    carrier = {}
    for name in CONTEXT_HEADERS:
        v = headers.get(name)
        if v is not None:
            carrier[name] = v.decode("ascii", "replace") if isinstance(v, bytes) else str(v)
    return _propagator.extract(carrier)


def kafka_context(headers: Sequence[tuple[str, bytes]] | None) -> Context:
    return context_of({k: v for k, v in headers or () if k in CONTEXT_HEADERS})


def _valid(ctx: Context) -> bool:
    return trace.get_current_span(ctx).get_span_context().is_valid


# ---- spans ---------------------------------------------------------------------------------------


def start_publish(topic: str, key: str, headers: dict[str, str]) -> Span | None:
    """The send of an outbox row to Kafka (by the publisher or the relay) as a span, child of the
    context the row was staged in; the row's `headers` then carry the send span's context instead
    (for the consumers). None,
    headers untouched, when tracing is off or the row has no context."""
    if _tracer is None:
        return None
    parent = context_of(headers)
    if not _valid(parent):
        return None
    name = headers.get("eventName", "event")
    span = _tracer.start_span(
        f"send {name}",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
            "messaging.kafka.message.key": key,
            "tinysaga.event_name": name,
        },
    )
    _propagator.inject(headers, context=trace.set_span_in_context(span))
    return span


def end_publish(spans: Sequence[Span], error: BaseException | None = None) -> None:
    for span in spans:
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()


def consume_span(
    service: str, group: str, record: Any, event: Any = None, *, name: str | None = None, batch: Span | None = None
) -> contextlib.AbstractContextManager[Any]:
    """The span in which a consumer handles one record: a child of the context in its headers, with
    the event's ids as attributes, and a link to the batch span it was handled in (if any)."""
    if _tracer is None:
        return _NOOP
    event_name = event.eventName if event is not None else name or "?"
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": record.topic,
        "messaging.destination.partition.id": str(record.partition),
        "messaging.kafka.offset": record.offset,
        "messaging.consumer.group.name": group,
        "tinysaga.service": service,
        "tinysaga.event_name": event_name,
    }
    if event is not None:
        attributes["messaging.message.id"] = str(event.eventId)
        attributes["tinysaga.correlation_id"] = event.correlationId
        if event.orderId:
            attributes["tinysaga.order_id"] = event.orderId
    links = [Link(batch.get_span_context())] if batch is not None else None
    return _tracer.start_as_current_span(
        f"process {event_name}",
        context=kafka_context(record.headers),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=links,
    )


@contextlib.contextmanager
def batch_span(service: str, group: str, records: Sequence[Any]) -> Iterator[Span | None]:
    """The span of the work done once for a batch of events (its own trace), linked to each event's
    context; yields it (None when tracing is off) for the events' spans to link back to."""
    if _tracer is None:
        yield None
        return
    links = []
    for record in records:
        span_context = trace.get_current_span(kafka_context(record.headers)).get_span_context()
        if span_context.is_valid:
            links.append(Link(span_context))
    with _tracer.start_as_current_span(
        f"process batch of {len(records)}",
        context=Context(),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.batch.message_count": len(records),
            "messaging.consumer.group.name": group,
            "tinysaga.service": service,
        },
        links=links,
    ) as span:
        yield span


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A span of the service's own work, child of the current one or the start of a trace (the
    sweeper's time-out of an order); attributes None are left out."""
    if _tracer is None:
        return _NOOP
    attrs = {f"tinysaga.{k}": v for k, v in attributes.items() if v is not None}
    return _tracer.start_as_current_span(name, attributes=attrs)


# ---- ids, for the logs and the order --------------------------------------------------------------


def current_ids() -> tuple[str, str] | None:
    """(traceId, spanId) of the current span, in hex, or None (tracing off, no span, or one of a
    trace that is not sampled, so never exported)."""
    if not enabled:
        return None
    ctx = trace.get_current_span().get_span_context()
    if not (ctx.is_valid and ctx.trace_flags.sampled):
        return None
    return trace.format_trace_id(ctx.trace_id), trace.format_span_id(ctx.span_id)


def current_trace_id() -> str | None:
    ids = current_ids()
    return ids[0] if ids else None
