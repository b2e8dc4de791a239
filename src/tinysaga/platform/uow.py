"""The unit of work: one local transaction of a service, with the ids of the events handled in it
and the events it stages for Kafka. It is the only code that writes outbox rows, so "the change and
its event commit together, or neither does" holds in one place (the transactional outbox, ADR 2).

A repository makes its changes on `uow.conn`; an event that goes with a change is staged either on
its own (`stage`, one statement) or in the same statement as the change (`change_with_event`: the
change's CTEs, then the outbox row only if the change wrote one), which is what the measured
one-statement writes of ADR 9/10 need. When tracing is on, the row's headers also carry the W3C
context of the span the event was staged in (ADR 42), which is passed on to Kafka.

Once the transaction has committed, the unit of work hands the rows it staged to the process's
publisher (`publish_after_commit`, ADR 51), which sends them to Kafka at once and deletes them once
acknowledged; the outbox row stays the durable record, and the relay publishes what was not
confirmed (a crash or a broker outage between the commit and the acknowledgement).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import orjson

from tinysaga.contracts.events import Event
from tinysaga.platform import tracing

_OUTBOX_INSERT = "INSERT INTO outbox(topic, key, event_name, payload, headers)"


def _outbox_rows(after: int, count: int, *, outcome: bool = False) -> str:
    """The VALUES rows of `count` outbox rows as parameters, numbered from $`after + 1`: topic, key,
    event name, payload, headers (`outbox_values`), and with `outcome` the outcome each is for."""
    width = 6 if outcome else 5
    types = ("text", "text", "text", "bytea", "jsonb", "text")[:width]
    return ", ".join(
        "(" + ", ".join(f"${after + 1 + width * i + j}::{t}" for j, t in enumerate(types)) + ")" for i in range(count)
    )


@dataclass(frozen=True)
class Staged:
    """An outbox row written by a transaction: what to send to Kafka, and its id to delete it by."""

    id: int
    topic: str
    key: str
    payload: bytes
    headers: str  # JSON: header name -> value


class Publisher(Protocol):
    """Sends a committed transaction's outbox rows to Kafka (`platform.publisher.Publisher`);
    `confirm`: wait for Kafka's acknowledgement too."""

    async def publish(self, rows: Sequence[Staged], *, confirm: bool = True) -> None: ...


_publisher: Publisher | None = None


def publish_after_commit(publisher: Publisher | None) -> None:
    """The publisher of this process's committed outbox rows (None: the relay publishes them all)."""
    global _publisher
    _publisher = publisher


def outbox_values(topic: str, event: Event) -> tuple[str, str, str, bytes, str]:
    """The outbox row of an event: topic, key (the order, else the user), name, payload, headers
    (the event's name, its correlation id and, when tracing is on, the trace context)."""
    key = event.orderId or event.userId or str(event.eventId)
    headers = {"eventName": event.eventName, "correlationId": event.correlationId, **tracing.context_headers()}
    return topic, key, event.eventName, event.to_bytes(), orjson.dumps(headers).decode()


class UnitOfWork(Protocol):
    """What handlers and repositories see of a transaction (the real one below, or a fake)."""

    topic: str

    async def stage(self, event: Event, topic: str | None = None) -> None: ...

    def before_commit(self, key: str, flush: Callable[[], Awaitable[None]]) -> None: ...

    def after_commit(self, callback: Callable[[], None]) -> None: ...


