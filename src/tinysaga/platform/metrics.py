"""The metrics every service exposes on its internal `/metrics` (Prometheus' text format; the
gateway never routes that path). Names are `tinysaga_*`; `service` is the process's service, and
Prometheus adds `instance` for the replica. The saga's own figures (durations, steps, stuck sagas)
are Order's, in `order.handlers`; what a scrape computes from the database is registered per
service as a scrape hook (`Runtime.scrape_hooks`)."""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger("tinysaga.metrics")

# The consumer loop: what became of each event it read, by name.
HANDLED, IGNORED, DUPLICATE, DEAD_LETTERED = "handled", "ignored", "duplicate", "dead_lettered"
EVENTS = Counter(
    "tinysaga_events_total",
    "events read by a service's consumer: handled, ignored (not for this service), duplicate"
    " (its eventId already recorded) or dead_lettered",
    ["service", "event", "outcome"],
)
CONSUMER_LAG = Gauge(
    "tinysaga_consumer_lag",
    "records in the partition past the consumer's position (its group's backlog there)",
    ["service", "group", "topic", "partition"],
)
OUTBOX_ROWS = Gauge("tinysaga_outbox_rows", "rows waiting in the service's outbox for the relay", ["service"])
OUTBOX_OLDEST = Gauge(
    "tinysaga_outbox_oldest_seconds", "age of the oldest row of the service's outbox (0 when empty)", ["service"]
)

# The cyclic garbage collector: while it runs, the process answers nothing (ADR 60).
GC_PAUSE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5)
GC_PAUSE = Histogram(
    "tinysaga_gc_pause_seconds",
    "time the process stood still in a cyclic garbage collection, by generation (2: a full one)",
    ["service", "generation"],
    buckets=GC_PAUSE_BUCKETS,
)
GC_FROZEN = Gauge(
    "tinysaga_gc_frozen_objects",
    "objects made while the process started, put out of the collector's reach once it had (gc.freeze)",
    ["service"],
)


class GcPauses:
    """A `gc.callbacks` entry that times each collection into GC_PAUSE."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            GC_PAUSE.labels(self.service, str(info["generation"])).observe(time.perf_counter() - self.started)


def watch_gc(service: str) -> None:
    """Time this process's collections and count its frozen objects (once per process)."""
    if not any(isinstance(cb, GcPauses) for cb in gc.callbacks):
        gc.callbacks.append(GcPauses(service))
    GC_FROZEN.labels(service).set_function(gc.get_freeze_count)


def count_event(service: str, event: str, outcome: str, n: int = 1) -> None:
    EVENTS.labels(service, event, outcome).inc(n)


async def sample_outbox(service: str, db: asyncpg.Pool | asyncpg.Connection) -> None:
    """The outbox's backlog and the age of its oldest row, read now (one query)."""
    row = await db.fetchrow(
        "SELECT count(*) AS n, coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0) AS age FROM outbox"
    )
    assert row is not None
    OUTBOX_ROWS.labels(service).set(row["n"])
    OUTBOX_OLDEST.labels(service).set(float(row["age"]))
