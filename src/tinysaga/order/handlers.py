"""Order's steps of the saga: `create_order` (from the API), `track` (moves the order on the saga's
outcomes, and to CANCELED once both sides of a cancel are settled), `time_out` (the sweeper, when a
saga passes its deadline), and the requests `cancel_order`, `ship`, `deliver` (ADR 13). Each takes
what it needs explicitly: a repository factory (a unit of work -> its OrderRepository), clients,
config values."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge, Histogram

from tinysaga.contracts import events as ev
from tinysaga.contracts import saga
from tinysaga.contracts.ids import new_id
from tinysaga.contracts.records import Record
from tinysaga.order import domain, saga_map
from tinysaga.order.adapters import CatalogueClient
from tinysaga.order.orchestrator import CHOREOGRAPHY, Orchestrator, Outgoing
from tinysaga.order.repository import DeadLetterRepository, OrderRepository, Row, state_of
from tinysaga.platform import tracing
from tinysaga.platform.consumer import Handler, HandlerContext

log = logging.getLogger("tinysaga.order")

REFUND_FAILED_ALERTS = Counter("tinysaga_refund_failed_total", "orders whose refund failed (critical)")
TRANSITIONS = Counter("tinysaga_order_transitions_total", "order status changes", ["to"])
IGNORED = Counter("tinysaga_order_events_ignored_total", "stale or duplicate events left without effect", ["event"])
_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
SAGA_SECONDS = Histogram(
    "tinysaga_saga_duration_seconds",
    "from the order's creation to the end of its saga, by outcome (PLACED, FAILED, CANCELED)",
    ["outcome"],
    buckets=_BUCKETS,
)
STEP_SECONDS = Histogram(
    "tinysaga_saga_step_seconds",
    "how long an order waited for a step: from its previous change to the change the step's event made",
    ["step"],
    buckets=_BUCKETS,
)

IN_FLIGHT_SAGAS = Gauge("tinysaga_sagas_in_flight", "orders whose saga is not settled yet, by status", ["status"])
TURNED_AWAY = Counter(
    "tinysaga_orders_turned_away_total",
    "orders answered 503 because no more sagas fit (ADR 50, 52), by why: the bound, or the wait",
    ["reason"],
)
STUCK_SAGAS = Gauge(
    "tinysaga_sagas_stuck", "orders that stayed in their status past its deadline (ADR 40), by status", ["status"]
)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def step_of(event_name: str) -> str:
    """The saga step whose outcome `event_name` is (the event's name when no step publishes it)."""
    steps = saga.producers_of(ev.ALIASES.get(event_name, event_name))
    return steps[0].name if steps else event_name


def observe(row: Row, new: domain.OrderState, event_name: str, now: datetime) -> None:
    """The time the order waited for this step's outcome (since its last change) and, when the
    change ends the saga, the saga's duration by outcome."""
    STEP_SECONDS.labels(step_of(event_name)).observe(max(0.0, (now - row["updated_at"]).total_seconds()))
    if new.status in domain.TERMINAL and row["order_status"] not in domain.TERMINAL:
        SAGA_SECONDS.labels(new.status.value).observe(max(0.0, (now - row["created_at"]).total_seconds()))


RepositoryFactory = Callable[[Any], OrderRepository]  # a unit of work -> the repository on it
Begin = Callable[[], AbstractAsyncContextManager[Any]]  # a transaction of its own -> its unit of work
DeadLettersFactory = Callable[[Any], DeadLetterRepository]  # a unit of work -> the dead letters on it


def announcement(name: str, row: Row, new: domain.OrderState, **extra: Any) -> ev.Event:
    """Order's event for the change of the order in `row` to `new` (ORDER_TIMED_OUT,
    ORDER_CANCEL_REQUESTED, ORDER_CANCELED, ORDER_SHIPPED, ORDER_DELIVERED), `extra` on top."""
    return ev.make_event(
        name,
        correlation_id=str(row["order_id"]),
        orderId=str(row["order_id"]),
        userId=row["user_id"],
        orderStatus=new.status,
        paymentType=row["payment_type"],
        productId=row["product_id"],
        productQuantity=row["product_quantity"],
        price=row["price"],
        totalAmount=row["total_amount"],
        currency=row["currency"],
        transactionId=new.transaction_id,
        **extra,
    )


async def _save(
    repo: OrderRepository,
    row: Row,
    new: domain.OrderState,
    event_name: str,
    announce: ev.Event | None = None,
    now: datetime | None = None,
    commands: Outgoing = (),
) -> Row:
    """Save a transition (with the event that announces it, if any); count it and time it (when
    `now` is given), and raise the alarm when the refund has just failed (once per order: a canceled
    order's later changes keep REFUND_FAILED and raise nothing again). The order as changed."""
    changed = await repo.save_change(row, new, event_name, announce, commands)
    TRANSITIONS.labels(new.status).inc()
    if now is not None:
        observe(row, new, event_name, now)
    if domain.needs_alert(new) and not domain.needs_alert(state_of(row)):
        REFUND_FAILED_ALERTS.inc()
        log.error(
            "ALERT refund failed for order %s (user %s, %s %s): an operator must refund it",
            row["order_id"],
            row["user_id"],
            row["total_amount"],
            row["currency"],
            extra={"alert": "REFUND_FAILED", "orderId": str(row["order_id"])},
        )
    return changed


# ---- create_order --------------------------------------------------------------------------------


class InFlightBound:
    """The bound on sagas in flight (ADR 50, ADR 52): a new order is turned away
    (domain.Overloaded) while `bound` orders are accepted and not yet settled, across every replica
    of Order, or while at least `wait_from` are and an order accepted now would take longer than
    `max_wait` seconds (the sagas in flight's expected wait, `domain.InFlight.expected_wait`): the
    first holds whatever the machine, the second keeps an accepted order's wait short on a machine
    slower than the bound assumes. Either of `bound` and `max_wait` at 0 or less turns it off.

    The truth is the orders table (`count`: one scan of the unsettled orders' partial index). A
    replica counts at most once every `max_age` seconds and adds the orders it accepted since, so
    far from the bound an order costs no query. Once that estimate reaches `near` of a limit (the
    bound, or `wait_from`) it counts before each answer, at most once every `min_age` seconds, and
    requests waiting meanwhile share that count: the other replica's orders are seen within
    `min_age`, so a limit is passed by at most what the replicas accept in that time. A count cannot
    see an order admitted and not yet written (from `admit` to `written`), so those stay in the
    estimate after it. An order turned away is told to come back after `retry_after` seconds."""

    def __init__(
        self,
        count: Callable[[], Awaitable[domain.InFlight]],
        bound: int,
        *,
        max_wait: float = 0.0,
        wait_from: int = 0,
        retry_after: int = 1,
        max_age: float = 1.0,
        min_age: float = 0.05,
        near: float = 0.75,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.count, self.bound, self.retry_after = count, bound, retry_after
        self.max_wait, self.wait_from = max_wait, wait_from
        self.max_age, self.min_age = max_age, min_age
        limits = ([bound] if bound > 0 else []) + ([wait_from] if max_wait > 0 else [])
        self.near_at = near * min(limits, default=math.inf)
        self.clock = clock
        self.counted, self.counted_at, self.since = domain.InFlight(0, 0.0), -math.inf, 0
        self.writing = 0  # admitted here, their order not yet written (or given up)
        self._lock = asyncio.Lock()

    async def admit(self) -> None:
        """Return when one more saga fits (and count it), raise domain.Overloaded when not; once
        admitted, call `written` when its order is written or given up."""
        refused = await self.refusal()
        if refused is not None:
            turned_away(refused)
            raise refused
        if self.near_at != math.inf:
            self.since += 1
            self.writing += 1

    def written(self) -> None:
        """The order of a saga admitted here is written (a count sees it from now on) or given up."""
        if self.near_at != math.inf:
            self.writing -= 1

    async def refusal(self) -> domain.Overloaded | None:
        """Why one more saga would be turned away now, or None when it fits; nothing is admitted or
        counted as turned away. What `admit` decides, reading the count first when it would."""
        if self.near_at == math.inf:
            return None
        asked = self.clock()
        age = asked - self.counted_at
        if age >= self.max_age or (self.counted.count + self.since >= self.near_at and age >= self.min_age):
            async with self._lock:
                if self.counted_at < asked:  # nobody counted while this one waited
                    writing, since = self.writing, self.since
                    counted = await self.count()
                    # what the count cannot have seen: the orders being written when it started,
                    # and those admitted while it ran
                    self.counted, self.counted_at = counted, self.clock()
                    self.since = writing + self.since - since
        estimate = self.counted.count + self.since
        if 0 < self.bound <= estimate:
            return domain.Overloaded(estimate, self.bound, self.retry_after)
        wait = self.counted.expected_wait()
        if self.max_wait > 0 and estimate >= self.wait_from and wait > self.max_wait:
            return domain.Overloaded(estimate, self.bound, self.retry_after, wait=wait)
        return None


def turned_away(refused: domain.Overloaded) -> None:
    """Count an order turned away, by the limit that did it."""
    TURNED_AWAY.labels(refused.limit).inc()


class CreateOrder:
    """`create_order`: checks that one more saga fits in the bound, the product and its stock, then
    writes the order INITIATED with its ORDER_INITIATED (one statement). A request with an
    Idempotency-Key already used gets the order made the first time (the route compares the
    bodies), bound or not: it starts nothing."""

    def __init__(
        self,
        *,
        reader: OrderRepository,
        writer: Callable[[], AbstractAsyncContextManager[OrderRepository]],
        catalogue: CatalogueClient,
        bound: InFlightBound,
        currency: str,
        timeout_seconds: float,
        orchestrator: Orchestrator = CHOREOGRAPHY,
    ) -> None:
        self.reader = reader
        self.bound = bound
        self.writer = writer
        self.catalogue = catalogue
        self.currency = currency
        self.timeout_seconds = timeout_seconds
        self.orchestrator = orchestrator

    async def __call__(
        self,
        user_id: str,
        product_id: str,
        quantity: int,
        payment_type: str,
        key: str | None = None,
        digest: str | None = None,
    ) -> Row:
        if key:
            prior = await self.reader.by_idempotency_key(user_id, key)
            if prior is not None:
                return prior
        await self.bound.admit()
        try:
            return await self._write(user_id, product_id, quantity, payment_type, key, digest)
        finally:
            self.bound.written()

    async def _write(
        self, user_id: str, product_id: str, quantity: int, payment_type: str, key: str | None, digest: str | None
    ) -> Row:
        product = await self.catalogue.product(product_id)
        if not domain.in_stock(product.available_count, quantity):
            raise domain.OutOfStock(product_id, product.available_count)
        order = domain.NewOrder(
            order_id=new_id(),
            user_id=user_id,
            product_id=product_id,
            quantity=quantity,
            price=product.price,
            total=domain.total(product.price, quantity),
            currency=self.currency,
            payment_type=payment_type,
            deadline=domain.deadline(datetime.now(UTC), self.timeout_seconds),
            idempotency_key=key,
            request_hash=digest,
            trace_id=tracing.current_trace_id(),
        )
        event = ev.make_event(
            ev.ORDER_INITIATED,
            correlation_id=str(order.order_id),
            orderId=str(order.order_id),
            userId=user_id,
            orderStatus=domain.Status.INITIATED,
            paymentType=payment_type,
            productId=product_id,
            productQuantity=quantity,
            price=order.price,
            totalAmount=order.total,
            currency=self.currency,
        )
        async with self.writer() as repo:
            try:
                row = await repo.add_order(order, event, self.orchestrator.commands(event))
            except asyncpg.UniqueViolationError:
                # the same Idempotency-Key raced in twice: the first one won
                prior = await repo.by_idempotency_key(user_id, key)
                assert prior is not None
                return prior
        log.info("order %s initiated", order.order_id, extra={"orderId": str(order.order_id)})
        return row


# ---- cancel_order, ship, deliver ------------------------------------------------------------------


class OrderRequest:
    """A request that moves an order (`domain.Request`): decided on the order as read, then written
    with its event in one statement guarded by the status it was read in; if the order moved on
    meanwhile (a saga outcome landed), it is read and decided again. Answers the order: changed,
    or as it is when it is already there (a repeat). Raises domain.UnknownOrder (no such order,
    or not `owner`'s) and domain.Refused (not from its status)."""

    request: domain.Request
    attempts = 8  # each retry follows a change of status, and statuses only move forward

    def __init__(
        self,
        *,
        reader: OrderRepository,
        writer: Callable[[], AbstractAsyncContextManager[OrderRepository]],
        orchestrator: Orchestrator = CHOREOGRAPHY,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.orchestrator = orchestrator

    async def __call__(self, order_id: uuid.UUID, owner: str | None = None) -> Row:
        for _ in range(self.attempts):
            row = await self.reader.get(order_id)
            if row is None or (owner is not None and row["user_id"] != owner):
                raise domain.UnknownOrder(str(order_id))
            state = state_of(row)
            decision = domain.decide(self.request, state.status)
            if decision == domain.Decision.ALREADY:
                return row
            if decision == domain.Decision.REFUSED:
                raise domain.Refused(self.request, state.status)
            new = domain.requested(state, self.request)
            event = announcement(domain.ANNOUNCES[self.request], row, new)
            async with self.writer() as repo:
                changed = await repo.requested_change(row, new, event, self.orchestrator.commands(event))
            if changed is not None:
                TRANSITIONS.labels(new.status).inc()
                log.info("order %s: %s (was %s)", order_id, new.status, state.status, extra={"orderId": str(order_id)})
                return changed
        raise RuntimeError(f"order {order_id} kept changing under {self.request}")  # pragma: no cover


class RetryRefund:
    """`retry_refund` (an operator): for an order whose refund failed, stages REFUND_RETRY_REQUESTED
    with a history row; Payment's `refund` step retries at the wallet and answers REFUND_DONE (the
    order's refund status moves on) or REFUND_FAILED again. Raises domain.UnknownOrder and
    domain.NothingToRetry."""

    attempts = 8

    def __init__(
        self,
        *,
        reader: OrderRepository,
        writer: Callable[[], AbstractAsyncContextManager[OrderRepository]],
        orchestrator: Orchestrator = CHOREOGRAPHY,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.orchestrator = orchestrator

    async def __call__(self, order_id: uuid.UUID) -> Row:
        for _ in range(self.attempts):
            row = await self.reader.get(order_id)
            if row is None:
                raise domain.UnknownOrder(str(order_id))
            new = domain.refund_retry(state_of(row))
            event = ev.make_event(
                ev.REFUND_RETRY_REQUESTED,
                correlation_id=str(row["order_id"]),
                orderId=str(row["order_id"]),
                userId=row["user_id"],
                orderStatus=row["order_status"],
                paymentType=row["payment_type"],
                productId=row["product_id"],
                productQuantity=row["product_quantity"],
                totalAmount=row["total_amount"],
                currency=row["currency"],
                transactionId=row["transaction_id"],
            )
            async with self.writer() as repo:
                changed = await repo.requested_change(row, new, event, self.orchestrator.commands(event))
            if changed is not None:
                log.warning("order %s: an operator retries its refund", order_id, extra={"orderId": str(order_id)})
                return changed
        raise RuntimeError(f"order {order_id} kept changing under a refund retry")  # pragma: no cover


class ReplayDeadLetters:
    """An operator's bulk replay: the dead letters a filter selects, each with how often it was
    replayed before; unless `dry_run`, each is put back on its topic for the service that
    dead-lettered it (one transaction for them all) and its replay counted."""

    def __init__(self, *, reader: DeadLetterRepository, begin: Begin, repository: DeadLettersFactory) -> None:
        self.reader = reader
        self.begin = begin
        self.repository = repository

    async def __call__(self, f: domain.DeadLetterFilter, dry_run: bool) -> list[Row]:
        if dry_run:
            return await self.reader.matching(f)
        async with self.begin() as uow:
            repo = self.repository(uow)
            rows = await repo.matching(f, lock=True)
            for row in rows:
                await repo.replay(row)
        log.warning("%d dead letters replayed (%s)", len(rows), f)
        return rows

    async def one(self, dead_letter_id: int) -> Row | None:
        """Replay one dead letter (None: no such letter)."""
        async with self.begin() as uow:
            repo = self.repository(uow)
            row = await repo.get_for_update(dead_letter_id)
            if row is not None:
                await repo.replay(row)
        return row


class CancelOrder(OrderRequest):
    """`cancel_order` (the owner): INITIATED, PAYMENT_DONE, PLACED -> CANCELING with
    ORDER_CANCEL_REQUESTED; Payment and Inventory undo what was done and `track` ends it CANCELED."""

    request = domain.Request.CANCEL


class ShipOrder(OrderRequest):
    """`ship` (an admin): PLACED -> ON_THE_WAY with ORDER_SHIPPED."""

    request = domain.Request.SHIP


class DeliverOrder(OrderRequest):
    """`deliver` (an admin): ON_THE_WAY -> DELIVERED with ORDER_DELIVERED."""

    request = domain.Request.DELIVER


# ---- stuck sagas (ADR 40) --------------------------------------------------------------------------


class StuckSagas:
    """The sagas that stayed in their status past its deadline (`domain.stuck_after`, from the saga
    definition's stays, scaled to the saga timeout), before the sweeper fails them: listed for the
    operator, and counted in gauges at each scrape (every replica reads the same database, so they
    agree; the rules take the max)."""

    def __init__(self, *, reader: OrderRepository, timeout_seconds: float) -> None:
        self.reader = reader
        self.after = {status.value: secs for status, secs in domain.stuck_after(timeout_seconds).items()}

    async def list(self, limit: int) -> list[dict[str, Any]]:
        """The stuck sagas, longest in their status first: the order, its status, the steps it waits
        for, how long it has been there and may be, its last event."""
        out = []
        for r in await self.reader.stuck(self.after, limit):
            status = domain.Status(r["order_status"])
            steps = domain.waiting_for(status, r["last_event"], r["payment_settled"], r["stock_settled"])
            out.append(
                {
                    "orderId": str(r["order_id"]),
                    "userId": r["user_id"],
                    "orderStatus": status.value,
                    "step": steps[0] if steps else None,
                    "waitingFor": steps,
                    "ageSeconds": round(float(r["age_seconds"]), 3),
                    "deadlineSeconds": self.after[status.value],
                    "lastEvent": r["last_event"],
                    "lastEventAt": r["last_at"].isoformat() if r["last_at"] else None,
                    "enteredAt": r["updated_at"].isoformat(),
                    "createdAt": r["created_at"].isoformat(),
                    # when the sweeper fails it (a CANCELING order is not swept: ADR 13)
                    "timesOutAt": r["deadline_at"].isoformat() if status in domain.IN_FLIGHT else None,
                    "traceId": r["trace_id"],
                }
            )
        return out

    async def summary(self, window_seconds: float, dead_letters: DeadLetterRepository) -> dict[str, Any]:
        """The operations view's figures: the sagas that ended in the window (per second, p50, p99,
        by outcome); the sagas in flight by status, with the steps they await, how many are stuck
        and how long the oldest has been waiting; the dead letters kept and not replayed."""
        ended = [(r["outcome"], float(r["seconds"])) for r in await self.reader.ended_within(window_seconds)]
        counts = await self.reader.saga_counts(self.after)
        kept, fresh = await dead_letters.counts()
        return {
            **domain.saga_summary(ended, window_seconds),
            "inFlight": {status: n for status, (n, _, _) in counts.items()},
            "awaiting": {status: domain.awaited_steps(domain.Status(status)) for status in counts},
            "stuck": {status: stuck for status, (_, stuck, _) in counts.items()},
            # the longest an order in flight in each status has been waiting there (its step's wait)
            "oldestSeconds": {
                status: None if oldest is None else round(float(oldest), 3) for status, (_, _, oldest) in counts.items()
            },
            "deadLetters": {"kept": kept, "notReplayed": fresh},
        }

    async def refresh_gauges(self) -> None:
        for status, (n, stuck, _) in (await self.reader.saga_counts(self.after)).items():
            IN_FLIGHT_SAGAS.labels(status).set(n)
            STUCK_SAGAS.labels(status).set(stuck)


# ---- the saga map ---------------------------------------------------------------------------------

RECORDS_TIMEOUT_SECONDS = 2.0  # how long the map waits for each participant's records
RecordsFetch = Callable[[str, str], Awaitable[list[Record]]]  # (service, order id) -> its records


class SagaMap:
    """The saga map of one order (`saga_map.build`): Order's own records from its history, and the
    other participants' (every service with a step in the saga definition) asked of each at once;
    one that does not answer within `timeout_seconds`, or answers something else than its records,
    is unknown on the map, which is drawn all the same."""

    def __init__(
        self, *, reader: OrderRepository, fetch: RecordsFetch, timeout_seconds: float = RECORDS_TIMEOUT_SECONDS
    ) -> None:
        self.reader = reader
        self.fetch = fetch
        self.timeout_seconds = timeout_seconds

    async def _ask(self, service: str, order_id: str) -> list[Record] | str:
        """The participant's records, or why there are none to show."""
        try:
            async with asyncio.timeout(self.timeout_seconds):
                return await self.fetch(service, order_id)
        except TimeoutError:
            return f"no answer within {self.timeout_seconds:g} s"
        except Exception as e:  # down, or answering nonsense: the map shows it unknown
            log.warning("the saga map got no records from %s for order %s: %s", service, order_id, e)
            return str(e)[:200] or type(e).__name__

    async def __call__(self, row: Row) -> dict[str, Any]:
        order_id = str(row["order_id"])
        others = [p for p in saga.participants() if p != saga.ORDER]
        history, *asked = await asyncio.gather(
            self.reader.history(row["order_id"]), *(self._ask(p, order_id) for p in others)
        )
        answers: dict[str, list[Record]] = {saga.ORDER: saga_map.order_records(history)}
        unknown: dict[str, str] = {}
        for service, got in zip(others, asked, strict=True):
            if isinstance(got, str):
                unknown[service] = got
            else:
                answers[service] = got
        last_event = history[-1]["event_name"] if history else None
        return saga_map.build(row, last_event, answers, unknown)


# ---- track ---------------------------------------------------------------------------------------


class Track:
    """`track`: applies a saga outcome (PAYMENT_*, INVENTORY_*, REFUND_*, and a cancel's
    PAYMENT_VOIDED, INVENTORY_RELEASED) to the order's state machine; the change that makes the
    order CANCELED stages ORDER_CANCELED with it. A stale or duplicate event, or one for an unknown
    order, leaves it as it is (counted). In a batch, the first event locks the orders of all of
    them with one statement, and each event then works on its order as the batch left it; the
    plain changes (nothing staged, no alert) are saved together by one statement before the commit
    (ADR 70)."""

    LOCKED = "track: orders locked"  # ctx.memo's key: order id -> its row as this transaction has it

    def __init__(
        self, repository: RepositoryFactory, clock: Clock = utc_now, orchestrator: Orchestrator = CHOREOGRAPHY
    ) -> None:
        self.repository = repository
        self.clock = clock
        self.orchestrator = orchestrator

    async def __call__(self, event: ev.Event, ctx: HandlerContext) -> None:
        event = ev.typed_as(event, ev.OrderEvent)
        name = event.name_canonical
        order_id = _order_id(event)
        async with ctx.transaction() as uow:
            repo = self.repository(uow)
            row = await self._locked(repo, ctx, order_id) if order_id is not None else None
            if row is None:
                log.warning("event %s for unknown order %s ignored", event.eventName, event.orderId)
                IGNORED.labels(name).inc()
                return
            before = state_of(row)
            new = domain.apply(before, domain.Input(name, event.failReason, event.transactionId))
            if new is None:
                log.info(
                    "event %s left order %s in %s (stale or duplicate)",
                    event.eventName,
                    event.orderId,
                    row["order_status"],
                )
                IGNORED.labels(name).inc()
                return
            if new.status == domain.Status.CANCELED and before.status != domain.Status.CANCELED:
                announce = announcement(ev.ORDER_CANCELED, row, new)
                await self._save_later_ones(repo, ctx)  # the order's history stays in its order
                changed = await _save(repo, row, new, name, announce, now=self.clock())
                log.info("order %s canceled (refund: %s)", event.orderId, new.refund_status)
            else:
                # an outcome that moves the order on calls for the next step (orchestration)
                moved = new.status != before.status
                commands = self.orchestrator.commands(event) if moved else ()
                if commands or domain.needs_alert(new):
                    await self._save_later_ones(repo, ctx)
                    changed = await _save(repo, row, new, name, now=self.clock(), commands=commands)
                else:
                    changed = self._save_later(repo, uow, ctx, row, new, name)
            ctx.memo[self.LOCKED][row["order_id"]] = changed

    PLAIN = "track: plain changes"  # ctx.memo's key: (the order as changed, event name), saved before the commit

    def _save_later(
        self, repo: OrderRepository, uow: Any, ctx: HandlerContext, row: Row, new: domain.OrderState, name: str
    ) -> Row:
        """A plain change (it stages nothing and raises no alert): kept, with those of the batch's
        other events, and saved by one statement right before the commit (ADR 70). Counted and timed
        now, as `_save` does. The order as changed (its updated_at: now, as the handler's clock has it)."""
        now = self.clock()
        changed = {
            **row,
            "order_status": new.status.value,
            "fail_reason": new.fail_reason,
            "refund_status": new.refund_status,
            "status_info": new.status_info,
            "transaction_id": new.transaction_id,
            "payment_settled": new.payment_settled,
            "stock_settled": new.stock_settled,
            "version": row["version"] + 1,
            "updated_at": now,
        }
        plain: list[tuple[Row, str]] = ctx.memo.setdefault(self.PLAIN, [])
        if not plain:
            uow.before_commit(self.PLAIN, lambda: self._save_later_ones(repo, ctx))
        plain.append((changed, name))
        TRANSITIONS.labels(new.status).inc()
        observe(row, new, name, now)
        return changed

    async def _save_later_ones(self, repo: OrderRepository, ctx: HandlerContext) -> None:
        """Save the plain changes kept so far (before a change saved at once, so that every order's
        history rows stay in the order of its events)."""
        plain: list[tuple[Row, str]] = ctx.memo.get(self.PLAIN, [])
        changes, plain[:] = list(plain), []
        await repo.save_changes(changes)

    async def _locked(self, repo: OrderRepository, ctx: HandlerContext, order_id: uuid.UUID) -> Row | None:
        """The order, locked for this transaction, as this transaction has it (None: no such
        order). The first event of a batch to come here locks the orders of every event of it that
        are not locked yet, in one statement; an event on its own locks its order alone."""
        locked: dict[uuid.UUID, Row | None] = ctx.memo.setdefault(self.LOCKED, {})
        if order_id not in locked:
            ids = {i for e in ctx.batch if (i := _order_id(e)) is not None and i not in locked} | {order_id}
            if len(ids) == 1:
                locked[order_id] = await repo.get_for_update(order_id)
            else:
                rows = await repo.lock_all(ids)
                locked.update({i: rows.get(i) for i in ids})
        return locked[order_id]


def _order_id(event: ev.Event) -> uuid.UUID | None:
    try:
        return uuid.UUID(event.orderId) if event.orderId is not None else None
    except ValueError:
        return None


def handlers(
    repository: RepositoryFactory = OrderRepository.of,
    clock: Clock = utc_now,
    orchestrator: Orchestrator = CHOREOGRAPHY,
) -> dict[str, Handler]:
    """Order's consumer handlers, by step name."""
    return {"track": Track(repository, clock, orchestrator)}


# ---- time_out ------------------------------------------------------------------------------------


class TimeOut:
    """`time_out`: the sweeper. Fails the in-flight sagas past their deadline (ORDER_TIMED_OUT in
    the state machine) and publishes ORDER_TIMED_OUT so that they are compensated. A CANCELING
    order is not in flight for it (`domain.IN_FLIGHT`): its compensations are already requested.
    The repository skips orders another sweeper holds, so one per replica is safe."""

    def __init__(
        self,
        *,
        begin: Begin,
        repository: RepositoryFactory,
        interval_seconds: float,
        limit: int = 100,
        clock: Clock = utc_now,
        orchestrator: Orchestrator = CHOREOGRAPHY,
    ) -> None:
        self.begin = begin
        self.repository = repository
        self.interval_seconds = interval_seconds
        self.limit = limit
        self.clock = clock
        self.orchestrator = orchestrator

    async def sweep_once(self) -> int:
        """One transaction over at most `limit` overdue orders; how many there were."""
        async with self.begin() as uow:
            repo = self.repository(uow)
            rows = await repo.overdue(self.limit)
            for row in rows:
                new = domain.apply(state_of(row), domain.Input(ev.ORDER_TIMED_OUT))
                if new is None:
                    continue
                timed_out = announcement(ev.ORDER_TIMED_OUT, row, new, failReason=new.fail_reason)
                # the time-out and its compensations: a trace of their own, naming the order's
                with tracing.span("time out", order_id=str(row["order_id"]), order_trace_id=row["trace_id"]):
                    commands = self.orchestrator.commands(timed_out)
                    await _save(repo, row, new, ev.ORDER_TIMED_OUT, timed_out, self.clock(), commands)
                    log.warning("order %s timed out in %s; compensating", row["order_id"], row["order_status"])
        return len(rows)

    async def saga_sweeper(self) -> None:
        """The background task: sweep until nothing is overdue, then wait the interval."""
        while True:
            while await self.sweep_once() > 0:
                pass
            await asyncio.sleep(self.interval_seconds)
