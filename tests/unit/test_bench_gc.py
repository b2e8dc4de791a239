"""The bench reads each service's garbage collections (`tinysaga_gc_pause_seconds`, ADR 60) before
the first measured phase and after the last, and reports the full ones and the longest."""

from __future__ import annotations

from bench import run as bench
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from tinysaga.platform.metrics import GC_PAUSE_BUCKETS as BUCKETS


def exposition(pauses: dict[str, list[float]]) -> str:
    """A service's /metrics text after these pauses (seconds), by generation, plus another metric."""
    registry = CollectorRegistry()
    h = Histogram("tinysaga_gc_pause_seconds", "pauses", ["service", "generation"], buckets=BUCKETS, registry=registry)
    other = Histogram("tinysaga_saga_step_seconds", "steps", ["step"], registry=registry)
    other.labels("charge").observe(3.0)
    for gen, seconds in pauses.items():
        for s in seconds:
            h.labels("payment", gen).observe(s)
    return generate_latest(registry).decode()


def test_a_reading_is_the_count_the_seconds_and_the_buckets_by_generation() -> None:
    reading = bench.gc_reading(exposition({"0": [0.0004, 0.0003], "2": [0.06]}))
    assert set(reading) == {"0", "2"}
    assert reading["0"]["count"] == 2 and abs(reading["0"]["seconds"] - 0.0007) < 1e-9
    assert reading["2"]["buckets"]["0.05"] == 0 and reading["2"]["buckets"]["0.1"] == 1
    assert bench.gc_reading("# no such metric\n") == {}


def test_the_run_counts_only_what_happened_between_the_readings() -> None:
    before = {"payment": bench.gc_reading(exposition({"0": [0.0004], "2": [0.3]}))}  # the start's long one
    after = {
        "payment": bench.gc_reading(exposition({"0": [0.0004, 0.0006, 0.0002], "1": [0.001], "2": [0.3, 0.004]})),
        "order-1": bench.gc_reading(exposition({"0": [0.0001]})),
    }
    gc = bench.gc_during(before, after)
    assert list(gc) == ["order-1", "payment"]
    assert gc["payment"] == {
        "full": 1,
        "fullMs": 4.0,
        "longestFullMsAtMost": 5.0,  # the 300 ms one came before the run
        "young": 3,
        "youngMs": 1.8,
    }
    assert gc["order-1"]["full"] == 0 and gc["order-1"]["longestFullMsAtMost"] is None
    assert gc["order-1"]["young"] == 1


def test_a_full_collection_past_the_last_bound_is_said_so() -> None:
    gc = bench.gc_during({}, {"payment": bench.gc_reading(exposition({"2": [0.9]}))})
    assert gc["payment"]["longestFullMsAtMost"] == float("inf")
    text = "\n".join(bench.gc_lines(gc))
    assert "| payment | 1 | 900.0 | over 500 | 0 | 0.0 |" in text


def test_the_report_has_a_line_per_service_process_and_none_for_an_older_run() -> None:
    gc = bench.gc_during({}, {"payment": bench.gc_reading(exposition({"2": [0.015, 0.003], "0": [0.0005]}))})
    text = "\n".join(bench.gc_lines(gc))
    assert "## Garbage collection in the services during the load" in text
    assert "| payment | 2 | 18.0 | 20 | 1 | 0.5 |" in text
    assert bench.gc_lines({}) == []
