"""Tracing end to end (ADR 42): a stack with `TINYSAGA_OTLP_ENDPOINT` pointing at an OTLP/HTTP
receiver that this test runs (a real endpoint, decoding the protobuf `ExportTraceServiceRequest`
the services' exporters send); one order placed through the gateway; the spans that arrive form
one trace, rooted at Order's POST /api/orders, through each event's send to Kafka (by the process
that wrote it, after its commit: ADR 51), Payment, Wallet, Inventory,
Order's tracking consumer and Notification; the admin sees the order's trace id and Order's log
line about the order names it.

The test stack runs as the product does by default, with tracing off; this test brings up a
scratch stack of its own with tracing on (about a minute)."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from tests.support import ApiUser, login, register, scratch_stack
from tinysaga.contracts import events as ev
from tinysaga.contracts import saga
from tinysaga.platform.settings import Settings, get_settings

PORT_OFFSET = 200  # the scratch stack's ports: the test stack's + this


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]


class OtlpReceiver:
    """An OTLP/HTTP traces endpoint (`POST /v1/traces`, protobuf) keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
                    self.send_response(404 if self.path != "/v1/traces" else 415)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.keep(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def keep(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    attributes = {a.key: _value(a.value) for a in s.attributes}
                    span = Span(
                        resource.get("service.name", "?"),
                        s.name,
                        SpanProto.SpanKind.Name(s.kind),
                        s.trace_id.hex(),
                        s.span_id.hex(),
                        s.parent_span_id.hex(),
                        attributes,
                    )
                    with self.lock:
                        self.spans.append(span)

    def trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(v: Any) -> Any:
    which = v.WhichOneof("value")
    return getattr(v, which) if which else None


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture(scope="module")
def traced(settings: Settings, receiver: OtlpReceiver) -> Iterator[Settings]:
    with scratch_stack(settings, "trace-stack", PORT_OFFSET, TINYSAGA_OTLP_ENDPOINT=receiver.url) as s:
        yield s


def _of(spans: list[Span], service: str, kind: str, name: str | None = None) -> list[Span]:
    return [s for s in spans if s.service == service and s.kind == kind and (name is None or s.name == name)]


# What starts Payment's and Inventory's steps: the events in choreography, Order's commands in
# orchestration (SPEC section 5); the trace goes through Order between them then.
ORCHESTRATED = get_settings().saga_mode == saga.ORCHESTRATION
CHARGE = ev.CHARGE_PAYMENT if ORCHESTRATED else ev.ORDER_INITIATED
RESERVE = ev.RESERVE_STOCK if ORCHESTRATED else ev.PAYMENT_DONE
# What the order's trace must hold: Order's request (the gateway-facing service), its send to Kafka
# after the commit, Payment's consumer and its call to Wallet (Wallet's server span), Inventory's
# reservation, Order's tracking consumer and Notification.
EXPECTED = {
    "order's request": lambda t: _of(t, "tinysaga-order", "SPAN_KIND_SERVER", "POST /api/orders"),
    "order's send": lambda t: _of(t, "tinysaga-order", "SPAN_KIND_PRODUCER", f"send {CHARGE}"),
    "payment": lambda t: _of(t, "tinysaga-payment", "SPAN_KIND_CONSUMER", f"process {CHARGE}"),
    "wallet": lambda t: _of(t, "tinysaga-wallet", "SPAN_KIND_SERVER"),
    "inventory": lambda t: _of(t, "tinysaga-inventory", "SPAN_KIND_CONSUMER", f"process {RESERVE}"),
    "order's update": lambda t: _of(t, "tinysaga-order", "SPAN_KIND_CONSUMER", "process INVENTORY_RESERVED"),
    "notification": lambda t: _of(t, "tinysaga-notification", "SPAN_KIND_CONSUMER"),
}
# the hops in order, each event sent by the process that wrote it: request -> send -> Payment -> send
# -> (Order -> send ->) Inventory -> send -> Order's update
HOPS = [
    "tinysaga-order: POST /api/orders",
    f"tinysaga-order: send {CHARGE}",
    f"tinysaga-payment: process {CHARGE}",
    "tinysaga-payment: send PAYMENT_DONE",
    *(["tinysaga-order: process PAYMENT_DONE", f"tinysaga-order: send {RESERVE}"] if ORCHESTRATED else []),
    f"tinysaga-inventory: process {RESERVE}",
    "tinysaga-inventory: send INVENTORY_RESERVED",
    "tinysaga-order: process INVENTORY_RESERVED",
]


def _missing(spans: list[Span]) -> list[str]:
    """What the trace does not hold yet: an expected part, or the parent of a span it holds."""
    ids = {s.span_id for s in spans}
    gaps = [part for part, find in EXPECTED.items() if not find(spans)]
    gaps += [f"the parent of {s.service} {s.name!r}" for s in spans if s.parent_id and s.parent_id not in ids]
    return gaps


def test_one_order_is_one_trace_from_the_request_to_the_notification(traced: Settings, receiver: OtlpReceiver) -> None:
    base = f"http://127.0.0.1:{traced.gateway_port}"
    admin = login(ApiUser(base, traced.admin_email, traced.effective_admin_password))
    user = register(base, tag="traced")
    user.deposit(100)
    r = admin.post(
        "/api/admin/products",
        {"productId": "traced-pen", "name": "A traced pen", "type": "test", "price": 4.5, "availableCount": 3},
    )
    assert r.status_code == 201, r.text
    order_id = user.place("traced-pen", 2)
    assert user.wait_terminal(order_id)["orderStatus"] == "PLACED"

    # the admin sees the order's trace
    sagas = admin.get("/api/admin/sagas?limit=10").json()
    (saga,) = [s for s in sagas if s["orderId"] == order_id]
    trace_id = saga["traceId"]
    assert isinstance(trace_id, str) and len(trace_id) == 32
    assert "traceId" not in user.get(f"/api/orders/{order_id}").json()  # the owner's view is unchanged

    # its spans arrive (each service exports in batches every few seconds), complete
    deadline = time.monotonic() + 90
    while _missing(spans := receiver.trace(trace_id)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not _missing(spans), f"missing {_missing(spans)}; got {sorted({(s.service, s.name) for s in spans})}"

    # one trace: a single root, Order's POST /api/orders; every other span a descendant of it
    roots = [s for s in spans if not s.parent_id]
    assert [(r.service, r.name) for r in roots] == [("tinysaga-order", "POST /api/orders")]
    by_id = {s.span_id: s for s in spans}

    def chain(s: Span) -> list[str]:
        names = [f"{s.service}: {s.name}"]
        while s.parent_id:
            s = by_id[s.parent_id]
            names.append(f"{s.service}: {s.name}")
        return names[::-1]

    update = EXPECTED["order's update"](spans)[0]
    hops = [n for n in chain(update) if ": send " in n or ": process " in n or n.endswith("POST /api/orders")]
    assert hops == HOPS
    for wallet in EXPECTED["wallet"](spans):  # Payment's call, with its context
        assert f"tinysaga-payment: process {CHARGE}" in chain(wallet)
    for consumer in _of(spans, "tinysaga-notification", "SPAN_KIND_CONSUMER"):
        assert consumer.attributes["tinysaga.order_id"] == order_id
    assert any(s.service == "tinysaga-order" and s.kind == "SPAN_KIND_CLIENT" for s in spans)  # its SQL

    # the log line about the order, made in its request, names the trace
    lines = []
    for log in traced.logs_dir.glob("order-*.log"):
        for raw in log.read_text().splitlines():
            if order_id in raw and raw.startswith("{"):
                lines.append(orjson.loads(raw))
    initiated = [ln for ln in lines if ln.get("orderId") == order_id and "initiated" in ln["msg"]]
    assert initiated and all(ln["traceId"] == trace_id and len(ln["spanId"]) == 16 for ln in initiated), lines

    # the probes and scrapes are never traced, nor a query made outside a request or a message
    # (the relay's and the sweeper's polls)
    assert httpx.get(f"http://127.0.0.1:{traced.port_of('wallet')}/health/ready").status_code == 200
    time.sleep(6)  # longer than an export's batch delay
    with receiver.lock:
        everything = list(receiver.spans)
    assert not [s for s in everything if "/health" in s.name or "/metrics" in s.name]
    assert not [s for s in everything if s.kind == "SPAN_KIND_CLIENT" and not s.parent_id]
