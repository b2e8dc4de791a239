"""`new_id`: the ids the services make for orders, events, notifications and wallet transactions
are UUIDs of version 7 (ADR 64), which sort by the time they were made."""

from __future__ import annotations

import time
import uuid

from tinysaga.contracts import events as ev
from tinysaga.contracts.ids import new_id


def test_an_id_is_a_version_7_uuid_with_the_rfc_variant() -> None:
    for _ in range(1000):
        u = new_id()
        assert u.version == 7 and u.variant == uuid.RFC_4122
        assert uuid.UUID(str(u)) == u  # its text form reads back (the API's order ids)


def test_an_id_carries_the_millisecond_it_was_made() -> None:
    before = time.time_ns() // 1_000_000
    u = new_id()
    after = time.time_ns() // 1_000_000
    assert before <= u.int >> 80 <= after


def test_ids_of_later_milliseconds_sort_later_as_uuids_and_as_text() -> None:
    first = new_id()
    time.sleep(0.002)
    second = new_id()
    assert first < second and str(first) < str(second)  # text keys (order_id in the other services) too


def test_ids_made_in_the_same_millisecond_differ() -> None:
    assert len({new_id() for _ in range(10_000)}) == 10_000


def test_an_event_s_id_is_one() -> None:
    e = ev.new_event(ev.PAYMENT_DONE, correlation_id="o1", orderId="o1")
    assert e.eventId.version == 7
