"""The bench's fan-out probe: events no step handles, what each process spends per event, and the
report's section."""

from __future__ import annotations

import orjson
from bench import fanout

from tinysaga.contracts import saga
from tinysaga.contracts.events import ALL_NAMES


def test_no_step_handles_the_probe_event() -> None:
    assert fanout.PROBE_EVENT not in ALL_NAMES
    assert all(fanout.PROBE_EVENT not in s.triggers for s in saga.STEPS)


def test_a_probe_record_is_named_by_its_header_and_has_a_saga_events_size() -> None:
    key, body, headers = fanout.probe_record(7)
    assert dict(headers)["eventName"] == fanout.PROBE_EVENT.encode()
    assert dict(headers)["correlationId"] == key
    parsed = orjson.loads(body)
    assert parsed["eventName"] == fanout.PROBE_EVENT and parsed["seq"] == 7 and parsed["orderId"] == key.decode()
    assert len(body) == fanout.PAYLOAD
    assert fanout.probe_record(7)[0] != key  # each lands on any partition


def test_per_event_takes_the_idle_cpu_out_scaled_to_the_window() -> None:
    # idle: kafka 0.2 s in 10 s; busy window 20 s: 0.4 s of that is idle, 1.0 - 0.4 = 0.6 s for 300 events
    by = fanout.per_event({"kafka": 0.2, "payment": 0.05}, 10.0, {"kafka": 1.0, "payment": 0.4}, 20.0, 300)
    assert by == {"kafka": 2.0, "payment": 1.0}
    assert list(by) == ["kafka", "payment"]  # largest first


def test_per_event_reads_less_than_idle_as_nothing_and_a_new_process_from_zero() -> None:
    by = fanout.per_event({"wallet": 0.1}, 10.0, {"wallet": 0.08, "relay": 0.03}, 10.0, 100)
    assert by == {"relay": 0.3, "wallet": 0.0}
    assert fanout.per_event({}, 10.0, {"kafka": 1.0}, 10.0, 0) == {}


def report(probe: dict | None, order_events: float | None = 3.0) -> dict:
    per_saga = {"messagesByTopic": {saga.ORDER_TOPIC: order_events}} if order_events else {}
    return {"fanOut": probe, "phases": [{"name": "light", "cpuMsPerSaga": 35.5, "perSaga": per_saga}]}


PROBE = {
    "rate": 15.0,
    "seconds": 20.0,
    "events": 300,
    "msPerEventByProcess": {"kafka": 1.2, "payment": 0.4, "wallet": 0.0},
    "msPerEvent": 1.6,
}


def test_the_report_shows_each_process_and_the_light_sagas_share() -> None:
    text = "\n".join(fanout.lines(report(PROBE)))
    assert "| kafka | 1.2 |" in text and "| payment | 0.4 |" in text and "| all | 1.6 |" in text
    assert "wallet" not in text  # nothing per event
    assert "put 3 events on `order-topic`: about 4.8 ms of its 35.5 ms" in text


def test_the_report_has_no_section_without_a_probe_and_no_share_without_the_light_count() -> None:
    assert fanout.lines(report(None)) == []
    assert fanout.lines(report({**PROBE, "events": 0})) == []
    text = "\n".join(fanout.lines(report(PROBE, order_events=None)))
    assert "| all | 1.6 |" in text and "At light load" not in text