class PgUnitOfWork:
    def __init__(self, conn: asyncpg.Connection, topic: str) -> None:
        self.conn = conn
        self.topic = topic
        self.staged: list[Staged] = []  # the outbox rows written, for the publisher after the commit
        self._before: dict[str, Callable[[], Awaitable[None]]] = {}
        self._after: list[Callable[[], None]] = []

    @classmethod
    @asynccontextmanager
    async def begin(cls, pool: asyncpg.Pool, topic: str, *, confirm: bool = True) -> AsyncIterator[PgUnitOfWork]:
        """A transaction of its own, committed when the block ends without an exception (after the
        writes left for the end, `before_commit`); then what it staged is published (the pool's
        connection already given back), and with `confirm` acknowledged by Kafka before the block
        is left."""
        async with pool.acquire() as conn:
            async with conn.transaction():
                uow = cls(conn, topic)
                yield uow
                await uow.flush()
        await uow.committed(confirm=confirm)

    async def committed(self, *, confirm: bool = True) -> None:
        """Call once the transaction has committed: its staged rows go to the publisher (if this
        process has one; else the relay sends them). `confirm`: wait for Kafka's acknowledgement
        (what a client is answered after); without, the sends are only under way, in order, when
        it returns (what a consumer's next poll may follow: its own later events are sent after
        them by the same producer)."""
        rows, self.staged = self.staged, []
        after, self._after = self._after, []
        for callback in after:
            callback()
        if rows and _publisher is not None:
            await _publisher.publish(rows, confirm=confirm)

    def before_commit(self, key: str, flush: Callable[[], Awaitable[None]]) -> None:
        """Await `flush` in this transaction once the block's work is done, right before the commit,
        once per `key` however often it is asked: for a write that a batch's events each add to,
        made once for them all (ADR 70: Notification's rows, one INSERT per batch instead of one
        per event). Not run when the block fails."""
        self._before.setdefault(key, flush)

    async def flush(self) -> None:
        """Do the writes left for the end (`before_commit`), in the order they were asked for."""
        while self._before:
            key = next(iter(self._before))
            await self._before.pop(key)()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once this transaction has committed (never if it rolls back): to wake
        work in this process that reads what it wrote, without a NOTIFY (ADR 53)."""
        self._after.append(callback)

    def _staged(self, outbox_id: int, values: tuple[str, str, str, bytes, str]) -> None:
        topic, key, _name, payload, headers = values
        self.staged.append(Staged(outbox_id, topic, key, payload, headers))

    async def stage(self, event: Event, topic: str | None = None) -> None:
        """Stage an event; it is published only if this transaction commits."""
        values = outbox_values(topic or self.topic, event)
        self._staged(
            await self.conn.fetchval(f"{_OUTBOX_INSERT} VALUES ($1, $2, $3, $4, $5) RETURNING id", *values), values
        )

    async def stage_raw(self, topic: str, key: str, name: str, payload: bytes, headers: dict[str, str]) -> None:
        """Stage bytes that are not an event of ours (a dead letter, a replayed message) as they are."""
        values = (topic, key, name, payload, orjson.dumps({**headers, **tracing.context_headers()}).decode())
        self._staged(
            await self.conn.fetchval(f"{_OUTBOX_INSERT} VALUES ($1, $2, $3, $4, $5) RETURNING id", *values), values
        )

    async def change_with_event(
        self,
        ctes: str,
        source: str,
        args: Sequence[Any],
        event: Event,
        *,
        returning: str = "1",
        topic: str | None = None,
        also: Sequence[tuple[str, Event]] = (),
    ) -> asyncpg.Record | None:
        """One statement: the change (`ctes`, data-modifying CTEs using `args` as $1..$n; `source`
        names the one whose rows say the change happened), then the event's outbox row (and those of
        `also`, (topic, event) pairs: an orchestrator's commands) if `source` wrote a row. Returns
        the first row of `source` (as `returning`, with the outbox rows' ids as `outbox_ids`), or
        None when the change wrote nothing (and so nothing was staged)."""
        rows = [outbox_values(topic or self.topic, event), *(outbox_values(t, e) for t, e in also)]
        values = _outbox_rows(len(args), len(rows))
        sql = (
            f"WITH {ctes}, _o AS ({_OUTBOX_INSERT} SELECT v.* FROM (VALUES {values}) v"
            f" WHERE EXISTS (SELECT 1 FROM {source}) RETURNING id)"
            f" SELECT {returning}, (SELECT array_agg(id ORDER BY id) FROM _o) AS outbox_ids FROM {source} LIMIT 1"
        )
        row = await self.conn.fetchrow(sql, *args, *(v for r in rows for v in r))
        if row is not None:
            for outbox_id, values in zip(row["outbox_ids"], rows, strict=True):
                self._staged(outbox_id, values)
        return row

    def staged_as_returned(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Outbox rows a repository's own statement wrote (a batch's, ADR 70), as it returned them:
        id, topic, key, payload and headers (as text)."""
        for r in rows:
            self.staged.append(Staged(r["id"], r["topic"], r["key"], r["payload"], r["headers"]))

    async def change_with_outcome(
        self, ctes: str, source: str, args: Sequence[Any], events: Mapping[str, Event], *, outcome: str
    ) -> str | None:
        """One statement: the change (`ctes`, data-modifying CTEs using `args` as $1..$n), whose
        `source` writes one row with its `outcome` column naming what happened, then the outbox row
        of the event for that outcome (`events`, by outcome: the answer for each way it can go).
        Returns the outcome, or None when `source` wrote nothing (and nothing was staged)."""
        values = {name: outbox_values(self.topic, event) for name, event in events.items()}
        rows = _outbox_rows(len(args), len(values), outcome=True)
        sql = (
            f"WITH {ctes}, _o AS ({_OUTBOX_INSERT} SELECT v.topic, v.key, v.name, v.payload, v.headers"
            f" FROM (VALUES {rows}) v(topic, key, name, payload, headers, outcome)"
            f" WHERE v.outcome = (SELECT {outcome}::text FROM {source} LIMIT 1) RETURNING id)"
            f" SELECT {outcome}::text AS outcome, (SELECT id FROM _o) AS outbox_id FROM {source} LIMIT 1"
        )
        row = await self.conn.fetchrow(sql, *args, *(v for name, vs in values.items() for v in (*vs, name)))
        if row is None:
            return None
        if row["outbox_id"] is not None:
            self._staged(row["outbox_id"], values[row["outcome"]])
        return row["outcome"]

    async def record_handled(self, events: Sequence[Event]) -> set[object]:
        """Record events as handled in this transaction, in one statement; the ids that were not
        recorded before (a redelivered event, or a repeat within `events`, is not among them)."""
        rows = await self.conn.fetch(
            "INSERT INTO processed_events(event_id, event_name) SELECT * FROM unnest($1::uuid[], $2::text[])"
            " ON CONFLICT DO NOTHING RETURNING event_id",
            [e.eventId for e in events],
            [e.eventName for e in events],
        )
        return {r["event_id"] for r in rows}
