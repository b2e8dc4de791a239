"""The idempotent consumer loop every service uses.

- one consumer group per service; only the event names in the service's configuration are handled,
  the rest are skipped;
- a handler opens its transaction with `ctx.transaction()`, which records the eventId in the same
  transaction as the effect; an event already recorded is skipped (redelivery is normal);
- offsets are committed only after the database commit;
- partitions are worked concurrently, each in order (in a batch service, one after the other in the
  poll's one transaction, below);
- in a service whose handlers allow it (`batch=True`: each handler does all its work in the one
  `ctx.transaction()`), the events fetched together by one poll, from all its partitions, share one
  transaction (each partition still in order), and their eventIds are recorded by one statement,
  so a busy consumer pays one commit for many events; if anything in such a batch fails, it is
  rolled back and the events are handled one by one, as usual; `batch` may name only some events
  (the others go one by one, in their place in the partition's order), and a `prepare` hook does,
  before the transaction, once for the batch what each event would do on its own (Payment: one
  wallet call for all the charges of the poll), and inside the transaction a handler may do
  something once for the whole batch (`ctx.batch`, `ctx.memo`: Order and Inventory lock the
  batch's rows with one statement) or leave its write for one statement right before the commit
  (`uow.before_commit`: Order's plain transitions, Notification's rows; ADR 70);
- a consumer whose steps nobody waits on (Notification's) gathers: after a poll that brought
  records it waits its step's `gather_seconds` and takes what came meanwhile with them, so events
  that come close together (an order's payment and placement) share one transaction; while its
  polls bring records, its fetches wait at the broker for as long (`fetch_at_broker`), so it is
  woken a few times a second rather than once per event;
- a message that cannot be parsed, or whose handler keeps failing, goes to the dead-letter topic
  (through the outbox, so exactly once) with its error, and the loop moves on; when an operator
  replays it, it comes back with a `replayFor` header, and only the service named there takes it;
- a consumer whose idle polls bring nothing while records wait in its partitions (checked twice)
  is restarted, as is one whose offset commit gets no answer (ADR 11), or that cannot join its
  group within JOIN_TIMEOUT (ADR 33);
- it counts what became of each event by name (`tinysaga_events_total`: handled, ignored,
  duplicate, dead_lettered) and its lag per partition (`tinysaga_consumer_lag`: after a poll that
  brought nothing, and at most every LAG_EVERY while polls bring records, since reading it is
  work for each partition, and a scrape comes every few seconds at most);
- when tracing is on (ADR 42), each event is handled in a span that is a child of the context in
  its record's headers (so the order's trace goes on through every consumer); what a batch does
  once for its events (`prepare`, the shared transaction) is a span of its own, linked to each
  event's context, and each event's span links back to it. A batch of one event is simply that
  event's span.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError

from tinysaga.contracts.events import Event, InvalidEvent
from tinysaga.platform import metrics, tracing
from tinysaga.platform.logging import correlation_id
from tinysaga.platform.retry import outage_pause, retry_pause
from tinysaga.platform.settings import Settings
from tinysaga.platform.uow import PgUnitOfWork

log = logging.getLogger("tinysaga.consumer")

COMMIT_EVERY = 1.0  # seconds
LAG_EVERY = 1.0  # seconds between two readings of the lag while polls bring records (an idle poll reads it)
IDLE_WAIT = 30.0  # seconds: how long a poll waits when there is no offset to commit
RECHECK_WAIT = 5.0  # seconds: the poll after one that found the consumer behind
BROKER_TIMEOUT = 15.0  # seconds: for an offset commit, a stall check, or stopping the consumer
# seconds: for a new consumer to join its group (aiokafka's start() waits for the assignment, forever
# if the group coordinator stays lost; several session timeouts and a rebalance fit in it)
JOIN_TIMEOUT = 60.0
# seconds that fetched records may wait in the client's buffer before the next fetch to their node
# goes without their partitions (aiokafka's own is 0.1 s; see `hold_prefetched`)
PREFETCH_HOLD = 5.0
# An idle consumer's fetch waits at the broker for up to IDLE_FETCH_WAIT_MS and returns with the
# first record. A gathering consumer's fetches, while its polls bring records, wait its gather
# instead and return early only once GATHER_MIN_BYTES have come (see `fetch_at_broker`).
IDLE_FETCH_WAIT_MS = 5000
GATHER_MIN_BYTES = 256 * 1024
# A gather ends early once it holds this many records (a poll's most): a consumer that is behind
# handles them at once rather than a second's worth of full polls in one transaction (ADR 75).
GATHER_MOST = 500
# A consumer that does not gather paces its next fetch to its handling (`paced`, ADR 71): PACE_SHARE
# of the time the last poll's records took, once that was at least PACE_FROM seconds.
PACE_SHARE = 0.8
PACE_FROM = 0.01
# a poll that returned within this many seconds took records already fetched: it did not wait
INSTANT = 0.0005


# Failures of the infrastructure, not of the message: wait them out.
TRANSIENT = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.AdminShutdownError,
)


class ConsumerStalled(Exception):
    """Records wait in the consumer's partitions, but its polls bring none: the consumer is
    restarted. (aiokafka can lose its group coordinator for good when the broker restarts, and
    then waits for it forever while keeping its partitions.)"""


class AlreadyHandled(Exception):
    """The event's id is already recorded: its effect exists, nothing to do."""


