"""The order state machine (pure): the seed's flows, duplicates, reordering, and a stateful
property test over any sequence of events."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tinysaga.contracts import events as ev
from tinysaga.order.domain import TIMEOUT, FailReason, Input, OrderState, Refund, Status, apply


def run(*inputs: Input) -> OrderState:
    state = OrderState(Status.INITIATED)
    for i in inputs:
        state = apply(state, i) or state
    return state


def test_happy_path_is_placed_with_the_transaction_id() -> None:
    s = run(Input(ev.PAYMENT_DONE, transaction_id="t1"), Input(ev.INVENTORY_RESERVED))
    assert (s.status, s.fail_reason, s.refund_status, s.transaction_id) == (Status.PLACED, None, None, "t1")


def test_payment_fail_reasons_map_to_the_api() -> None:
    assert run(Input(ev.PAYMENT_FAIL, ev.INSUFFICIENT_FUND)).fail_reason == FailReason.INSUFFICIENT_FUNDS
    assert run(Input(ev.PAYMENT_FAIL, ev.SERVER_ERROR)).fail_reason == FailReason.PAYMENT_ERROR
    assert run(Input(ev.PAYMENT_FAIL, ev.SERVER_ERROR)).status == Status.FAILED


def test_out_of_stock_then_refund() -> None:
    s = run(Input(ev.PAYMENT_DONE), Input(ev.INVENTORY_INSUFFICIENT))
    assert (s.status, s.fail_reason, s.refund_status) == (
        Status.REFUND_INITIATED,
        FailReason.INVENTORY_INSUFFICIENT,
        Refund.REFUND_INITIATED,
    )
    done = apply(s, Input(ev.REFUND_DONE))
    assert done is not None
    assert (done.status, done.fail_reason, done.refund_status) == (
        Status.FAILED,
        FailReason.INVENTORY_INSUFFICIENT,
        Refund.REFUND_DONE,
    )
    failed = apply(s, Input(ev.REFUND_FAILED, "wallet down"))
    assert failed is not None and failed.refund_status == Refund.REFUND_FAILED and failed.status == Status.FAILED


def test_timeout_from_every_in_flight_state_then_refund_annotates() -> None:
    for before in ([], [Input(ev.PAYMENT_DONE)], [Input(ev.PAYMENT_DONE), Input(ev.INVENTORY_INSUFFICIENT)]):
        s = run(*before, Input(TIMEOUT))
        assert s.status == Status.FAILED
    s = run(Input(ev.PAYMENT_DONE), Input(TIMEOUT))
    assert s.fail_reason == FailReason.TIMEOUT
    s = run(Input(ev.PAYMENT_DONE), Input(TIMEOUT), Input(ev.REFUND_INITIATED), Input(ev.REFUND_DONE))
    assert (s.status, s.fail_reason, s.refund_status) == (Status.FAILED, FailReason.TIMEOUT, Refund.REFUND_DONE)
    # a late reservation does not revive a timed-out order
    assert apply(s, Input(ev.INVENTORY_RESERVED)) is None


def test_duplicates_and_stale_events_change_nothing() -> None:
    placed = run(Input(ev.PAYMENT_DONE), Input(ev.INVENTORY_RESERVED))
    for name in (
        ev.PAYMENT_DONE,
        ev.INVENTORY_RESERVED,
        ev.PAYMENT_FAIL,
        ev.INVENTORY_INSUFFICIENT,
        ev.REFUND_DONE,
        ev.REFUND_FAILED,
        TIMEOUT,
        "SOMETHING_ELSE",
    ):
        assert apply(placed, Input(name)) is None
    paid = run(Input(ev.PAYMENT_DONE))
    assert apply(paid, Input(ev.PAYMENT_DONE)) is None
    refunded = run(Input(ev.INVENTORY_INSUFFICIENT), Input(ev.REFUND_DONE))
    assert apply(refunded, Input(ev.REFUND_DONE)) is None
    assert apply(refunded, Input(ev.REFUND_INITIATED)) is None  # refund status never goes back


def test_reordered_inventory_before_payment_still_places() -> None:
    s = run(Input(ev.INVENTORY_RESERVED), Input(ev.PAYMENT_DONE))
    assert s.status == Status.PLACED


def test_the_seeds_misspelt_event_name_is_an_alias() -> None:
    assert run(Input(ev.PAYMENT_DONE), Input(ev.INVENTORY_RESERVED_SEED_ALIAS)).status == Status.PLACED


NAMES = [
    ev.PAYMENT_DONE,
    ev.PAYMENT_FAIL,
    ev.INVENTORY_RESERVED,
    ev.INVENTORY_RESERVED_SEED_ALIAS,
    ev.INVENTORY_INSUFFICIENT,
    ev.REFUND_INITIATED,
    ev.REFUND_DONE,
    ev.REFUND_FAILED,
    TIMEOUT,
    "UNKNOWN",
]
REFUND_RANK = {None: 0, Refund.REFUND_INITIATED: 1, Refund.REFUND_FAILED: 2, Refund.REFUND_DONE: 3}


class OrderMachine(RuleBasedStateMachine):
    """Any sequence of events, with duplicates and in any order, keeps the order consistent."""

    def __init__(self) -> None:
        super().__init__()
        self.state = OrderState(Status.INITIATED)
        self.history = [self.state]

    @rule(
        name=st.sampled_from(NAMES),
        reason=st.sampled_from([None, ev.INSUFFICIENT_FUND, ev.SERVER_ERROR, "x"]),
        tx=st.sampled_from([None, "t1", "t2"]),
    )
    def deliver(self, name: str, reason: str | None, tx: str | None) -> None:
        before = self.state
        after = apply(before, Input(name, reason, tx))
        if after is not None:
            # once placed, nothing moves it; once failed, it stays failed
            assert before.status != Status.PLACED
            if before.status == Status.FAILED:
                assert after.status == Status.FAILED and after.fail_reason == before.fail_reason
            assert REFUND_RANK[after.refund_status] >= REFUND_RANK[before.refund_status]
            if before.transaction_id:
                assert after.transaction_id == before.transaction_id
            self.state = after
            self.history.append(after)
            assert apply(after, Input(name, reason, tx)) is None  # the same event twice: no effect

    @invariant()
    def consistent(self) -> None:
        s = self.state
        assert s.status in set(Status)
        if s.status == Status.PLACED:
            assert s.fail_reason is None and s.refund_status is None
        if s.status in (Status.FAILED, Status.REFUND_INITIATED):
            assert s.fail_reason is not None
        if s.status in (Status.INITIATED, Status.PAYMENT_DONE):
            assert s.fail_reason is None and s.refund_status is None


OrderMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
TestOrderMachine = OrderMachine.TestCase


@given(st.lists(st.sampled_from(NAMES), max_size=20))
def test_apply_never_raises(names: list[str]) -> None:
    s = OrderState(Status.INITIATED)
    for n in names:
        s = apply(s, Input(n)) or s
