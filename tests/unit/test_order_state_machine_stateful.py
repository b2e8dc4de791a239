"""A stateful property test of the order state machine: one order is fed random events (every name,
random PAYMENT_FAIL reasons, duplicates, reorderings, the sweeper's ORDER_TIMED_OUT) and must stay
consistent after every step."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tinysaga.contracts import events as ev
from tinysaga.order.domain import FailReason, Input, OrderState, Refund, Status, apply

NAMES = [
    *ev.ALL_NAMES,  # the sweeper's ORDER_TIMED_OUT among them
    "UNKNOWN_EVENT",
    "",
]
REASONS = st.one_of(
    st.sampled_from([None, ev.INSUFFICIENT_FUND, ev.SERVER_ERROR, "", "INSUFFICIENT_FUNDS"]),
    st.text(max_size=12),
)
TX_IDS = st.sampled_from([None, "", "tx-1", "tx-2"])

REFUND_RANK = {None: 0, Refund.REFUND_INITIATED: 1, Refund.REFUND_FAILED: 2, Refund.REFUND_DONE: 3}
REFUND_EVENTS = {ev.REFUND_INITIATED, ev.REFUND_DONE, ev.REFUND_FAILED}


class OneOrder(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = OrderState(Status.INITIATED)
        self.delivered: list[Input] = []  # everything sent so far, for redelivery
        self.pending: list[Input] = []  # events held back, delivered later (reordering)
        self.was_placed = False
        self.was_failed = False
        self.first_reason: FailReason | None = None
        self.refund_rank = 0

    @initialize()
    def start(self) -> None:
        assert self.state.status == Status.INITIATED

    # ---- delivering ------------------------------------------------------------------------

    def deliver(self, inp: Input) -> None:
        before = self.state
        after = apply(before, inp)  # must never raise
        self.delivered.append(inp)
        if after is None:
            return
        assert isinstance(after, OrderState)
        assert after != before, f"{inp} accepted but changed nothing"
        name = ev.ALIASES.get(inp.name, inp.name)

        # PLACED is final: nothing is accepted from it
        assert before.status != Status.PLACED, f"{inp} accepted on a PLACED order"
        # FAILED stays FAILED, keeps its reason, and only a refund event may touch it
        if before.status == Status.FAILED:
            assert after.status == Status.FAILED
            assert after.fail_reason == before.fail_reason
            assert name in REFUND_EVENTS, f"{inp} accepted on a FAILED order"
        # the refund status only moves forward
        assert REFUND_RANK[after.refund_status] >= REFUND_RANK[before.refund_status]
        # a transaction id, once known, is kept
        if before.transaction_id:
            assert after.transaction_id == before.transaction_id
        # the same event delivered again right away is a no-op
        assert apply(after, inp) is None, f"{inp} applied twice"

        self.state = after

    @rule(name=st.sampled_from(NAMES), reason=REASONS, tx=TX_IDS)
    def any_event(self, name: str, reason: str | None, tx: str | None) -> None:
        self.deliver(Input(name, reason, tx))

    # The saga's own events get rules of their own so that every state is reached often.

    @rule(tx=TX_IDS)
    def payment_done(self, tx: str | None) -> None:
        self.deliver(Input(ev.PAYMENT_DONE, transaction_id=tx))

    @rule(alias=st.booleans(), tx=TX_IDS)
    def inventory_reserved(self, alias: bool, tx: str | None) -> None:
        before = self.state
        self.deliver(Input(ev.INVENTORY_RESERVED_SEED_ALIAS if alias else ev.INVENTORY_RESERVED, transaction_id=tx))
        if before.status in (Status.INITIATED, Status.PAYMENT_DONE):
            assert self.state.status == Status.PLACED

    @rule()
    def inventory_insufficient(self) -> None:
        before = self.state
        self.deliver(Input(ev.INVENTORY_INSUFFICIENT))
        if before.status in (Status.INITIATED, Status.PAYMENT_DONE):
            assert self.state.status == Status.REFUND_INITIATED

    @rule(name=st.sampled_from(sorted(REFUND_EVENTS)), reason=REASONS)
    def refund_event(self, name: str, reason: str | None) -> None:
        self.deliver(Input(name, reason))

    @rule(reason=st.sampled_from([ev.INSUFFICIENT_FUND, ev.SERVER_ERROR, None, "other"]))
    def payment_fail(self, reason: str | None) -> None:
        before = self.state
        self.deliver(Input(ev.PAYMENT_FAIL, reason))
        if before.status == Status.INITIATED:
            expected = FailReason.INSUFFICIENT_FUNDS if reason == ev.INSUFFICIENT_FUND else FailReason.PAYMENT_ERROR
            assert (self.state.status, self.state.fail_reason) == (Status.FAILED, expected)

    @rule()
    def sweeper(self) -> None:
        before = self.state
        self.deliver(Input(ev.ORDER_TIMED_OUT))
        if before.status in (Status.INITIATED, Status.PAYMENT_DONE, Status.REFUND_INITIATED):
            assert self.state.status == Status.FAILED
            assert self.state.fail_reason == (before.fail_reason or FailReason.TIMEOUT)
            assert self.state.refund_status == before.refund_status

    @precondition(lambda self: bool(self.delivered))
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        """Kafka redelivers an event already seen (at-least-once)."""
        self.deliver(data.draw(st.sampled_from(self.delivered)))

    @rule(name=st.sampled_from(NAMES), reason=REASONS, tx=TX_IDS)
    def hold_back(self, name: str, reason: str | None, tx: str | None) -> None:
        """An event delayed in another partition or producer: delivered later, out of order."""
        self.pending.append(Input(name, reason, tx))

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.pending) - 1))
        self.deliver(self.pending.pop(i))

    # ---- invariants (one method: they are checked after every step) ---------------------------

    @invariant()
    def consistent(self) -> None:
        s = self.state
        # status, reason and refund are values of their enums
        assert isinstance(s.status, Status) and s.status in set(Status)
        assert s.fail_reason is None or s.fail_reason in set(FailReason)
        assert s.refund_status is None or s.refund_status in set(Refund)
        assert s.terminal == (s.status in (Status.PLACED, Status.FAILED))

        # once PLACED, PLACED forever, with no fail reason and no refund
        if self.was_placed:
            assert s.status == Status.PLACED
        if s.status == Status.PLACED:
            assert s.fail_reason is None and s.refund_status is None
            assert not self.was_failed
            self.was_placed = True

        # once FAILED, FAILED forever
        if self.was_failed:
            assert s.status == Status.FAILED
        if s.status == Status.FAILED:
            self.was_failed = True

        # the fail reason, once set, never changes; it is set iff FAILED or REFUND_INITIATED
        if self.first_reason is not None:
            assert s.fail_reason == self.first_reason
        self.first_reason = s.fail_reason
        assert (s.fail_reason is not None) == (s.status in (Status.FAILED, Status.REFUND_INITIATED))

        # the refund status only moves forward: None < REFUND_INITIATED < REFUND_FAILED < REFUND_DONE
        assert REFUND_RANK[s.refund_status] >= self.refund_rank
        self.refund_rank = REFUND_RANK[s.refund_status]
        if s.refund_status is not None:
            assert s.status in (Status.REFUND_INITIATED, Status.FAILED)
        if s.status == Status.REFUND_INITIATED:
            assert s.refund_status == Refund.REFUND_INITIATED
            assert s.fail_reason == FailReason.INVENTORY_INSUFFICIENT

        # nothing failed or refunded while the saga is still undecided
        if s.status in (Status.INITIATED, Status.PAYMENT_DONE):
            assert s.fail_reason is None and s.refund_status is None


OneOrder.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestOneOrder = OneOrder.TestCase
