"""The bench's fan-out probe: events no step handles, what each process spends per event, and the
report's section."""

from __future__ import annotations

import asyncio
import time

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


def phase(name: str, rate: float, cpu: float, order_events: float | None = 3.0, completed: float = 0) -> dict:
    per_saga = {"messagesByTopic": {saga.ORDER_TOPIC: order_events}} if order_events else {}
    return {
        "name": name,
        "offeredRate": rate,
        "completedPerSecond": completed or 0.997 * rate,
        "cpuMsPerSaga": cpu,
        "perSaga": per_saga,
    }


def report(runs: list[dict] | None, phases: list[dict] | None = None) -> dict:
    phases = phases if phases is not None else [phase("light", 5, 35.5), phase("150/s", 150, 11.8)]
    return {"fanOut": None if runs is None else {"seconds": 20.0, "rates": runs}, "phases": phases}


LIGHT = {
    "rate": 15.0,
    "events": 300,
    "msPerEventByProcess": {"kafka": 1.2, "payment": 0.4, "wallet": 0.0},
    "msPerEvent": 1.6,
}
LOADED = {"rate": 450.0, "events": 9000, "msPerEventByProcess": {"kafka": 0.3, "payment": 0.1}, "msPerEvent": 0.4}


def test_the_report_shows_each_process_at_each_rate_and_each_phases_share() -> None:
    text = "\n".join(fanout.lines(report([LIGHT, LOADED])))
    assert "| process | ms per event at 15/s | ms per event at 450/s |" in text
    assert "| kafka | 1.2 | 0.3 |" in text and "| payment | 0.4 | 0.1 |" in text and "| all | 1.6 | 0.4 |" in text
    assert "wallet" not in text  # nothing per event at any rate
    assert "At light load a saga put 3 events on `order-topic` (15 a second): up to about 4.8 ms of its 35.5 ms" in text
    assert "At 150/s a saga put 3 events on `order-topic` (450 a second): up to about 1.2 ms of its 11.8 ms" in text


def test_a_rate_no_phase_came_at_has_no_share_and_no_probe_no_section() -> None:
    assert fanout.lines(report(None)) == []
    assert fanout.lines(report([{**LIGHT, "events": 0}])) == []
    text = "\n".join(fanout.lines(report([LIGHT], phases=[phase("light", 5, 35.5, order_events=None)])))
    assert "| all | 1.6 |" in text and "a saga put" not in text
    assert "a saga put" not in "\n".join(fanout.lines(report([{**LIGHT, "rate": 100.0}])))
    # offered 150/s, it completed 99.6/s (the rest turned away): its events did not come at 450 a second
    saturated = [phase("light", 5, 35.5), phase("150/s", 150, 17.1, completed=99.6)]
    assert "At 150/s" not in "\n".join(fanout.lines(report([LIGHT, LOADED], phases=saturated)))


class AckingLater:
    """A producer whose sends are acknowledged a little later, as Kafka's are."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, float]] = []
        self.acked = 0

    async def send(self, topic: str, *, value: bytes, key: bytes, headers: list) -> asyncio.Future:
        self.sent.append((topic, dict(headers)["eventName"], time.monotonic()))
        ack = asyncio.get_running_loop().create_future()

        def done() -> None:
            self.acked += 1
            ack.set_result(None)

        asyncio.get_running_loop().call_later(0.02, done)
        return ack


def test_the_probe_sends_at_its_rate_open_loop_and_waits_for_every_acknowledgement() -> None:
    producer = AckingLater()
    sent = asyncio.run(fanout._send(producer, rate=100.0, seconds=0.3))
    assert sent == 30 == len(producer.sent) == producer.acked
    assert {t for t, _, _ in producer.sent} == {saga.ORDER_TOPIC}
    assert {n for _, n, _ in producer.sent} == {fanout.PROBE_EVENT.encode()}
    times = [t for _, _, t in producer.sent]
    assert 0.25 <= times[-1] - times[0] < 1.0  # paced over the window, not sent at once (a busy host may run late)
