"""The live streams' wake-ups without a NOTIFY (ADR 53): while a stream is open, Order reads the
watched orders' versions every `poll` seconds and wakes each stream whose order is past the
version it last told its client; with no stream open, it reads nothing."""

from __future__ import annotations

import asyncio

from tinysaga.order.adapters import StatusFanout


class Versions:
    """The orders' current versions, and each reading asked for."""

    def __init__(self, **versions: int) -> None:
        self.now = versions
        self.readings: list[list[str]] = []

    async def __call__(self, order_ids: list[str]) -> dict[str, int]:
        self.readings.append(sorted(order_ids))
        return {o: v for o, v in self.now.items() if o in order_ids}


def test_a_stream_is_woken_only_once_its_order_is_past_what_it_saw() -> None:
    fanout = StatusFanout()
    a, b = fanout.watch("o-1"), fanout.watch("o-1")
    fanout.saw("o-1", a, 3)
    fanout.saw("o-1", b, 2)
    fanout.changed({"o-1": 3})
    assert not a.is_set() and b.is_set()  # b had told its client only up to 2
    fanout.changed({"o-1": 4})
    assert a.is_set()


def test_a_stream_that_has_not_read_yet_is_woken_by_any_version() -> None:
    fanout = StatusFanout()
    wake = fanout.watch("o-1")
    fanout.changed({"o-1": 1})
    assert wake.is_set()  # it re-reads: nothing told twice (the stream compares versions itself)


def test_streams_that_left_are_forgotten() -> None:
    fanout = StatusFanout()
    wake = fanout.watch("o-1")
    fanout.unwatch("o-1", wake)
    fanout.saw("o-1", wake, 5)  # a late call of a stream that left: ignored
    assert fanout.waiters == {}


async def test_it_reads_the_watched_orders_while_streams_are_open_and_nothing_otherwise() -> None:
    versions = Versions(**{"o-1": 1, "o-2": 7})
    fanout = StatusFanout(poll=0.01)
    task = asyncio.create_task(fanout.run(versions))
    try:
        await asyncio.sleep(0.05)
        assert versions.readings == []  # nobody watching: no query
        wake = fanout.watch("o-1")
        fanout.saw("o-1", wake, 1)
        await asyncio.sleep(0.05)
        assert versions.readings and all(r == ["o-1"] for r in versions.readings)
        assert not wake.is_set()
        versions.now["o-1"] = 2  # the order changed (on whichever replica)
        await asyncio.wait_for(wake.wait(), 1)
        fanout.unwatch("o-1", wake)
        await asyncio.sleep(0.05)
        asked = len(versions.readings)
        await asyncio.sleep(0.05)
        assert len(versions.readings) == asked  # the last stream left: no more queries
    finally:
        task.cancel()


async def test_a_failed_reading_is_retried() -> None:
    class Flaky(Versions):
        async def __call__(self, order_ids: list[str]) -> dict[str, int]:
            if not self.readings:
                self.readings.append(order_ids)
                raise OSError("connection lost")
            return await super().__call__(order_ids)

    versions = Flaky(**{"o-1": 2})
    fanout = StatusFanout(poll=0.01)
    wake = fanout.watch("o-1")
    fanout.saw("o-1", wake, 1)
    task = asyncio.create_task(fanout.run(versions))
    try:
        await asyncio.wait_for(wake.wait(), 3)
    finally:
        task.cancel()
