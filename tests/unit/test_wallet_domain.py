"""Wallet rules (`tinysaga.wallet.domain`): what a debit or a refund does given the order's ledger
rows, and a property test that any interleaving of retried debits and refunds keeps the money right
(SPEC 4.1: charged at most once, refunded at most once and only if charged, never negative)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinysaga.wallet.domain import MAX_DEPOSIT, LedgerEntry, Status, debit_outcome, refund_outcome

D = Decimal


def payment(status: str = Status.COMPLETED, amount: str = "10.00") -> LedgerEntry:
    return LedgerEntry("tx-pay", "PAYMENT", status, D(amount))


def refund(status: str = Status.REFUNDED, amount: str = "10.00") -> LedgerEntry:
    return LedgerEntry("tx-ref", "REFUND", status, D(amount))


# ---- debit --------------------------------------------------------------------------------------


def test_first_debit_with_enough_money_is_completed() -> None:
    assert debit_outcome(D("100.00"), D("10.00"), None, None) == Status.COMPLETED


def test_debit_of_exactly_the_balance_is_allowed() -> None:
    assert debit_outcome(D("59.97"), D("59.97"), None, None) == Status.COMPLETED
    # the same amount written differently is still the same amount
    assert debit_outcome(D("59.97"), D("59.970"), None, None) == Status.COMPLETED


def test_debit_one_cent_over_the_balance_fails_for_insufficient_funds() -> None:
    assert debit_outcome(D("59.96"), D("59.97"), None, None) == Status.FAILED


def test_debit_from_an_empty_wallet_fails() -> None:
    assert debit_outcome(D("0"), D("0.01"), None, None) == Status.FAILED


def test_decimal_arithmetic_is_exact_where_binary_floats_are_not() -> None:
    # 0.1 + 0.2 in binary floats is 0.30000000000000004 > 0.3; with Decimal it is exactly 0.3
    balance = D("0.1") + D("0.2")
    assert debit_outcome(balance, D("0.30"), None, None) == Status.COMPLETED
    assert debit_outcome(D("19.99") * 3, D("59.97"), None, None) == Status.COMPLETED


@pytest.mark.parametrize("earlier", [Status.COMPLETED, Status.FAILED])
@pytest.mark.parametrize("balance", ["0.00", "5.00", "1000.00"])
def test_a_retried_debit_returns_the_earlier_answer_whatever_the_balance(earlier: str, balance: str) -> None:
    # a retried request is not a second charge, and a refused one does not become a charge later
    assert debit_outcome(D(balance), D("10.00"), payment(earlier), None) == "EXISTING"


def test_a_retried_debit_of_an_order_already_refunded_is_existing_not_a_new_charge() -> None:
    assert debit_outcome(D("1000"), D("10.00"), payment(), refund()) == "EXISTING"


@pytest.mark.parametrize("refund_status", [Status.REFUNDED, Status.NOTHING_TO_REFUND])
@pytest.mark.parametrize("balance", ["0.00", "1000.00"])
def test_a_late_debit_after_a_refund_or_void_is_refused(refund_status: str, balance: str) -> None:
    assert debit_outcome(D(balance), D("10.00"), None, refund(refund_status, "0")) == Status.REFUSED


# ---- refund -------------------------------------------------------------------------------------


def test_refund_of_a_completed_payment_is_refunded() -> None:
    assert refund_outcome(payment(Status.COMPLETED), None) == Status.REFUNDED


def test_refund_without_any_payment_is_nothing_to_refund() -> None:
    assert refund_outcome(None, None) == Status.NOTHING_TO_REFUND


def test_refund_of_a_payment_refused_for_insufficient_funds_is_nothing_to_refund() -> None:
    assert refund_outcome(payment(Status.FAILED), None) == Status.NOTHING_TO_REFUND


@pytest.mark.parametrize("earlier", [Status.REFUNDED, Status.NOTHING_TO_REFUND])
@pytest.mark.parametrize("pay", [None, "COMPLETED", "FAILED"])
def test_a_retried_refund_returns_the_earlier_answer(earlier: str, pay: str | None) -> None:
    p = None if pay is None else payment(pay)
    assert refund_outcome(p, refund(earlier)) == "EXISTING"


def test_statuses_are_the_ledger_strings() -> None:
    # the outcome is written to the ledger's payment_status column as str(outcome)
    assert str(Status.COMPLETED) == "COMPLETED"
    assert str(Status.NOTHING_TO_REFUND) == "NOTHING_TO_REFUND"
    assert MAX_DEPOSIT == D("10000")


# ---- properties ---------------------------------------------------------------------------------

MONEY = st.decimals(min_value=D("0.00"), max_value=D("100000.00"), places=2, allow_nan=False, allow_infinity=False)
POSITIVE = st.decimals(min_value=D("0.01"), max_value=MAX_DEPOSIT, places=2, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(balance=MONEY, amount=POSITIVE)
def test_a_first_debit_completes_exactly_when_the_balance_covers_it(balance: Decimal, amount: Decimal) -> None:
    outcome = debit_outcome(balance, amount, None, None)
    if balance >= amount:
        assert outcome == Status.COMPLETED
    else:
        assert outcome == Status.FAILED


@settings(max_examples=100, deadline=None)
@given(balance=MONEY, amount=POSITIVE, earlier=st.sampled_from([Status.COMPLETED, Status.FAILED]))
def test_an_existing_payment_always_wins(balance: Decimal, amount: Decimal, earlier: str) -> None:
    assert debit_outcome(balance, amount, payment(earlier), None) == "EXISTING"
    assert debit_outcome(balance, amount, payment(earlier), refund()) == "EXISTING"
    assert debit_outcome(balance, amount, None, refund()) == Status.REFUSED


@dataclass
class Ledger:
    """A test double of the wallet's ledger for one user, driven only by the domain rules (the same
    bookkeeping as the wallet API: one PAYMENT and one REFUND row per order)."""

    balance: Decimal
    deposits: Decimal
    rows: dict[tuple[str, str], LedgerEntry] = field(default_factory=dict)
    charged: Decimal = D("0")
    refunded: Decimal = D("0")

    def debit(self, order: str, amount: Decimal) -> str:
        outcome = debit_outcome(
            self.balance, amount, self.rows.get((order, "PAYMENT")), self.rows.get((order, "REFUND"))
        )
        if outcome in ("EXISTING", Status.REFUSED):
            return outcome
        if outcome == Status.COMPLETED:
            self.balance -= amount
            self.charged += amount
        self.rows[(order, "PAYMENT")] = LedgerEntry(f"p-{order}", "PAYMENT", outcome, amount)
        return outcome

    def refund(self, order: str) -> str:
        pay = self.rows.get((order, "PAYMENT"))
        outcome = refund_outcome(pay, self.rows.get((order, "REFUND")))
        if outcome == "EXISTING":
            return outcome
        amount = pay.amount if outcome == Status.REFUNDED else D("0")
        self.balance += amount
        self.refunded += amount
        self.rows[(order, "REFUND")] = LedgerEntry(f"r-{order}", "REFUND", outcome, amount)
        return outcome


OPS = st.lists(
    st.tuples(st.sampled_from(["debit", "refund"]), st.sampled_from(["o1", "o2", "o3"]), POSITIVE),
    max_size=20,
)


@settings(max_examples=100, deadline=None)
@given(start=MONEY, ops=OPS)
def test_any_interleaving_of_retried_debits_and_refunds_keeps_the_books(
    start: Decimal, ops: list[tuple[str, str, Decimal]]
) -> None:
    ledger = Ledger(balance=start, deposits=start)
    completed: dict[str, Decimal] = {}
    for op, order, amount in ops:
        if op == "debit":
            had_refund = (order, "REFUND") in ledger.rows
            outcome = ledger.debit(order, amount)
            if outcome == Status.COMPLETED:
                assert order not in completed, "charged twice"
                assert not had_refund, "charged after a refund or void"
                completed[order] = amount
        else:
            before = ledger.balance
            outcome = ledger.refund(order)
            if outcome == Status.REFUNDED:
                # refunded exactly what was charged, and only if charged
                assert ledger.balance - before == completed[order]
            else:
                assert ledger.balance == before

        assert ledger.balance >= 0
        assert ledger.balance == ledger.deposits - ledger.charged + ledger.refunded
        assert ledger.charged == sum(completed.values(), D("0"))
        assert ledger.refunded <= ledger.charged

    # at most one payment and one refund row per order by construction; refunds only of charges
    for (order, kind), row in ledger.rows.items():
        if kind == "REFUND" and row.status == Status.REFUNDED:
            assert order in completed and row.amount == completed[order]
