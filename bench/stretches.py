"""Where a saga's time goes (ADR 72): each placed saga's latency cut at the records its services
sent, read back from the broker with the time each producer gave them (Kafka's CreateTime, on the
same host clock as PostgreSQL's). A stretch from one record to the next is the next step's whole
share: the broker's delivery, the wait to be polled, the handling and the commit, up to the send
of what it decided. The first stretch runs from the order's first history row to its first
record; the last, from its last record to its last history row."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

FIRST_ROW, LAST_ROW = "first row", "last row"


@dataclass(frozen=True)
class Sent:
    """A record of the saga's topics: the order it is about (its key), its event, when it was sent."""

    order_id: str
    name: str
    at_ms: float


def stretches(sagas: dict[str, tuple[float, float]], sent: Iterable[Sent]) -> dict[str, dict[str, Any]]:
    """For sagas given as {orderId: (first row, last row)} in ms since the epoch, each stretch by its
    label ("A → B"): how many sagas had it, and its p50 and p99 in ms. A record sent outside its
    saga's rows (before the first, after the last) is not one of its steps. Labels in the order the
    sagas met them (by their median place, then how many had them)."""
    mine: dict[str, list[Sent]] = {}
    for s in sent:
        if s.order_id in sagas:
            mine.setdefault(s.order_id, []).append(s)
    spans: dict[str, list[float]] = {}
    places: dict[str, list[int]] = {}
    for order_id, (first, last) in sagas.items():
        steps = sorted((s for s in mine.get(order_id, ()) if first <= s.at_ms <= last), key=lambda s: s.at_ms)
        marks = [(FIRST_ROW, first), *((s.name, s.at_ms) for s in steps), (LAST_ROW, last)]
        for place, ((a, ta), (b, tb)) in enumerate(pairwise(marks)):
            label = f"{a} → {b}"
            spans.setdefault(label, []).append(tb - ta)
            places.setdefault(label, []).append(place)
    order = sorted(spans, key=lambda label: (statistics.median(places[label]), -len(spans[label])))
    return {
        label: {"n": len(spans[label]), "p50": _at(spans[label], 0.50), "p99": _at(spans[label], 0.99)}
        for label in order
    }


def _at(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def lines(phases: list[dict[str, Any]]) -> list[str]:
    """The report's table: a row per phase, a column per stretch (the most common ones, in the order
    the sagas met them), each cell p50 / p99 in ms."""
    counts: dict[str, int] = {}
    places: dict[str, int] = {}
    for p in phases:
        for i, (label, s) in enumerate(p.get("stretchesMs", {}).items()):
            counts[label] = counts.get(label, 0) + s["n"]
            places.setdefault(label, i)
    if not counts:
        return []
    placed = sum(p.get("placed", 0) for p in phases if p.get("stretchesMs"))
    labels = sorted((label for label in counts if counts[label] * 10 >= placed), key=lambda label: places[label])
    out = [
        "## Where a saga's time goes",
        "",
        "Each placed saga's latency cut at the records its services sent on the way, read back from the"
        " broker with the time each producer sent them (Kafka's CreateTime; one clock with the database's"
        " on this co-located stack). A stretch from one record to the next is the next step's whole share:"
        " the broker's delivery, the wait to be polled, the handling and its commit, up to the send of what"
        " it decided. The first runs from the order's first history row, the last to its last row."
        " Each cell: p50 / p99 in ms.",
        "",
        "| phase | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for p in phases:
        got = p.get("stretchesMs", {})
        cells = [f"{got[label]['p50']} / {got[label]['p99']}" if label in got else "-" for label in labels]
        out.append(f"| {p['name']} | " + " | ".join(cells) + " |")
    return [*out, ""]
