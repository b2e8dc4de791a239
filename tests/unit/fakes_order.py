"""A fake of Order's repository: the orders, their history and the alerts in dicts and lists, with
the same named methods as `tinysaga.order.repository.OrderRepository`. Rows are dicts with the
orders table's columns (what the handlers read of an asyncpg.Record). The store is not rolled back
with a failed unit of work (only the staged events are): the tests do not need it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from tests.unit.fakes import FakeUnitOfWork
from tinysaga.contracts import events as ev
from tinysaga.contracts import records
from tinysaga.order import domain
from tinysaga.order.orchestrator import Outgoing

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# the columns a plain transition sets (`OrderRepository.save_changes`)
SAVED = ("fail_reason", "refund_status", "status_info", "transaction_id", "payment_settled", "stock_settled", "version")


@dataclass
class FakeOrders:
    """The tables, and the clock the deadlines are compared with."""

    orders: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    alert_rows: dict[tuple[uuid.UUID, str], dict[str, Any]] = field(default_factory=dict)
    now: datetime = T0
    tick: int = 0
    lock_statements: int = 0  # the statements that locked orders (get_for_update, lock_all)
    batched_saves: list[int] = field(default_factory=list)  # the changes each save_changes statement saved

    def of(self, uow: FakeUnitOfWork) -> FakeOrderRepository:
        """The repository of a unit of work (the handlers' factory)."""
        return FakeOrderRepository(self, uow)

    def clock(self) -> datetime:
        self.tick += 1
        return self.now + timedelta(microseconds=self.tick)

    def put(
        self,
        status: domain.Status = domain.Status.INITIATED,
        *,
        fail_reason: domain.FailReason | None = None,
        refund_status: domain.Refund | None = None,
        deadline_in: float = 60.0,
        transaction_id: str | None = None,
        **columns: Any,
    ) -> uuid.UUID:
        """An order as the tests need it, with its first history row."""
        order_id = uuid.uuid4()
        at = self.clock()
        row = {
            "order_id": order_id,
            "user_id": "user-1",
            "product_id": "PROD-1",
            "product_quantity": 2,
            "price": Decimal("10.00"),
            "total_amount": Decimal("20.00"),
            "currency": "USD",
            "payment_type": "WALLET",
            "order_status": status.value,
            "fail_reason": fail_reason,
            "refund_status": refund_status,
            "status_info": domain.NEW_ORDER_INFO,
            "transaction_id": transaction_id,
            "idempotency_key": None,
            "request_hash": None,
            "payment_settled": False,
            "stock_settled": False,
            "deadline_at": self.now + timedelta(seconds=deadline_in),
            "trace_id": None,
            "version": 1,
            "created_at": at,
            "updated_at": at,
            **columns,
        }
        self.orders[order_id] = row
        self.history.append(
            {
                "order_id": order_id,
                "order_status": status.value,
                "status_info": row["status_info"],
                "event_name": ev.ORDER_INITIATED,
                "at": at,
            }
        )
        return order_id

    def events_of(self, order_id: uuid.UUID) -> list[str]:
        return [h["event_name"] for h in self.history if h["order_id"] == order_id]


@dataclass
class FakeOrderRepository:
    db: FakeOrders
    uow: FakeUnitOfWork | None = None

    # ---- reads ---------------------------------------------------------------------------------

    async def get(self, order_id: uuid.UUID) -> dict[str, Any] | None:
        """A copy of the order's row, or None."""
        row = self.db.orders.get(order_id)
        return dict(row) if row is not None else None

    async def get_for_update(self, order_id: uuid.UUID) -> dict[str, Any] | None:
        """As `get` (nothing else runs concurrently here to lock against); counted in
        `db.lock_statements`."""
        self.db.lock_statements += 1
        return await self.get(order_id)

    async def lock_all(self, order_ids: Any) -> dict[uuid.UUID, dict[str, Any]]:
        """Copies of the orders there are of these, by id; counted in `db.lock_statements`."""
        self.db.lock_statements += 1
        return {i: dict(self.db.orders[i]) for i in order_ids if i in self.db.orders}

    async def in_flight(self) -> domain.InFlight:
        """As the real one: how many unsettled, and the median one's age (percentile_disc: the
        lower middle one)."""
        created = sorted(r["created_at"] for r in self.db.orders.values() if r["order_status"] in domain.UNSETTLED)
        if not created:
            return domain.InFlight(0, 0.0)
        median = created[(len(created) - 1) // 2]
        return domain.InFlight(len(created), max(0.0, (datetime.now(UTC) - median).total_seconds()))

    async def by_idempotency_key(self, user_id: str, key: str | None) -> dict[str, Any] | None:
        """The user's order made with that key, or None (a None key matches nothing, as SQL's =)."""
        for row in self.db.orders.values():
            if key is not None and row["user_id"] == user_id and row["idempotency_key"] == key:
                return dict(row)
        return None

    async def list_for_user(
        self, user_id: str, limit: int, after: tuple[datetime, uuid.UUID] | None = None
    ) -> list[dict[str, Any]]:
        """The user's orders by (created_at, order_id) descending, after `after` if given."""
        rows = sorted(
            (r for r in self.db.orders.values() if r["user_id"] == user_id),
            key=lambda r: (r["created_at"], r["order_id"]),
            reverse=True,
        )
        if after is not None:
            rows = [r for r in rows if (r["created_at"], r["order_id"]) < after]
        return [dict(r) for r in rows[:limit]]

    async def history(self, order_id: uuid.UUID) -> list[dict[str, Any]]:
        """The order's history rows, oldest first."""
        return [dict(h) for h in self.db.history if h["order_id"] == order_id]

    async def requested(self, order_id: uuid.UUID, event_name: str) -> bool | None:
        """Whether its history holds `event_name`; None for no such order."""
        if order_id not in self.db.orders:
            return None
        return event_name in self.db.events_of(order_id)

    async def recent(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        """The latest orders (of `status` if given), newest first."""
        rows = sorted(self.db.orders.values(), key=lambda r: r["created_at"], reverse=True)
        return [dict(r) for r in rows if status is None or r["order_status"] == status][:limit]

    async def steps_of(self, order_ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
        """The history rows of these orders, in the order written."""
        return [dict(h) for h in self.db.history if h["order_id"] in set(order_ids)]

    async def stuck(self, after: dict[str, float], limit: int) -> list[dict[str, Any]]:
        """Orders whose status is in `after` and that entered it (updated_at) more than its seconds
        before the clock, longest first, with age_seconds, last_event and last_at."""
        out = []
        for r in sorted(self.db.orders.values(), key=lambda r: r["updated_at"]):
            age = (self.db.now - r["updated_at"]).total_seconds()
            if r["order_status"] in after and age > after[r["order_status"]]:
                last = [h for h in self.db.history if h["order_id"] == r["order_id"]][-1:]
                out.append(
                    {
                        **r,
                        "age_seconds": age,
                        "last_event": last[0]["event_name"] if last else None,
                        "last_at": last[0]["at"] if last else None,
                    }
                )
        return out[:limit]

    async def saga_counts(self, after: dict[str, float]) -> dict[str, tuple[int, int, float | None]]:
        """For each status of `after`: (orders in it, those of them past its seconds, the seconds
        since the longest there entered it or None)."""
        stuck = {str(r["order_id"]) for r in await self.stuck(after, len(self.db.orders))}
        out: dict[str, tuple[int, int, float | None]] = {}
        for status in after:
            rows = [r for r in self.db.orders.values() if r["order_status"] == status]
            oldest = max(((self.db.now - r["updated_at"]).total_seconds() for r in rows), default=None)
            out[status] = (len(rows), sum(1 for r in rows if str(r["order_id"]) in stuck), oldest)
        return out

    async def ended_within(self, seconds: float) -> list[dict[str, Any]]:
        """For each order whose first PLACED/FAILED/CANCELED history row is within `seconds` of the
        clock: that status (outcome) and the seconds from the order's creation to it."""
        out = []
        for order_id, row in self.db.orders.items():
            ends = [h for h in self.db.history if h["order_id"] == order_id and h["order_status"] in domain.TERMINAL]
            if ends and ends[0]["at"] > self.db.now - timedelta(seconds=seconds):
                out.append(
                    {"outcome": ends[0]["order_status"], "seconds": (ends[0]["at"] - row["created_at"]).total_seconds()}
                )
        return out

    async def alerts(self, limit: int = 500) -> list[dict[str, Any]]:
        """The alerts, newest first."""
        return sorted(self.db.alert_rows.values(), key=lambda a: a["created_at"], reverse=True)[:limit]

    # ---- changes -------------------------------------------------------------------------------

    async def add_order(self, order: domain.NewOrder, event: ev.Event, commands: Outgoing = ()) -> dict[str, Any]:
        """The order INITIATED, its first history row, and its event staged; a key the user
        already used raises UniqueViolationError and writes nothing."""
        assert self.uow is not None
        if order.idempotency_key is not None and await self.by_idempotency_key(order.user_id, order.idempotency_key):
            raise asyncpg.UniqueViolationError("orders_user_idem")
        at = self.db.clock()
        row = {
            "order_id": order.order_id,
            "user_id": order.user_id,
            "product_id": order.product_id,
            "product_quantity": order.quantity,
            "price": order.price,
            "total_amount": order.total,
            "currency": order.currency,
            "payment_type": order.payment_type,
            "order_status": domain.Status.INITIATED.value,
            "fail_reason": None,
            "refund_status": None,
            "status_info": order.status_info,
            "transaction_id": None,
            "idempotency_key": order.idempotency_key,
            "request_hash": order.request_hash,
            "payment_settled": False,
            "stock_settled": False,
            "deadline_at": order.deadline,
            "trace_id": order.trace_id,
            "version": 1,
            "created_at": at,
            "updated_at": at,
        }
        self.db.orders[order.order_id] = row
        self.db.history.append(
            {
                "order_id": order.order_id,
                "order_status": "INITIATED",
                "status_info": order.status_info,
                "event_name": event.eventName,
                "at": at,
            }
        )
        await self.uow.stage(event)
        for topic, command in commands:
            await self.uow.stage(command, topic)
        return dict(row)

    async def save_changes(self, changes: Any) -> None:
        """Plain transitions in their order, each order's row as its change left it (its version as
        given), a history row each; counted in `db.batched_saves` (the real one is one statement)."""
        self.db.batched_saves.append(len(changes))
        for changed, name in changes:
            at = self.db.clock()
            self.db.orders[changed["order_id"]].update(
                {k: changed[k] for k in SAVED} | {"order_status": str(changed["order_status"]), "updated_at": at}
            )
            self.db.history.append(
                {
                    "order_id": changed["order_id"],
                    "order_status": str(changed["order_status"]),
                    "status_info": changed["status_info"],
                    "event_name": name,
                    "at": at,
                }
            )

    async def save_change(
        self,
        row: Any,
        new: domain.OrderState,
        event_name: str,
        announce: ev.Event | None = None,
        commands: Outgoing = (),
    ) -> dict[str, Any]:
        """The transition (version + 1, the settled flags), its history row; a
        REFUND_FAILED alert once per order; `announce` staged on the unit of work. A copy of the
        order as changed."""
        order_id = row["order_id"]
        current = self.db.orders[order_id]
        at = self.db.clock()
        current.update(
            order_status=new.status.value,
            fail_reason=new.fail_reason,
            refund_status=new.refund_status,
            status_info=new.status_info,
            transaction_id=new.transaction_id,
            payment_settled=new.payment_settled,
            stock_settled=new.stock_settled,
            version=current["version"] + 1,
            updated_at=at,
        )
        if announce is not None:
            assert self.uow is not None
            await self.uow.stage(announce)
        for topic, command in commands:
            assert self.uow is not None
            await self.uow.stage(command, topic)
        self.db.history.append(
            {
                "order_id": order_id,
                "order_status": new.status.value,
                "status_info": new.status_info,
                "event_name": event_name,
                "at": at,
            }
        )
        if domain.needs_alert(new):
            self.db.alert_rows.setdefault(
                (order_id, "REFUND_FAILED"),
                {
                    "order_id": order_id,
                    "user_id": row["user_id"],
                    "kind": "REFUND_FAILED",
                    "detail": domain.refund_failed_detail(row["total_amount"], row["currency"]),
                    "created_at": at,
                },
            )
        return dict(current)

    async def requested_change(
        self, row: Any, new: domain.OrderState, event: ev.Event, commands: Outgoing = ()
    ) -> dict[str, Any] | None:
        """Only if the order is still in the status `row` was read in: the new status, status
        info and flags (version + 1), a history row under the event's name, the event
        staged; the new row. Else None, nothing written or staged."""
        assert self.uow is not None
        current = self.db.orders.get(row["order_id"])
        if current is None or current["order_status"] != row["order_status"]:
            return None
        at = self.db.clock()
        current.update(
            order_status=new.status.value,
            status_info=new.status_info,
            payment_settled=new.payment_settled,
            stock_settled=new.stock_settled,
            version=current["version"] + 1,
            updated_at=at,
        )
        self.db.history.append(
            {
                "order_id": row["order_id"],
                "order_status": new.status.value,
                "status_info": new.status_info,
                "event_name": event.eventName,
                "at": at,
            }
        )
        await self.uow.stage(event)
        for topic, command in commands:
            await self.uow.stage(command, topic)
        return dict(current)

    async def overdue(self, limit: int) -> list[dict[str, Any]]:
        """In-flight orders whose deadline is before the clock, oldest deadline first, at most `limit`."""
        rows = sorted(
            (
                r
                for r in self.db.orders.values()
                if r["order_status"] in domain.IN_FLIGHT and r["deadline_at"] < self.db.now
            ),
            key=lambda r: r["deadline_at"],
        )
        return [dict(r) for r in rows[:limit]]


@dataclass
class FakeDeadLetters:
    """Order's copy of the dead-letter topic, with the messages replays put back (`replayed`:
    (topic, key, raw bytes, headers); like the orders, not rolled back with a failed unit of work)."""

    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    replayed: list[tuple[str, str, bytes, dict[str, str]]] = field(default_factory=list)
    now: datetime = T0

    def of(self, uow: FakeUnitOfWork) -> FakeDeadLetterRepository:
        return FakeDeadLetterRepository(self, uow)

    def put(self, service: str, error: str, payload: str, **columns: Any) -> int:
        """A dead letter as the collector keeps it (the event name read from its payload)."""
        i = len(self.rows) + 1
        self.rows[i] = {
            "id": i,
            "dlt_partition": 0,
            "dlt_offset": i,
            "service": service,
            "error": error,
            "source_topic": "order-topic",
            "source_partition": 1,
            "source_offset": 100 + i,
            "message_key": f"key-{i}",
            "payload": payload,
            "payload_encoding": "utf-8",
            "event_name": domain.dead_letter_event_name(payload, "utf-8"),
            "received_at": self.now,
            "replayed_at": None,
            "replay_count": 0,
            **columns,
        }
        return i


@dataclass
class FakeDeadLetterRepository:
    db: FakeDeadLetters
    uow: FakeUnitOfWork | None = None

    async def latest(self, limit: int) -> list[dict[str, Any]]:
        """Newest first."""
        return [dict(r) for r in sorted(self.db.rows.values(), key=lambda r: -r["id"])[:limit]]

    async def counts(self) -> tuple[int, int]:
        """(kept, never replayed)."""
        return len(self.db.rows), sum(1 for r in self.db.rows.values() if r["replay_count"] == 0)

    async def get_for_update(self, dead_letter_id: int) -> dict[str, Any] | None:
        row = self.db.rows.get(dead_letter_id)
        return dict(row) if row is not None else None

    async def matching(self, f: domain.DeadLetterFilter, lock: bool = False) -> list[dict[str, Any]]:
        """Oldest first: the service, event name, error text (case-insensitive) and never-replayed
        conditions of the filter, at most f.limit."""
        out = [
            dict(r)
            for r in sorted(self.db.rows.values(), key=lambda r: r["id"])
            if (f.service is None or r["service"] == f.service)
            and (f.event_name is None or r["event_name"] == f.event_name)
            and (f.error_contains is None or f.error_contains.lower() in r["error"].lower())
            and (f.include_replayed or r["replay_count"] == 0)
        ]
        return out[: f.limit]

    async def replay(self, row: dict[str, Any]) -> None:
        """The original bytes back on their topic for the service that dead-lettered them (a unit of
        work is needed); replayed_at set and the replay counted."""
        assert self.uow is not None
        self.db.replayed.append(
            (
                row["source_topic"],
                row["message_key"],
                row["payload"].encode(),
                {"replayOf": str(row["id"]), "replayFor": row["service"]},
            )
        )
        current = self.db.rows[row["id"]]
        current.update(replayed_at=self.db.now, replay_count=current["replay_count"] + 1)


@dataclass
class FakeParticipants:
    """The other participants as the saga map asks them for an order's records (what
    `adapters.RecordsClient` returns): each answers what `answers` holds for it (nothing when it
    holds nothing), a `down` one raises as an unreachable service does, a `slow` one answers after
    `slow_seconds`, and a `confused` one answers for another order (its records cannot be read)."""

    answers: dict[str, list[records.Record]] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    slow: set[str] = field(default_factory=set)
    confused: set[str] = field(default_factory=set)
    slow_seconds: float = 5.0
    asked: list[tuple[str, str]] = field(default_factory=list)

    async def __call__(self, service: str, order_id: str) -> list[records.Record]:
        import asyncio

        self.asked.append((service, order_id))
        if service in self.down:
            raise ConnectionRefusedError(f"no replica of {service} answered")
        if service in self.slow:
            await asyncio.sleep(self.slow_seconds)
        body = records.answer(service, order_id, self.answers.get(service, []))
        if service in self.confused:
            body["orderId"] = str(uuid.uuid4())
        return records.parse(service, order_id, body)
