"""The consumer's poll loop, driven by a scripted consumer and clock: how often it reads its lag,
a consumer that gathers (a side channel) taking what comes within its gather as it comes,
handling it with the poll, and having its fetches wait at the broker while records come, and one
that does not gather pacing its next fetch to its handling under load (ADR 71)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition

from tinysaga.contracts import events as ev
from tinysaga.platform import consumer as consumer_module
from tinysaga.platform.consumer import ConsumerLoop
from tinysaga.platform.settings import Settings

TP = TopicPartition("order-topic", 0)


@dataclass
class Record:
    value: bytes
    headers: list[tuple[str, bytes]]
    offset: int
    topic: str = "order-topic"
    partition: int = 0
    key: bytes = b"k"


@dataclass
class ScriptedConsumer:
    """Each poll returns the next scripted list of records (an empty one: nothing came) and moves
    the loop's clock on by `poll_seconds`; when the script ends, the loop is stopped."""

    polls: list[list[Record]]
    clock: list[float]
    poll_seconds: float = 0.0
    wait_when_empty: bool = False
    lag_readings: int = 0
    asked: list[int] = field(default_factory=list)  # each poll's timeout_ms
    asked_records: list[int | None] = field(default_factory=list)  # each poll's max_records
    _fetcher: Any = None  # aiokafka's, where the fetches' settings are read
    fetch_settings: list[tuple[int, int]] = field(default_factory=list)  # (min bytes, max wait ms) at each poll

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def highwater(self, tp: TopicPartition) -> int:
        return 100

    async def position(self, tp: TopicPartition) -> int:
        self.lag_readings += 1
        return 100

    async def getmany(self, timeout_ms: int, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        if not self.polls:
            raise asyncio.CancelledError
        self.asked.append(timeout_ms)
        self.asked_records.append(max_records)
        if self._fetcher is not None:
            self.fetch_settings.append((self._fetcher._fetch_min_bytes, self._fetcher._fetch_max_wait_ms))
        self.clock[0] += self.poll_seconds
        records = self.polls.pop(0)
        if max_records is not None and len(records) > max_records:  # the rest stay fetched, for the next poll
            records, rest = records[:max_records], records[max_records:]
            self.polls.insert(0, rest)
        if not records and self.wait_when_empty:  # nothing came: the poll waits out its timeout
            await asyncio.sleep(timeout_ms / 1000)
        return {TP: records} if records else {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        return None

    async def end_offsets(self, parts: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 100 for tp in parts}


def record(offset: int, name: str = "NOT_OURS") -> Record:
    event = ev.new_event(ev.PAYMENT_DONE, correlation_id="o1", orderId=f"o{offset}", userId="u1")
    return Record(event.to_bytes(), [("eventName", name.encode())], offset)


async def run(c: ConsumerLoop, consumer: ScriptedConsumer) -> None:
    c.consumer = consumer  # type: ignore[assignment]
    with pytest.raises(asyncio.CancelledError):
        await c._poll_forever()


async def test_busy_polls_read_the_lag_at_most_every_lag_every_and_an_idle_poll_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(consumer_module.time, "monotonic", lambda: clock[0])
    c = ConsumerLoop(Settings(), "poll-svc-1", None, {ev.PAYMENT_DONE: None}, ("order-topic",))  # type: ignore[arg-type,dict-item]
    # ten polls with records of another service, 0.25 s apart (2.5 s), then an idle one
    scripted = ScriptedConsumer([[record(i)] for i in range(10)] + [[]], clock, 0.25)
    await run(c, scripted)
    # read at 1.0 and 2.0 s into the busy polls (LAG_EVERY), then by the idle poll: not eleven times
    assert consumer_module.LAG_EVERY == 1.0 and scripted.lag_readings == 3


async def test_a_gathering_consumer_handles_what_came_within_its_gather_with_the_poll() -> None:
    handled: list[list[str | None]] = []

    async def handler(event: ev.Event, ctx: Any) -> None:  # pragma: no cover - the runs are recorded instead
        raise AssertionError

    async def handle_run(run: list[tuple[ev.Event, Any, Any]]) -> None:
        handled.append([e.orderId for e, _, _ in run])

    handlers = {ev.PAYMENT_DONE: handler}
    c = ConsumerLoop(Settings(), "poll-svc-2", None, handlers, ("order-topic",), gather=0.05)  # type: ignore[arg-type]
    c._handle_run = handle_run  # type: ignore[method-assign]
    # the poll brings o0; within the gather o1 comes, then nothing more
    polls = [[record(0, ev.PAYMENT_DONE)], [record(1, ev.PAYMENT_DONE)], []]
    scripted = ScriptedConsumer(polls, [0.0], wait_when_empty=True)
    started = asyncio.get_running_loop().time()
    await run(c, scripted)
    assert handled == [["o0", "o1"]]  # one run for both
    assert asyncio.get_running_loop().time() - started >= 0.05
    # what came during the gather was taken as it came (polls that wait at most what is left of it),
    # not left in the client's buffer until the end
    assert scripted.asked[0] > 1000 and all(0 < t <= 50 for t in scripted.asked[1:3])


async def test_a_gather_ends_once_it_holds_a_polls_most() -> None:
    handled: list[int] = []

    async def handler(event: ev.Event, ctx: Any) -> None:  # pragma: no cover - the runs are recorded instead
        raise AssertionError

    async def handle_run(run: list[tuple[ev.Event, Any, Any]]) -> None:
        handled.append(len(run))

    most = consumer_module.GATHER_MOST
    c = ConsumerLoop(Settings(), "poll-svc-5", None, {ev.PAYMENT_DONE: handler}, ("order-topic",), gather=30.0)  # type: ignore[arg-type]
    c._handle_run = handle_run  # type: ignore[method-assign]
    # a consumer behind: the poll brings 300, the next poll has 300 more fetched, then nothing
    polls = [[record(i, ev.PAYMENT_DONE) for i in range(300)], [record(i, ev.PAYMENT_DONE) for i in range(300, 600)]]
    scripted = ScriptedConsumer(polls, [0.0], wait_when_empty=True)
    started = asyncio.get_running_loop().time()
    await run(c, scripted)
    # the gather took what its most had room for and ended without waiting out its 30 s; the next
    # poll (the script's last) took the rest
    assert handled == [most]
    assert scripted.asked_records == [None, most - 300, None]
    assert asyncio.get_running_loop().time() - started < 5


def pinned_fetcher() -> Any:
    """aiokafka's fetcher with its fetches' settings as a consumer built by the loop has them."""
    from aiokafka.consumer.fetcher import Fetcher

    fetcher = Fetcher.__new__(Fetcher)
    fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = 1, consumer_module.IDLE_FETCH_WAIT_MS
    return fetcher


async def test_a_gathering_consumers_fetches_wait_at_the_broker_while_records_come(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def handle_run(run: list[tuple[ev.Event, Any, Any]]) -> None:
        return None

    monkeypatch.setattr(consumer_module, "COMMIT_EVERY", 0.01)
    handlers = {ev.PAYMENT_DONE: None}
    c = ConsumerLoop(Settings(), "poll-svc-4", None, handlers, ("order-topic",), gather=0.02, idle_wait=0.01)  # type: ignore[arg-type,dict-item]
    c._handle_run = handle_run  # type: ignore[method-assign]
    idle, held = (1, consumer_module.IDLE_FETCH_WAIT_MS), (consumer_module.GATHER_MIN_BYTES, 20)
    # a poll brings a record (the gather's poll, nothing more), the next poll one more (its gather's,
    # nothing), then a poll brings nothing: idle again; then one more idle poll, and a record
    polls = [
        [record(0, ev.PAYMENT_DONE)],
        [],
        [record(1, ev.PAYMENT_DONE)],
        [],
        [],
        [],
        [record(2, ev.PAYMENT_DONE)],
        [],
    ]
    scripted = ScriptedConsumer(polls, [0.0], wait_when_empty=True, _fetcher=pinned_fetcher())
    await run(c, scripted)
    assert scripted.fetch_settings == [idle, held, held, held, held, idle, idle, held]


async def test_a_consumer_that_does_not_gather_fetches_as_an_idle_one_after_short_handlings() -> None:
    async def handle_run(run: list[tuple[ev.Event, Any, Any]]) -> None:
        return None

    c = ConsumerLoop(Settings(), "poll-svc-5", None, {ev.PAYMENT_DONE: None}, ("order-topic",))  # type: ignore[arg-type,dict-item]
    c._handle_run = handle_run  # type: ignore[method-assign]
    polls = [[record(0, ev.PAYMENT_DONE)], [record(1, ev.PAYMENT_DONE)], []]
    scripted = ScriptedConsumer(polls, [0.0], _fetcher=pinned_fetcher())
    await run(c, scripted)
    assert set(scripted.fetch_settings) == {(1, consumer_module.IDLE_FETCH_WAIT_MS)}


@dataclass
class TimedConsumer(ScriptedConsumer):
    """A scripted consumer whose polls take the time scripted for each on the loop's clock (0: the
    records were already fetched, the poll returns at once)."""

    waits: list[float] = field(default_factory=list)

    async def getmany(self, timeout_ms: int, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        if self.polls and self.waits:
            self.clock[0] += self.waits.pop(0)
        return await super().getmany(timeout_ms, max_records)


def test_the_next_fetch_is_paced_only_after_a_long_handling_and_a_poll_that_did_not_wait() -> None:
    assert consumer_module.paced(0.05, True) == pytest.approx(consumer_module.PACE_SHARE * 0.05)
    assert consumer_module.paced(0.05, False) is None  # the poll waited for its records
    assert consumer_module.paced(consumer_module.PACE_FROM / 2, True) is None  # a short handling
    assert consumer_module.paced(0.0, True) is None


async def test_a_consumer_that_does_not_gather_paces_its_fetches_to_its_handling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [0.0]
    monkeypatch.setattr(consumer_module.time, "monotonic", lambda: clock[0])
    took = [0.05, 0.05, 0.005, 0.05, 0.05, 0.05]  # each poll's handling, on the loop's clock

    async def handle_run(run: list[tuple[ev.Event, Any, Any]]) -> None:
        clock[0] += took.pop(0)

    c = ConsumerLoop(Settings(), "poll-svc-6", None, {ev.PAYMENT_DONE: None}, ("order-topic",))  # type: ignore[arg-type,dict-item]
    c._handle_run = handle_run  # type: ignore[method-assign]
    polls = [[record(i, ev.PAYMENT_DONE)] for i in range(6)] + [[]]
    # the fifth poll waits 20 ms for its record (it had not come), the others return at once
    waits = [0.0, 0.0, 0.0, 0.0, 0.02, 0.0, 0.0]
    scripted = TimedConsumer(polls, clock, _fetcher=pinned_fetcher(), waits=waits)
    await run(c, scripted)
    idle = (1, consumer_module.IDLE_FETCH_WAIT_MS)
    paced = (consumer_module.GATHER_MIN_BYTES, round(consumer_module.PACE_SHARE * 50))
    # the settings each poll found, as the poll before it left them: none before the first; the
    # first follows no handling (idle); the second and third follow 50 ms handlings and returned at
    # once (paced); the fourth follows the 5 ms handling (idle); the fifth waited (idle); the sixth
    # follows a 50 ms handling and returned at once (paced)
    assert scripted.fetch_settings == [idle, idle, paced, paced, idle, idle, paced]


def test_the_fetches_settings_are_read_from_the_fetcher_on_the_pinned_aiokafka() -> None:
    """`fetch_at_broker` sets private attributes of aiokafka's fetcher (the behaviour itself is
    checked on the broker in tests/integration/test_consumer_fetch.py): they must still be where
    each fetch request is built from."""
    import inspect

    from aiokafka.consumer.fetcher import Fetcher

    source = inspect.getsource(Fetcher._get_actions_per_node)
    assert "self._fetch_max_wait_ms" in source and "self._fetch_min_bytes" in source
    consumer = type("Started", (), {"_fetcher": pinned_fetcher()})()
    assert consumer_module.fetch_at_broker(consumer, 0.2)  # type: ignore[arg-type]
    assert (consumer._fetcher._fetch_min_bytes, consumer._fetcher._fetch_max_wait_ms) == (
        consumer_module.GATHER_MIN_BYTES,
        200,
    )
    assert consumer_module.fetch_at_broker(consumer, None)  # type: ignore[arg-type]
    assert (consumer._fetcher._fetch_min_bytes, consumer._fetcher._fetch_max_wait_ms) == (1, 5000)
    assert not consumer_module.fetch_at_broker(type("Other", (), {"_fetcher": object()})(), 0.2)  # type: ignore[arg-type]


class Unstoppable:
    """A consumer whose stop() swallows the cancellation and waits on (as aiokafka's can when its
    group coordinator is lost)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def stop(self) -> None:
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                continue


async def test_a_consumer_that_does_not_stop_is_left_behind_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumer_module, "BROKER_TIMEOUT", 0.05)
    c = ConsumerLoop(Settings(), "poll-svc-3", None, {}, ("order-topic",))  # type: ignore[arg-type]
    stuck = Unstoppable()
    await asyncio.wait_for(c._stop_or_leave_behind(stuck), 2.0)  # type: ignore[arg-type]
    assert len(c._left_behind) == 1  # kept (not collected) while it hangs
    stuck.release.set()
    await asyncio.sleep(0.01)
    assert not c._left_behind


def test_fetched_records_are_held_on_the_pinned_aiokafka() -> None:
    """`hold_prefetched` sets a private attribute of aiokafka's fetcher (the behaviour itself is
    checked on the broker in tests/integration/test_consumer_fetch.py): it must still be there."""
    import inspect

    from aiokafka.consumer.fetcher import Fetcher

    assert "prefetch_backoff" in inspect.signature(Fetcher.__init__).parameters
    assert "backoff=self._prefetch_backoff" in inspect.getsource(Fetcher)  # what each fetch result is given
    fetcher = Fetcher.__new__(Fetcher)
    fetcher._prefetch_backoff = 0.1
    consumer = type("Started", (), {"_fetcher": fetcher})()
    consumer_module.hold_prefetched(consumer)  # type: ignore[arg-type]
    assert fetcher._prefetch_backoff == consumer_module.PREFETCH_HOLD


def test_a_consumer_without_that_fetcher_works_on(caplog: pytest.LogCaptureFixture) -> None:
    consumer_module.hold_prefetched(type("Other", (), {"_fetcher": object()})())  # type: ignore[arg-type]
    assert "not held" in caplog.text
