"""Property tests of a cancel in the order state machine (ADR 13): whatever Payment and Inventory
answer after a cancel, in any order and with duplicates, the order is CANCELED exactly when both
sides are settled, never before, with the refund status the answers say; and, for the answers they
really give (each participant's in its own order, the two interleaved), it always ends CANCELED
with nothing kept."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from tinysaga.contracts import events as ev
from tinysaga.order.domain import (
    CANCELABLE,
    PAYMENT_SIDE,
    STOCK_SIDE,
    Input,
    OrderState,
    Refund,
    Request,
    Status,
    apply,
    needs_alert,
    requested,
)

REFUND_RANK = {None: 0, Refund.REFUND_INITIATED: 1, Refund.REFUND_FAILED: 2, Refund.REFUND_DONE: 3}
REFUND_OF = {ev.REFUND_INITIATED: Refund.REFUND_INITIATED, ev.REFUND_DONE: Refund.REFUND_DONE}
REFUND_OF[ev.REFUND_FAILED] = Refund.REFUND_FAILED
# everything Payment and Inventory may send once an order is canceled
AFTER_CANCEL = (*ev.STEP_OUTCOMES, *ev.CANCEL_OUTCOMES, ev.INVENTORY_RESERVED_SEED_ALIAS)

# The order as the cancel finds it, by status.
BEFORE = {
    Status.INITIATED: OrderState(Status.INITIATED),
    Status.PAYMENT_DONE: OrderState(Status.PAYMENT_DONE, transaction_id="tx-1"),
    Status.PLACED: OrderState(Status.PLACED, transaction_id="tx-1"),
}
INPUTS = st.builds(
    Input,
    st.sampled_from(AFTER_CANCEL),
    st.sampled_from([None, ev.INSUFFICIENT_FUND, ev.SERVER_ERROR, "wallet down"]),
    st.sampled_from([None, "tx-1", "tx-2"]),
)


def feed(state: OrderState, inp: Input) -> OrderState:
    after = apply(state, inp)
    if after is None:
        return state
    assert after != state, f"{inp} accepted but changed nothing"
    assert apply(after, inp) is None, f"{inp} applied twice"
    return after


@settings(max_examples=150, deadline=None)
@given(start=st.sampled_from(CANCELABLE), inputs=st.lists(INPUTS, max_size=25), data=st.data())
def test_any_answers_in_any_order_cancel_exactly_when_both_sides_are_settled(
    start: Status, inputs: list[Input], data: st.DataObject
) -> None:
    # duplicates: some inputs delivered again later
    for _ in range(data.draw(st.integers(0, 5))):
        if inputs:
            inputs.insert(data.draw(st.integers(0, len(inputs))), data.draw(st.sampled_from(inputs)))
    state = requested(BEFORE[start], Request.CANCEL)
    paid = stocked = False
    rank = 0
    for inp in inputs:
        state = feed(state, inp)
        name = ev.ALIASES.get(inp.name, inp.name)
        paid |= name in PAYMENT_SIDE
        stocked |= name in STOCK_SIDE
        if name in REFUND_OF:
            rank = max(rank, REFUND_RANK[REFUND_OF[name]])
        # CANCELED exactly once both sides are settled, CANCELING until then; never anything else
        assert state.status == (Status.CANCELED if paid and stocked else Status.CANCELING)
        assert (state.payment_settled, state.stock_settled) == (paid, stocked)
        # the refund status is the furthest the refund events went, and nothing failed
        assert REFUND_RANK[state.refund_status] == rank
        assert state.fail_reason is None
        # a transaction id known before the cancel is kept
        if BEFORE[start].transaction_id:
            assert state.transaction_id == BEFORE[start].transaction_id


@dataclass(frozen=True)
class Story:
    """What happened around a cancel, and so what Payment and Inventory answer."""

    start: Status
    charged: bool  # the wallet was debited (before the cancel or in flight)
    charge_seen: bool  # Order saw PAYMENT_DONE / PAYMENT_FAIL before the cancel
    reserved: bool  # Inventory reserved before it saw the cancel
    out_of_stock: bool  # Inventory found none left (instead of reserving)
    voided: bool  # never charged: voided at the wallet (PAYMENT_VOIDED), else declined (PAYMENT_FAIL)
    refund_ok: bool

    def payment(self) -> list[Input]:
        if not self.charged:  # declined (its PAYMENT_FAIL settles it), or voided by the cancel
            return [Input(ev.PAYMENT_VOIDED if self.voided else ev.PAYMENT_FAIL, fail_reason=ev.SERVER_ERROR)]
        out = [] if self.charge_seen else [Input(ev.PAYMENT_DONE, transaction_id="tx-1")]
        out.append(Input(ev.REFUND_INITIATED))
        out.append(Input(ev.REFUND_DONE if self.refund_ok else ev.REFUND_FAILED, fail_reason="wallet down"))
        return out

    def inventory(self) -> list[Input]:
        if self.start == Status.PLACED:
            return [Input(ev.INVENTORY_RELEASED)]
        if self.charged and self.out_of_stock:
            return [Input(ev.INVENTORY_INSUFFICIENT, transaction_id="tx-1"), Input(ev.INVENTORY_RELEASED)]
        if self.charged and self.reserved:
            return [Input(ev.INVENTORY_RESERVED, transaction_id="tx-1"), Input(ev.INVENTORY_RELEASED)]
        return [Input(ev.INVENTORY_RELEASED)]  # blocked before any reservation


@st.composite
def stories(draw: st.DrawFn) -> Story:
    start = draw(st.sampled_from(CANCELABLE))
    charged = start != Status.INITIATED or draw(st.booleans())
    return Story(
        start=start,
        charged=charged,
        charge_seen=start != Status.INITIATED,
        reserved=draw(st.booleans()),
        out_of_stock=draw(st.booleans()),
        voided=draw(st.booleans()),
        refund_ok=draw(st.booleans()),
    )


@settings(max_examples=150, deadline=None)
@given(story=stories(), data=st.data())
def test_what_payment_and_inventory_answer_always_ends_canceled_with_nothing_kept(
    story: Story, data: st.DataObject
) -> None:
    pay, inv = story.payment(), story.inventory()
    # the two producers' events interleaved, each in its own order; some delivered twice
    merged: list[Input] = []
    while pay or inv:
        side = pay if inv == [] or (pay and data.draw(st.booleans())) else inv
        merged.append(side.pop(0))
        if data.draw(st.integers(0, 3)) == 0:
            merged.append(data.draw(st.sampled_from(merged)))
    before = BEFORE[story.start]
    state = requested(before, Request.CANCEL)
    for inp in merged:
        state = feed(state, inp)
    assert state.status == Status.CANCELED
    if story.charged:
        assert state.refund_status == (Refund.REFUND_DONE if story.refund_ok else Refund.REFUND_FAILED)
        assert needs_alert(state) is not story.refund_ok  # a refund that could not be done: an operator acts
        assert state.transaction_id == "tx-1"
    else:
        assert state.refund_status is None and not needs_alert(state)
    assert state.fail_reason is None
