"""What a batch of debits and a refund write and answer (`wallet.domain.decide_charges`,
`decide_refund`): the pure part of the wallet's internal routes, given the balances and the
orders' ledger rows the repository read."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from decimal import Decimal

from tinysaga.wallet.domain import (
    OTHER_WALLET,
    PAYMENT,
    REFUND,
    Debit,
    LedgerEntry,
    Status,
    decide_charges,
    decide_refund,
)

D = Decimal


def seq_ids() -> Callable[[], uuid.UUID]:
    """A `new_id` for the decisions: uuids 1, 2, 3, ..."""
    n = itertools.count(1)
    return lambda: uuid.UUID(int=next(n))


def debit(order: str, user: str, amount: str) -> Debit:
    return Debit(order, user, D(amount), "USD")


def test_a_batch_is_decided_in_order_and_insufficient_funds_part_way_fail_only_those() -> None:
    debits = [debit("o1", "a", "6.00"), debit("o2", "b", "2.00"), debit("o3", "a", "5.00"), debit("o4", "a", "4.00")]
    out = decide_charges(debits, {"a": D("10.00"), "b": D("3.00")}, {}, seq_ids())
    assert [x.status for x in out.answers] == ["COMPLETED", "COMPLETED", "FAILED", "COMPLETED"]
    assert [x.amount for x in out.answers] == [D("6.00"), D("2.00"), D("5.00"), D("4.00")]
    assert out.taken == {"a": D("10.00"), "b": D("2.00")}
    assert [(r.order_id, r.kind, r.status) for r in out.new] == [
        ("o1", PAYMENT, "COMPLETED"),
        ("o2", PAYMENT, "COMPLETED"),
        ("o3", PAYMENT, "FAILED"),
        ("o4", PAYMENT, "COMPLETED"),
    ]
    assert out.new[2].description == "order o3: insufficient funds" and out.new[0].description == "order o1"
    assert [x.transaction_id for x in out.answers] == [str(r.transaction_id) for r in out.new]


def test_a_repeat_within_a_batch_gets_the_same_answer_and_one_row() -> None:
    debits = [debit("o1", "a", "6.00"), debit("o1", "a", "6.00"), debit("o2", "a", "6.00")]
    out = decide_charges(debits, {"a": D("10.00")}, {}, seq_ids())
    assert out.answers[1] == out.answers[0]
    assert [x.status for x in out.answers] == ["COMPLETED", "COMPLETED", "FAILED"]
    assert len(out.new) == 2 and out.taken == {"a": D("6.00")}


def test_an_order_already_in_the_ledger_gets_its_earlier_answer_whatever_the_balance() -> None:
    ledger = {("o1", PAYMENT): LedgerEntry("t-old", PAYMENT, Status.FAILED, D("9.00"), "a")}
    out = decide_charges([debit("o1", "a", "9.00")], {"a": D("100")}, ledger)
    (answer,) = out.answers
    assert (answer.transaction_id, answer.status, answer.amount) == ("t-old", Status.FAILED, D("9.00"))
    assert not out.new and not out.taken


def test_an_order_charged_to_another_wallet_is_an_error_for_that_order_only() -> None:
    ledger = {("o1", PAYMENT): LedgerEntry("t1", PAYMENT, Status.COMPLETED, D("1.00"), "a")}
    out = decide_charges([debit("o1", "b", "1.00"), debit("o2", "b", "2.00")], {"b": D("5.00")}, ledger)
    assert out.answers[0].error == OTHER_WALLET
    assert out.answers[1].status == "COMPLETED" and out.taken == {"b": D("2.00")}
    assert [r.order_id for r in out.new] == ["o2"]


def test_a_debit_after_a_refund_or_void_of_the_order_is_refused_and_writes_nothing() -> None:
    ledger = {("o1", REFUND): LedgerEntry("t-void", REFUND, Status.NOTHING_TO_REFUND, D(0), "a")}
    out = decide_charges([debit("o1", "a", "3.00")], {"a": D("100")}, ledger)
    (answer,) = out.answers
    assert (answer.transaction_id, answer.status, answer.amount) == (None, "REFUSED", D("3.00"))
    assert not out.new and not out.taken


def test_the_inputs_are_not_changed() -> None:
    balances, ledger = {"a": D("10")}, {}
    decide_charges([debit("o1", "a", "1")], balances, ledger)
    assert balances == {"a": D("10")} and ledger == {}


def test_a_refund_gives_back_what_the_ledger_charged() -> None:
    pay = LedgerEntry("t1", PAYMENT, Status.COMPLETED, D("7.50"), "a")
    out = decide_refund("o1", "a", "out of stock", "USD", pay, None, seq_ids())
    assert out.credit == D("7.50") and out.new is not None
    assert (out.new.kind, out.new.status, out.new.amount) == (REFUND, "REFUNDED", D("7.50"))
    assert out.new.description == "refund of order o1: out of stock"
    assert (out.answer.status, out.answer.amount) == ("REFUNDED", D("7.50"))


def test_a_refund_before_any_debit_records_nothing_to_refund_which_refuses_the_late_debit() -> None:
    out = decide_refund("o1", "a", "", "USD", None, None, seq_ids())
    assert out.credit == 0 and out.new is not None and out.new.status == "NOTHING_TO_REFUND"
    assert out.new.description == "refund of order o1"
    late = decide_charges([debit("o1", "a", "1.00")], {"a": D("5")}, {("o1", REFUND): out.new.entry()})
    assert late.answers[0].status == "REFUSED" and not late.new


def test_a_repeated_refund_gets_its_earlier_answer() -> None:
    pay = LedgerEntry("t1", PAYMENT, Status.COMPLETED, D("7.50"), "a")
    ref = LedgerEntry("t2", REFUND, Status.REFUNDED, D("7.50"), "a")
    out = decide_refund("o1", "a", "", "USD", pay, ref)
    assert out.new is None and out.credit == 0
    assert (out.answer.transaction_id, out.answer.status, out.answer.amount) == ("t2", "REFUNDED", D("7.50"))


def test_a_refund_for_an_order_charged_to_another_wallet_is_an_error() -> None:
    pay = LedgerEntry("t1", PAYMENT, Status.COMPLETED, D("7.50"), "a")
    out = decide_refund("o1", "b", "", "USD", pay, None)
    assert out.answer.error == OTHER_WALLET and out.new is None and out.credit == 0
