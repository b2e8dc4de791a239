"""Publish after commit (ADR 51) without a broker or a database: a unit of work hands the outbox rows
it staged to the process's publisher only once its transaction has committed (never after a
rollback); the publisher sends them in order, deletes the acknowledged ones in one statement, and
leaves to the relay (deletes nothing) what Kafka did not acknowledge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tinysaga.contracts import events as ev
from tinysaga.platform import publisher as publisher_module
from tinysaga.platform import relay
from tinysaga.platform import uow as uow_module
from tinysaga.platform.publisher import Publisher
from tinysaga.platform.uow import PgUnitOfWork, Staged


class Connection:
    """Outbox inserts answer ids 1, 2, ...; the transaction block commits or rolls back."""

    def __init__(self) -> None:
        self.next_id = 0
        self.state = "idle"
        self.changed = True

    async def fetchval(self, sql: str, *args: Any) -> int:
        assert sql.startswith("INSERT INTO outbox") and sql.endswith("RETURNING id")
        self.next_id += 1
        return self.next_id

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        """A change with its outbox rows (`change_with_event`): each row of its VALUES gets the next
        id; `self.changed` False: the change wrote nothing, so neither did the outbox."""
        assert "INSERT INTO outbox" in sql and "outbox_ids" in sql
        if not self.changed:
            return None
        n = sql.count("::jsonb)")
        ids = list(range(self.next_id + 1, self.next_id + n + 1))
        self.next_id += n
        return {"order_id": "o-1", "outbox_ids": ids}

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self.state = "open"
        try:
            yield
        except BaseException:
            self.state = "rolled back"
            raise
        self.state = "committed"


class Pool:
    def __init__(self) -> None:
        self.conn = Connection()
        self.executed: list[tuple[str, tuple[Any, ...]]] = []
        self.fail = False

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Connection]:
        yield self.conn

    async def execute(self, sql: str, *args: Any) -> None:
        if self.fail:
            raise OSError("database gone")
        self.executed.append((sql, args))


class Recorder:
    """A publisher that keeps what it is given, and the transaction's state at that moment."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.published: list[tuple[list[Staged], str]] = []
        self.confirmed: list[bool] = []

    async def publish(self, rows: Sequence[Staged], *, confirm: bool = True) -> None:
        self.published.append((list(rows), self.conn.state))
        self.confirmed.append(confirm)


@pytest.fixture
def pool() -> Pool:
    return Pool()


@pytest.fixture
def recorder(pool: Pool) -> Any:
    r = Recorder(pool.conn)
    uow_module.publish_after_commit(r)
    yield r
    uow_module.publish_after_commit(None)


def event(name: str = ev.PAYMENT_VOIDED) -> ev.Event:
    """A cancel's answer (PAYMENT_VOIDED or INVENTORY_RELEASED) for order o-1."""
    fields = {"orderId": "o-1", "userId": "u-1", "productId": "P-1", "productQuantity": 1}
    return ev.make_event(name, correlation_id="o-1", **fields)


async def test_the_rows_of_a_transaction_are_published_once_it_has_committed(pool: Pool, recorder: Recorder) -> None:
    async with PgUnitOfWork.begin(pool, "order-topic") as uow:  # type: ignore[arg-type]
        await uow.stage(event())
        await uow.stage(event(ev.INVENTORY_RELEASED), topic="other-topic")
        assert recorder.published == []

    [(rows, state)] = recorder.published
    assert state == "committed"
    assert [(r.id, r.topic, r.key) for r in rows] == [(1, "order-topic", "o-1"), (2, "other-topic", "o-1")]
    names = [ev.Event.from_bytes(r.payload).eventName for r in rows]
    assert names == [ev.PAYMENT_VOIDED, ev.INVENTORY_RELEASED]