def hold_prefetched(consumer: AIOKafkaConsumer) -> None:
    """aiokafka fetches ahead while records wait to be handled. Once fetched records of a partition
    have waited 0.1 s in its buffer, it sends the next fetch to their node without that partition,
    and it sends no fetch to a node while one is in flight there. So when handling takes over
    0.1 s, that partition's next records wait for a fetch of the other partitions to return: at
    once under load, but only after `fetch_max_wait_ms` (5 s) on a quiet topic, which held the last
    sagas of a burst up for seconds. Held up to PREFETCH_HOLD instead, the next fetch goes once the
    buffer is taken, with every partition in it: one fetch is buffered ahead at most, and a poll
    takes all of it (up to `max_poll_records`). aiokafka does not expose the setting, so it is set
    on the consumer's fetcher once started; were it gone, the consumer works on as before."""
    fetcher = getattr(consumer, "_fetcher", None)
    if not hasattr(fetcher, "_prefetch_backoff"):
        log.warning("this aiokafka has no fetcher._prefetch_backoff; fetched records are not held")
        return
    fetcher._prefetch_backoff = PREFETCH_HOLD


def paced(busy: float, instant: bool) -> float | None:
    """How long a consumer that does not gather lets its next fetch wait at the broker (seconds;
    None: as an idle consumer's, answered by the first record). aiokafka fetches ahead once
    (`hold_prefetched`): taking a poll's records lets the next fetch go, and the broker answers it
    at once with what came meanwhile, so under load the records a poll takes are those that came
    before the last handling began, while those that came during it wait at the broker for one
    more handling. So when the last poll's records took `busy` seconds to handle (at least
    PACE_FROM) and this poll took records already fetched (`instant`: they keep coming), the next
    fetch waits PACE_SHARE of that at the broker (or until GATHER_MIN_BYTES): it is answered about
    when this poll's records are handled, with what came during it. A poll that waited for its
    records, and one after a short handling, fetch as an idle consumer does."""
    return PACE_SHARE * busy if instant and busy >= PACE_FROM else None


def fetch_at_broker(consumer: AIOKafkaConsumer, gather: float | None) -> bool:
    """How the consumer's next fetches wait at the broker. None: as an idle consumer's, which the
    first record answers. Seconds: up to that long, unless GATHER_MIN_BYTES came sooner, so that a
    consumer that gathers anyway is answered a few times a second under load instead of once per
    record (each answer is work for the broker and for this process). aiokafka reads both settings
    from its fetcher each time it builds a fetch and does not expose them once started, so they are
    set there; were they gone, the consumer fetches as an idle one always does. True if set."""
    fetcher = getattr(consumer, "_fetcher", None)
    if not (hasattr(fetcher, "_fetch_min_bytes") and hasattr(fetcher, "_fetch_max_wait_ms")):
        return False
    if gather is None:
        fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = 1, IDLE_FETCH_WAIT_MS
    else:
        fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = GATHER_MIN_BYTES, max(1, round(gather * 1000))
    return True


@dataclass
class HandlerContext:
    pool: asyncpg.Pool
    event: Event
    topic: str
    shared: PgUnitOfWork | None = None  # the batch's unit of work, already in its transaction,
    # where the batch has already recorded this event's id (so it is new)
    prepared: Any = None  # what the loop's `prepare` gave for this event (None: nothing)
    # in a batch: all its events, in the order they are handled, and what its handlers keep from one
    # event to the next inside its one transaction (Order: the rows it locked for them all at once);
    # () and a dict of its own for an event handled on its own
    batch: tuple[Event, ...] = ()
    memo: dict[str, Any] = field(default_factory=dict)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgUnitOfWork]:
        """The handler's unit of work: the event's id is recorded in it, with the handler's effects."""
        if self.shared is not None:
            yield self.shared
            return
        async with PgUnitOfWork.begin(self.pool, self.topic, confirm=False) as uow:
            if not await uow.record_handled([self.event]):
                raise AlreadyHandled
            yield uow


