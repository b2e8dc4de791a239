"""Fakes of the platform's edges, for unit tests of handlers without I/O: a unit of work that keeps
what it staged and the event ids handled (committed only when the handler's block ends without an
exception, as a transaction would), and a handler context like the consumer loop's. Each service's
fake repository (in its test module) keeps its rows in dicts and stages its events on the unit of
work it was built with."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import jsonschema_rs
import orjson

from tinysaga.contracts import docs, saga
from tinysaga.contracts.events import Event, as_cause
from tinysaga.platform.consumer import AlreadyHandled

_VALIDATORS = {name: jsonschema_rs.validator_for(schema) for name, schema in docs.event_schemas().items()}


def check_wire(event: Event) -> None:
    """The contract test of a producer: what it publishes validates against the JSON Schema of its
    name (docs/events/)."""
    _VALIDATORS[event.eventName].validate(orjson.loads(event.to_bytes()))


@dataclass
class FakeUnitOfWork:
    topic: str = "order-topic"
    published: list[Event] = field(default_factory=list)  # staged by committed transactions
    handled: set[object] = field(default_factory=set)  # event ids recorded by committed transactions
    _pending: list[Event] = field(default_factory=list)
    commits: int = 0
    topics: dict[object, str] = field(default_factory=dict)  # eventId -> the topic it was staged on
    _before: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)
    _after: list[Callable[[], None]] = field(default_factory=list)

    def before_commit(self, key: str, flush: Callable[[], Awaitable[None]]) -> None:
        self._before.setdefault(key, flush)

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._after.append(callback)

    async def stage(self, event: Event, topic: str | None = None) -> None:
        check_wire(event)  # every event a handler stages is checked against its schema
        self._pending.append(event)
        self.topics[event.eventId] = topic or self.topic

    def on(self, topic: str) -> list[Event]:
        """What committed transactions staged on `topic`."""
        return [e for e in self.published if self.topics.get(e.eventId) == topic]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeUnitOfWork]:
        self._pending, self._before, self._after = [], {}, []
        try:
            yield self
            while self._before:  # the writes left for the end, as PgUnitOfWork.flush does them
                await self._before.pop(next(iter(self._before)))()
        except BaseException:
            self._pending, self._before, self._after = [], {}, []
            raise
        self.published += self._pending
        self._pending = []
        self.commits += 1
        after, self._after = self._after, []
        for callback in after:
            callback()

    def names(self) -> list[str]:
        return [e.eventName for e in self.published]


@dataclass
class FakeContext:
    """The consumer loop's HandlerContext, over a FakeUnitOfWork: a redelivered event (its id already
    handled) raises AlreadyHandled as the real one does, and nothing of it is done twice."""

    event: Event
    uow: FakeUnitOfWork
    prepared: Any = None
    batch: tuple[Event, ...] = ()
    memo: dict[str, Any] = field(default_factory=dict)
    shared: bool = False  # the batch's transaction is open: the handler works in it

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeUnitOfWork]:
        if self.event.eventId in self.uow.handled:
            raise AlreadyHandled
        if self.shared:
            yield self.uow
            self.uow.handled.add(self.event.eventId)
            return
        async with self.uow.transaction() as uow:
            yield uow
            uow.handled.add(self.event.eventId)


async def deliver(
    participant: str,
    handlers: dict[str, Any],
    event: Event,
    uow: FakeUnitOfWork,
    prepared: Any = None,
    topic: str = saga.ORDER_TOPIC,
    mode: str = saga.CHOREOGRAPHY,
) -> bool:
    """Hand an event (or, on the commands topic, a command) to the participant's handler of the step
    the saga definition routes it to in `mode`, as the consumer loop does (`handlers` by step name,
    checked against the definition; a command's handler sees the event that led to it). False when
    the participant does not handle it or it was a duplicate (skipped quietly)."""
    saga.check_handlers(participant, saga.ORDER_TOPIC if topic == saga.COMMANDS_TOPIC else topic, handlers)
    step = saga.routes(participant, topic, mode=mode).get(event.eventName)
    if step is None:
        return False
    seen = as_cause(event) if topic == saga.COMMANDS_TOPIC else event
    try:
        await handlers[step.name](seen, FakeContext(event, uow, prepared))
    except AlreadyHandled:
        return False
    return True


async def deliver_batch(participant: str, handlers: dict[str, Any], events: list[Event], uow: FakeUnitOfWork) -> None:
    """Hand events on the saga's topic to the participant's handlers as the consumer loop hands a
    batch: in one transaction, each handler's context naming them all (`ctx.batch`) and sharing one
    `ctx.memo`."""
    saga.check_handlers(participant, saga.ORDER_TOPIC, handlers)
    routes = saga.routes(participant, saga.ORDER_TOPIC)
    memo: dict[str, Any] = {}
    async with uow.transaction():
        for event in events:
            await handlers[routes[event.eventName].name](
                event, FakeContext(event, uow, batch=tuple(events), memo=memo, shared=True)
            )