async def test_a_change_with_its_event_and_an_orchestrator_s_commands_hands_over_each_row(
    pool: Pool, recorder: Recorder
) -> None:
    """One statement writes the change, its event and (orchestrating) its commands: each outbox row
    comes back with its id, in the order staged, for the publisher."""
    command = ev.command(ev.RELEASE_STOCK, event(ev.PAYMENT_VOIDED))
    async with PgUnitOfWork.begin(pool, "order-topic") as uow:  # type: ignore[arg-type]
        row = await uow.change_with_event(
            "u AS (UPDATE orders SET order_status = 'CANCELED' RETURNING *)", "u", [], event(),
            returning="u.order_id", also=[("saga-commands", command)],
        )  # fmt: skip
        assert row is not None
        pool.conn.changed = False  # a change that wrote nothing stages nothing
        assert await uow.change_with_event("u AS (UPDATE orders SET x = 1 RETURNING *)", "u", [], event()) is None
    [(rows, state)] = recorder.published
    assert state == "committed"
    assert [(r.id, r.topic) for r in rows] == [(1, "order-topic"), (2, "saga-commands")]
    assert ev.Event.from_bytes(rows[1].payload).eventName == ev.RELEASE_STOCK


async def test_what_waits_for_the_commit_runs_after_it_and_never_after_a_rollback(pool: Pool) -> None:
    seen: list[str] = []
    async with PgUnitOfWork.begin(pool, "order-topic") as uow:  # type: ignore[arg-type]
        uow.after_commit(lambda: seen.append(pool.conn.state))
        assert seen == []
    assert seen == ["committed"]
    with pytest.raises(RuntimeError):
        async with PgUnitOfWork.begin(pool, "order-topic") as uow:  # type: ignore[arg-type]
            uow.after_commit(lambda: seen.append("rolled back, yet called"))
            raise RuntimeError("the handler failed")
    assert seen == ["committed"]


async def test_a_rolled_back_transaction_publishes_nothing(pool: Pool, recorder: Recorder) -> None:
    with pytest.raises(RuntimeError):
        async with PgUnitOfWork.begin(pool, "order-topic") as uow:  # type: ignore[arg-type]
            await uow.stage(event())
            raise RuntimeError("the handler failed")
    assert pool.conn.state == "rolled back" and recorder.published == []


async def test_without_a_publisher_the_rows_stay_for_the_relay(pool: Pool) -> None:
    async with PgUnitOfWork.begin(pool, "order-topic") as uow:  # type: ignore[arg-type]
        await uow.stage(event())
    assert uow.staged == []  # handed over (to no one): the outbox row is all there is


