"""Fakes for Payment's handlers: the payments table in a dict (the same named methods as
`tinysaga.payment.repository.PaymentRepository`, the same semantics; a write is kept at once, its
event only when the unit of work commits), a wallet that keeps balances and a ledger per order, and
Order's answer to "did you ask for this compensation?"."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from tests.unit.fakes import FakeUnitOfWork
from tinysaga.contracts import events as ev
from tinysaga.contracts.events import Event
from tinysaga.payment.adapters import WalletUnavailable
from tinysaga.payment.domain import Payment, Status
from tinysaga.payment.handlers import PaymentHandlers


@dataclass
class PaymentTable:
    rows: dict[str, Payment] = field(default_factory=dict)
    touched: dict[str, int] = field(default_factory=dict)  # order -> change counter (updated_at)
    clock: int = 0
    charge_statements: int = 0  # the add_charges calls (one statement each in the real one)

    def put(self, p: Payment) -> None:
        self.clock += 1
        self.rows[p.order_id] = p
        self.touched[p.order_id] = self.clock


@dataclass
class FakePayments:
    table: PaymentTable
    uow: FakeUnitOfWork | None = None

    async def acted_on(self, order_ids: Sequence[str]) -> set[str]:
        """The orders among `order_ids` that have a row."""
        return {o for o in order_ids if o in self.table.rows}

    async def get(self, order_id: str) -> Payment | None:
        """The order's row, or None."""
        return self.table.rows.get(order_id)

    async def void_pending(self, limit: int = 100) -> list[Payment]:
        """The VOID_PENDING rows, least recently changed first, at most `limit`."""
        rows = [p for p in self.table.rows.values() if p.status == Status.VOID_PENDING]
        return sorted(rows, key=lambda p: self.table.touched[p.order_id])[:limit]

    async def add_charges(self, charges: Sequence[tuple[Payment, Event]]) -> None:
        """Each row in turn, its event staged with it; nothing for an order that has a row (or got one
        earlier in `charges`). Counted in `table.charge_statements`."""
        assert self.uow is not None
        self.table.charge_statements += 1
        for p, event in charges:
            if p.order_id not in self.table.rows:
                self.table.put(p)
                await self.uow.stage(event)

    async def add_unless_exists(self, p: Payment, event: Event | None = None) -> None:
        """Insert the row unless the order has one, staging `event` only with a row written."""
        if p.order_id not in self.table.rows:
            self.table.put(p)
            if event is not None:
                assert self.uow is not None
                await self.uow.stage(event)

    async def move(
        self, order_id: str, from_status: Status, to: Status, detail: str, event: Event | None = None
    ) -> bool:
        """Change status and detail if the row is in `from_status`, staging `event`; else False."""
        p = self.table.rows.get(order_id)
        if p is None or p.status != from_status:
            return False
        self.table.put(replace(p, status=to, detail=detail))
        if event is not None:
            assert self.uow is not None
            await self.uow.stage(event)
        return True


@dataclass
class FakeWallet:
    """Balances and one PAYMENT and one REFUND answer per order, as the Wallet service keeps them."""

    balances: dict[str, Decimal] = field(default_factory=dict)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)  # order -> (user, answer)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    down: bool = False
    debit_calls: list[list[dict[str, str]]] = field(default_factory=list)
    refund_calls: list[tuple[str, str, str]] = field(default_factory=list)
    _next: int = 0

    def _tx(self) -> str:
        self._next += 1
        return f"tx-{self._next}"

    async def debit_many(self, debits: list[dict[str, str]]) -> list[dict[str, Any]]:
        self.debit_calls.append(debits)
        if self.down:
            raise WalletUnavailable("ClientConnectorError: wallet down")
        out = []
        for d in debits:
            order, amount = d["orderId"], Decimal(d["amount"])
            if order in self.payments:
                out.append(self.payments[order]["answer"])
                continue
            if order in self.refunds:
                out.append({"transactionId": None, "status": "REFUSED", "amount": float(amount)})
                continue
            balance = self.balances.get(d["userId"], Decimal(0))
            status = "COMPLETED" if balance >= amount else "FAILED"
            if status == "COMPLETED":
                self.balances[d["userId"]] = balance - amount
            answer = {"transactionId": self._tx(), "status": status, "amount": float(amount)}
            self.payments[order] = {"user": d["userId"], "amount": amount, "answer": answer}
            out.append(answer)
        return out

    async def refund(self, order_id: str, user_id: str, reason: str) -> dict[str, Any]:
        self.refund_calls.append((order_id, user_id, reason))
        if self.down:
            raise WalletUnavailable("ClientConnectorError: wallet down")
        if order_id in self.refunds:
            return self.refunds[order_id]
        pay = self.payments.get(order_id)
        charged = pay is not None and pay["answer"]["status"] == "COMPLETED"
        amount = pay["amount"] if charged else Decimal(0)
        self.balances[user_id] = self.balances.get(user_id, Decimal(0)) + amount
        answer = {"transactionId": self._tx(), "status": "REFUNDED" if charged else "NOTHING_TO_REFUND"}
        self.refunds[order_id] = answer
        return answer


@dataclass
class FakeOrders:
    """The orders Order timed out and canceled (its history holds the event), and what it was asked."""

    timed_out_orders: set[str] = field(default_factory=set)
    canceled_orders: set[str] = field(default_factory=set)
    retried_orders: set[str] = field(default_factory=set)  # an operator asked to retry the refund
    asked: list[tuple[str, str]] = field(default_factory=list)

    async def requested(self, order_id: str, event_name: str) -> bool:
        self.asked.append((order_id, event_name))
        held = {
            ev.ORDER_TIMED_OUT: self.timed_out_orders,
            ev.ORDER_CANCEL_REQUESTED: self.canceled_orders,
            ev.REFUND_RETRY_REQUESTED: self.retried_orders,
        }
        return order_id in held.get(event_name, set())


@dataclass
class PaymentWorld:
    """Payment's handlers over the fakes, sharing one unit of work."""

    uow: FakeUnitOfWork = field(default_factory=FakeUnitOfWork)
    table: PaymentTable = field(default_factory=PaymentTable)
    wallet: FakeWallet = field(default_factory=FakeWallet)
    orders: FakeOrders = field(default_factory=FakeOrders)

    def __post_init__(self) -> None:
        self.handlers = PaymentHandlers(
            repo=lambda uow: FakePayments(self.table, uow),
            reader=FakePayments(self.table),
            begin=self.uow.transaction,
            wallet=self.wallet,
            orders=self.orders,
            currency="USD",
        )

    def row(self, order_id: str) -> Payment | None:
        return self.table.rows.get(order_id)