Handler = Callable[[Event, HandlerContext], Awaitable[None]]
# Called with the events of a batch before their transaction: work better done once for them all
# (one call to another service instead of one per event); what it returns for an eventId reaches
# that event's handler as `ctx.prepared`.
Prepare = Callable[[list[Event]], Awaitable[dict[Any, Any]]]


async def add_dead_letter(
    uow: PgUnitOfWork, settings: Settings, service: str, record: ConsumerRecord, error: str
) -> None:
    raw: bytes = record.value or b""
    try:
        payload_text, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        payload_text, encoding = base64.b64encode(raw).decode(), "base64"
    body = {
        "service": service,
        "error": error[:2000],
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": (record.key or b"").decode("utf-8", "replace"),
        "payload": payload_text,
        "payloadEncoding": encoding,
    }
    await uow.stage_raw(
        settings.dead_letter_topic,
        body["key"] or f"{record.topic}-{record.partition}-{record.offset}",
        "DEAD_LETTER",
        orjson.dumps(body),
        {"service": service, "error": error[:200]},
    )


@dataclass
class ConsumerLoop:
    settings: Settings
    service: str
    pool: asyncpg.Pool
    handlers: dict[str, Handler]  # by event name (the saga definition's routes to this service)
    topics: tuple[str, ...]
    group_id: str | None = None
    batch: frozenset[str] = frozenset()  # the event names whose handlers may share a poll's transaction
    prepare: Prepare | None = None
    gather: float = 0.0  # seconds to wait after a poll that brought records, for more to handle with them
    idle_wait: float = IDLE_WAIT
    reply_topic: str | None = None  # where the handlers' events go by default (None: the topic read)
    consumer: AIOKafkaConsumer | None = field(default=None, init=False)
    connected: bool = field(default=False, init=False)
    _lag_labels: set[tuple[str, ...]] = field(default_factory=set, init=False)
    _left_behind: set[asyncio.Future[None]] = field(default_factory=set, init=False)  # stops that hung

    @property
    def answers_on(self) -> str:
        return self.reply_topic or self.topics[0]

    async def run(self) -> None:
        while True:
            try:
                self.consumer = AIOKafkaConsumer(
                    *self.topics,
                    bootstrap_servers=self.settings.kafka_bootstrap,
                    group_id=self.group_id or self.service,
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    # A fetch returns as soon as a record arrives; this is only how long an idle
                    # poll waits at the broker (short values cost the broker CPU when idle).
                    fetch_max_wait_ms=IDLE_FETCH_WAIT_MS,
                    # aiokafka's background fetcher also wakes every consumer_timeout_ms (200 by
                    # default) even though a fetch response, a rebalance, a consumed batch, a seek,
                    # a metadata update or the end of a hold (`hold_prefetched`) wakes it anyway.
                    consumer_timeout_ms=10000,
                    max_poll_records=500,
                    session_timeout_ms=10000,
                    heartbeat_interval_ms=3000,
                    metadata_max_age_ms=30000,
                )
                await asyncio.wait_for(self.consumer.start(), JOIN_TIMEOUT)
                hold_prefetched(self.consumer)
                self.connected = True
                await self._poll_forever()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("consumer error; restarting the consumer")
                self.connected = False
                await asyncio.sleep(1.0)
            finally:
                self.connected = False
                if self.consumer is not None:
                    await self._stop_or_leave_behind(self.consumer)

    async def _stop_or_leave_behind(self, consumer: AIOKafkaConsumer) -> None:
        """Stop a consumer, or leave it behind when that takes over BROKER_TIMEOUT. Not with
        `wait_for`, which after its timeout waits for the cancellation to finish: a consumer whose
        coordinator is lost can swallow the cancellation in stop() and wait on for good, and its
        loop would never start a new one (seen in a chaos run: Payment silent for minutes)."""
        stopping = asyncio.ensure_future(consumer.stop())
        done, _ = await asyncio.wait({stopping}, timeout=BROKER_TIMEOUT)
        if not done:
            stopping.cancel()  # asked, never waited for
            self._left_behind.add(stopping)
            stopping.add_done_callback(self._left_behind.discard)
            log.warning("the consumer did not stop within %s s; left behind", BROKER_TIMEOUT)
        elif not stopping.cancelled() and stopping.exception() is not None:
            log.warning("consumer stop failed: %r", stopping.exception())

    async def _poll_forever(self) -> None:
        """Offsets are committed only for records whose effects are committed, and at most every
        COMMIT_EVERY seconds: each commit is a write on the broker, and a record redelivered
        after a crash is dropped by its eventId anyway."""
        assert self.consumer is not None
        pending: dict[TopicPartition, int] = {}
        last_commit = last_lag = time.monotonic()
        suspect = False  # the last idle poll found records waiting that it did not get
        gathering = False  # the fetches wait at the broker for the gather (`fetch_at_broker`)
        busy = 0.0  # seconds the last poll's records took to handle (0: it brought none)
        while True:
            # getmany returns as soon as records arrive; the timeout only paces the offset commits,
            # so with nothing to commit the loop need not wake up every second.
            wait = COMMIT_EVERY if pending else RECHECK_WAIT if suspect else self.idle_wait
            polled = time.monotonic()
            batches = await self.consumer.getmany(timeout_ms=int(wait * 1000))
            instant = time.monotonic() - polled < INSTANT
            # set before anything awaits, so that the fetch this poll lets go out has it
            if self.gather > 0 and bool(batches) != gathering:
                gathering = bool(batches)
                fetch_at_broker(self.consumer, self.gather if gathering else None)
            elif self.gather <= 0:
                fetch_at_broker(self.consumer, paced(busy, instant) if batches else None)
            if batches and self.gather > 0:
                batches = await self._gathered(batches)
            if not batches and not pending:
                # Idle: make sure it is not a stall. Behind twice in a row (a record that had just
                # arrived is delivered by the next poll) means records are not coming.
                behind = await self._behind()
                if behind and suspect:
                    raise ConsumerStalled("records are waiting in its partitions, and its polls bring none")
                suspect = behind
            else:
                suspect = False
            busy = 0.0
            if batches:
                started = time.monotonic()
                if self.batch:  # one transaction for the poll (each partition in order)
                    await self._work_together(list(batches.values()))
                else:
                    await asyncio.gather(*(self._work_partition(recs) for recs in batches.values()))
                busy = time.monotonic() - started
                for tp, recs in batches.items():
                    pending[TopicPartition(tp.topic, tp.partition)] = recs[-1].offset + 1
            if not batches or time.monotonic() - last_lag >= LAG_EVERY:
                await self._record_lag()
                last_lag = time.monotonic()
            if pending and time.monotonic() - last_commit >= COMMIT_EVERY:
                owned = self.consumer.assignment()  # after a rebalance, the new owner redoes the rest
                pending = {tp: off for tp, off in pending.items() if tp in owned}
                if pending:  # a commit that cannot reach the coordinator restarts the consumer
                    await asyncio.wait_for(self.consumer.commit(pending), BROKER_TIMEOUT)
                pending, last_commit = {}, time.monotonic()

    async def _gathered(
        self, batches: dict[TopicPartition, list[ConsumerRecord]]
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """A consumer whose steps nobody waits on (`gather`): the records of this poll and of those
        that come within `gather` seconds after it, each partition's in order, to be handled in
        one go, or until they are GATHER_MOST. They are taken as they come rather than once at the
        end, so that each next fetch goes at once (`hold_prefetched`)."""
        assert self.consumer is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.gather
        out = {tp: list(recs) for tp, recs in batches.items()}
        held = sum(map(len, out.values()))
        while held < GATHER_MOST and (left := deadline - loop.time()) > 0:
            more = await self.consumer.getmany(timeout_ms=max(1, round(left * 1000)), max_records=GATHER_MOST - held)
            for tp, recs in more.items():
                out.setdefault(tp, []).extend(recs)
                held += len(recs)
        return out

    async def _record_lag(self) -> None:
        """The lag of each assigned partition: the broker's high watermark (from the last fetch)
        minus this consumer's position; partitions no longer assigned are dropped."""
        assert self.consumer is not None
        group, seen = self.group_id or self.service, set()
        for tp in self.consumer.assignment():
            end = self.consumer.highwater(tp)
            if end is None:  # no fetch answered for it yet
                continue
            try:
                async with asyncio.timeout(BROKER_TIMEOUT):
                    position = await self.consumer.position(tp)
            except (TimeoutError, IllegalStateError):
                continue
            labels = (self.service, group, tp.topic, str(tp.partition))
            metrics.CONSUMER_LAG.labels(*labels).set(max(0, end - position))
            seen.add(labels)
        for labels in self._lag_labels - seen:
            try:
                metrics.CONSUMER_LAG.remove(*labels)
            except KeyError:
                pass
        self._lag_labels = seen

    async def _behind(self) -> bool:
        """Do the assigned partitions hold records past this consumer's position? A broker that
        does not answer within BROKER_TIMEOUT counts as yes."""
        assert self.consumer is not None
        parts = list(self.consumer.assignment())
        if not parts:
            return False
        try:
            async with asyncio.timeout(BROKER_TIMEOUT):
                ends = await self.consumer.end_offsets(parts)
                for tp in parts:
                    if ends[tp] > await self.consumer.position(tp):
                        return True
        except TimeoutError:
            return True
        except IllegalStateError:  # a rebalance took a partition away meanwhile: not a stall
            return False
        return False

    async def _work_partition(self, records: list[ConsumerRecord]) -> None:
        run: list[tuple[Event, Handler, ConsumerRecord]] = []
        for record in records:
            item = self._decode(record)
            if item is None:
                continue
            if isinstance(item, str):  # keep the partition's order: what came before goes first
                await self._handle_run(run)
                run = []
                await self._invalid(record, item)
                continue
            run.append((*item, record))
        await self._handle_run(run)

    async def _work_together(self, partitions: list[list[ConsumerRecord]]) -> None:
        """A batch service: everything one poll returned, from all its partitions, in one
        transaction (each partition's events in their order), so a busy consumer pays one
        transaction per poll rather than one per partition. A partition with an unreadable
        message is worked on its own, as usual."""
        run: list[tuple[Event, Handler, ConsumerRecord]] = []
        for records in partitions:
            items = [self._decode(r) for r in records]
            if any(isinstance(i, str) for i in items):
                await self._work_partition(records)
                continue
            run += [(*i, r) for i, r in zip(items, records, strict=True) if i is not None]
        await self._handle_run(run)

    def _decode(self, record: ConsumerRecord) -> tuple[Event, Handler] | str | None:
        """(event, handler) for a record this service handles, None for one it does not, the error
        for one that cannot be read."""
        named, replay_for = None, None
        for k, v in record.headers or ():
            if k == "eventName":
                named = v
            elif k == "replayFor":
                replay_for = v
        name = named.decode("utf-8", "replace") if named is not None else None
        if name is not None and name not in self.handlers:
            # not ours, by the header the relay sets: skipped without parsing the body
            metrics.count_event(self.service, name, metrics.IGNORED)
            return None
        if replay_for is not None and replay_for.decode("utf-8", "replace") != self.service:
            # a dead letter put back for the service that dead-lettered it, not this one
            metrics.count_event(self.service, name or "?", metrics.IGNORED)
            return None
        try:
            event = Event.from_bytes(record.value)
        except InvalidEvent as e:
            return str(e) or "invalid event"
        handler = self.handlers.get(event.eventName)
        if handler is None:
            metrics.count_event(self.service, event.eventName, metrics.IGNORED)
            return None
        return event, handler

    async def _invalid(self, record: ConsumerRecord, error: str) -> None:
        named = dict(record.headers or ()).get("eventName")
        name = named.decode("utf-8", "replace") if named else "?"
        with tracing.consume_span(self.service, self._group, record, name=name):
            log.warning("invalid message to the dead-letter topic: %s", error, extra={"offset": record.offset})
            await self._dead_letter(record, error)
        metrics.count_event(self.service, name, metrics.DEAD_LETTERED)

    @property
    def _group(self) -> str:
        return self.group_id or self.service

    def _batchable(self, event: Event) -> bool:
        return event.eventName in self.batch

    async def _handle_one(
        self,
        event: Event,
        handler: Handler,
        record: ConsumerRecord,
        prepared: Any = None,
        batch: Any = None,
        run: list[tuple[Event, Handler, ConsumerRecord]] | None = None,
    ) -> None:
        """One event in its span (linked to the `batch` span it was part of); given `run` (a batch
        of this one event), its `prepare` is done in that span first."""
        token = correlation_id.set(event.correlationId)
        try:
            with tracing.consume_span(self.service, self._group, record, event, batch=batch):
                if run is not None:
                    prepared = (await self._prepare(run)).get(event.eventId)
                await self.dispatch(event, handler, record, prepared)
        finally:
            correlation_id.reset(token)

    async def _handle_run(self, run: list[tuple[Event, Handler, ConsumerRecord]]) -> None:
        """The events in order; each stretch of batchable ones together, the others one by one."""
        i = 0
        while i < len(run):
            j = i
            while j < len(run) and self._batchable(run[j][0]):
                j += 1
            if j > i + 1:
                await self._handle_batch(run[i:j])
                i = j
            elif j > i:  # a batch of one: prepared and handled as one event, in its span
                await self._handle_one(*run[i], run=run[i:j])
                i = j
            else:
                await self._handle_one(*run[i])
                i += 1

    async def _prepare(self, run: list[tuple[Event, Handler, ConsumerRecord]]) -> dict[Any, Any]:
        """What the loop's `prepare` gives for these events (nothing when it fails: the handlers
        then do without, each its own call)."""
        if self.prepare is None:
            return {}
        try:
            return await self.prepare([e for e, _, _ in run])
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("preparing a batch of %d events failed", len(run), exc_info=True)
            return {}

    async def _handle_batch(self, run: list[tuple[Event, Handler, ConsumerRecord]]) -> None:
        """Several batchable events: prepared together, then handled in one transaction; if that
        fails, rolled back and handled one by one."""
        with tracing.batch_span(self.service, self._group, [r for _, _, r in run]) as batch:
            prepared = await self._prepare(run)
            try:
                async with PgUnitOfWork.begin(self.pool, self.answers_on, confirm=False) as uow:
                    # every eventId of the batch recorded in one statement; the ones already there
                    # (and a repeat within the batch) are skipped
                    events = tuple(e for e, _, _ in run)
                    new = await uow.record_handled(events)
                    memo: dict[str, Any] = {}
                    outcomes: list[tuple[str, str]] = []
                    for event, handler, record in run:
                        if event.eventId not in new:
                            outcomes.append((event.eventName, metrics.DUPLICATE))
                            continue
                        new.discard(event.eventId)
                        outcomes.append((event.eventName, metrics.HANDLED))
                        token = correlation_id.set(event.correlationId)
                        try:
                            with tracing.consume_span(self.service, self._group, record, event, batch=batch):
                                ctx = HandlerContext(
                                    self.pool, event, self.answers_on, uow, prepared.get(event.eventId), events, memo
                                )
                                await handler(event, ctx)
                        finally:
                            correlation_id.reset(token)
                for name, outcome in outcomes:  # counted once the batch is committed
                    metrics.count_event(self.service, name, outcome)
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # rolled back: nothing of the batch happened
                log.info(
                    "a batch of %d events failed (%s: %s); handling them one by one", len(run), type(e).__name__, e
                )
            for event, handler, record in run:
                await self._handle_one(event, handler, record, prepared.get(event.eventId), batch=batch)

    async def dispatch(
        self, event: Event, handler: Handler, record: ConsumerRecord | None = None, prepared: Any = None
    ) -> None:
        """Run the handler. An outage (database or network) is waited out, however long: the event
        is not lost and not dead-lettered for it. Anything else is retried a few times, then the
        event goes to the dead-letter topic."""
        attempts = self.settings.consumer_max_attempts
        attempt, outage = 0, 0
        while True:
            try:
                await handler(event, HandlerContext(self.pool, event, self.answers_on, prepared=prepared))
                metrics.count_event(self.service, event.eventName, metrics.HANDLED)
                return
            except AlreadyHandled:
                log.debug("duplicate event skipped", extra={"eventId": str(event.eventId)})
                metrics.count_event(self.service, event.eventName, metrics.DUPLICATE)
                return
            except TRANSIENT as e:
                outage += 1
                log.warning("outage while handling %s (%s); retrying", event.eventName, e)
                await asyncio.sleep(outage_pause(outage))
                continue
            except Exception as e:
                attempt += 1
                if attempt == attempts:
                    log.exception(
                        "handler failed %d times; event to the dead-letter topic",
                        attempts,
                        extra={"eventName": event.eventName, "eventId": str(event.eventId)},
                    )
                    if record is not None:
                        await self._dead_letter(record, f"{type(e).__name__}: {e}")
                        metrics.count_event(self.service, event.eventName, metrics.DEAD_LETTERED)
                    return
                await asyncio.sleep(retry_pause(attempt))

    async def _dead_letter(self, record: ConsumerRecord, error: str) -> None:
        async with PgUnitOfWork.begin(self.pool, self.answers_on, confirm=False) as uow:
            await add_dead_letter(uow, self.settings, self.service, record, error)