class Producer:
    """Sends acknowledged at once (or failing, or never answered), in the order given."""

    def __init__(self, outcome: str = "ack") -> None:
        self.outcome = outcome
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.futures: list[asyncio.Future[None]] = []

    async def send(self, topic: str, *, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> Any:
        self.sent.append((topic, key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.futures.append(done)
        if self.outcome == "ack":
            done.set_result(None)
        elif self.outcome == "fail":
            done.set_exception(OSError("broker gone"))
        return done  # "hang": never answered


def staged(i: int) -> Staged:
    return Staged(i, "order-topic", f"o-{i}", f"payload-{i}".encode(), '{"eventName": "ORDER_INITIATED"}')


async def test_the_publisher_sends_in_order_and_deletes_what_kafka_acknowledged(pool: Pool) -> None:
    producer = Producer()
    p = Publisher(producer, pool)  # type: ignore[arg-type]
    await p.publish([staged(1), staged(2)])
    await p.publish([staged(3)])
    await p.close()
    assert [k for _, k, _ in producer.sent] == [b"o-1", b"o-2", b"o-3"]
    deleted = [i for sql, (ids,) in pool.executed if sql.startswith("DELETE FROM outbox") for i in ids]
    assert sorted(deleted) == [1, 2, 3]


async def test_acknowledgements_are_deleted_by_one_statement_once_the_oldest_was_handed_over_delete_after_ago(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publisher_module, "DELETE_AFTER", 0.3)
    p = Publisher(Producer(), pool)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    started = loop.time()
    await p.publish([staged(1)])
    await asyncio.sleep(0.2)
    await p.publish([staged(2), staged(3)])
    assert pool.executed == []  # acknowledged, and gathering
    assert p._deleting is not None
    await p._deleting
    # timed from the first rows' handing over, not from the last acknowledgement
    assert 0.3 <= loop.time() - started < 0.45  # from the last: 0.5
    assert [ids for _, (ids,) in pool.executed] == [[1, 2, 3]]


async def test_rows_acknowledged_after_delete_after_are_deleted_at_once(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publisher_module, "DELETE_AFTER", 0.3)
    producer = Producer("hang")
    p = Publisher(producer, pool)  # type: ignore[arg-type]
    await p.publish([staged(1)], confirm=False)
    await asyncio.sleep(0.5)  # Kafka answers late, past DELETE_AFTER (and before the relay's grace)
    loop = asyncio.get_running_loop()
    acknowledged = loop.time()
    for f in producer.futures:
        f.set_result(None)
    for _ in range(10):  # the acknowledgement's callbacks (the gather's, then the publisher's)
        await asyncio.sleep(0)
    assert p._deleting is not None
    await p._deleting
    assert loop.time() - acknowledged < 0.15  # not DELETE_AFTER from the acknowledgement
    assert [ids for _, (ids,) in pool.executed] == [[1]]


def test_the_publisher_deletes_well_before_the_relay_looks() -> None:
    """The relay sends a row again once it is GRACE old; the publisher deletes an acknowledged one
    by DELETE_AFTER after its commit, with a margin for a long transaction and a late loop."""
    assert relay.GRACE - publisher_module.DELETE_AFTER >= 1.0


async def test_what_kafka_refuses_is_left_to_the_relay(pool: Pool) -> None:
    p = Publisher(Producer("fail"), pool)  # type: ignore[arg-type]
    await p.publish([staged(1)])  # does not raise: the commit stands, the relay sends it later
    await p.close()
    assert pool.executed == []


async def test_a_broker_that_does_not_answer_holds_the_commit_no_longer_than_publish_wait(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publisher_module, "PUBLISH_WAIT", 0.01)
    p = Publisher(Producer("hang"), pool)  # type: ignore[arg-type]
    await asyncio.wait_for(p.publish([staged(1)]), 1.0)
    assert pool.executed == []
    for f in list(p._pending):
        f.cancel()


async def test_a_consumer_does_not_wait_for_kafka_and_the_rows_are_deleted_once_acknowledged(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publisher_module, "PUBLISH_WAIT", 60.0)
    producer = Producer("hang")
    p = Publisher(producer, pool)  # type: ignore[arg-type]
    await asyncio.wait_for(p.publish([staged(1), staged(2)], confirm=False), 1.0)  # sent, not waited for
    assert [k for _, k, _ in producer.sent] == [b"o-1", b"o-2"] and pool.executed == []


async def test_the_unit_of_work_passes_on_whether_to_wait(pool: Pool, recorder: Recorder) -> None:
    async with PgUnitOfWork.begin(pool, "order-topic", confirm=False) as uow:  # type: ignore[arg-type]
        await uow.stage(event())
    async with PgUnitOfWork.begin(pool, "order-topic") as uow:  # type: ignore[arg-type]
        await uow.stage(event())
    assert recorder.confirmed == [False, True]


async def test_a_failed_delete_leaves_the_rows_to_the_relay_and_the_next_ones_are_deleted(pool: Pool) -> None:
    p = Publisher(Producer(), pool)  # type: ignore[arg-type]
    pool.fail = True
    await p.publish([staged(1)])
    await p.close()
    pool.fail = False
    await p.publish([staged(2)])
    await p.close()
    assert [ids for _, (ids,) in pool.executed] == [[2]]
