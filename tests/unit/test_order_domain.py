"""The order state machine (`tinysaga.order.domain`), example by example: the seed's flows,
duplicates, reordering, the seed's misspelt alias, terminal states and unknown names; the requests
(cancel, ship, deliver) and a cancel's bookkeeping until CANCELED; where the live stream ends."""

from __future__ import annotations

import itertools

import pytest

from tinysaga.contracts import events as ev
from tinysaga.contracts import saga
from tinysaga.order.domain import (
    ANNOUNCES,
    IN_FLIGHT,
    REQUESTS,
    TERMINAL,
    TRANSITIONS,
    Decision,
    FailReason,
    Input,
    OrderState,
    Refund,
    Refused,
    Request,
    Status,
    apply,
    decide,
    decide_cancel,
    decide_deliver,
    decide_ship,
    needs_alert,
    refusal,
    requested,
    stream_done,
)

START = OrderState(Status.INITIATED)

# Every event name the state machine may be fed (the sweeper's input, ORDER_TIMED_OUT, among them).
ALL_NAMES = ev.ALL_NAMES
WIRE_REASONS = (None, ev.INSUFFICIENT_FUND, ev.SERVER_ERROR, "wallet down")


def step(state: OrderState, inp: Input) -> OrderState:
    """Apply one input that must be accepted."""
    new = apply(state, inp)
    assert new is not None, f"{inp} was refused in {state}"
    return new


def run(*inputs: Input, start: OrderState = START) -> OrderState:
    """Feed inputs like the consumer does: an ignored input leaves the order as it is."""
    state = start
    for inp in inputs:
        state = apply(state, inp) or state
    return state


def summary(s: OrderState) -> tuple[Status, FailReason | None, Refund | None]:
    return (s.status, s.fail_reason, s.refund_status)


# ---- the seed's flows ---------------------------------------------------------------------------


def test_a_new_order_is_initiated_with_nothing_else_set() -> None:
    assert summary(START) == (Status.INITIATED, None, None)
    assert not START.terminal


def test_happy_path_payment_then_reservation_is_placed() -> None:
    paid = step(START, Input(ev.PAYMENT_DONE, transaction_id="tx-1"))
    assert summary(paid) == (Status.PAYMENT_DONE, None, None)
    assert paid.transaction_id == "tx-1"
    assert not paid.terminal

    placed = step(paid, Input(ev.INVENTORY_RESERVED))
    assert summary(placed) == (Status.PLACED, None, None)
    assert placed.transaction_id == "tx-1"
    assert placed.terminal
    assert placed.status_info  # the user is told something


def test_payment_fail_insufficient_fund_is_failed_insufficient_funds() -> None:
    s = step(START, Input(ev.PAYMENT_FAIL, fail_reason=ev.INSUFFICIENT_FUND))
    assert summary(s) == (Status.FAILED, FailReason.INSUFFICIENT_FUNDS, None)
    assert s.terminal
    assert "not enough money" in s.status_info


def test_payment_fail_server_error_is_failed_payment_error() -> None:
    s = step(START, Input(ev.PAYMENT_FAIL, fail_reason=ev.SERVER_ERROR))
    assert summary(s) == (Status.FAILED, FailReason.PAYMENT_ERROR, None)
    assert "not enough money" not in s.status_info


@pytest.mark.parametrize("wire", [None, "", "somethingNew", "INSUFFICIENT_FUNDS", "insufficientfund"])
def test_payment_fail_with_any_other_reason_is_a_payment_error(wire: str | None) -> None:
    # only the seed's exact spelling means "not enough money"
    s = step(START, Input(ev.PAYMENT_FAIL, fail_reason=wire))
    assert summary(s) == (Status.FAILED, FailReason.PAYMENT_ERROR, None)


def test_out_of_stock_after_payment_initiates_a_refund_then_refund_done_fails_the_order() -> None:
    paid = step(START, Input(ev.PAYMENT_DONE, transaction_id="tx-1"))
    refunding = step(paid, Input(ev.INVENTORY_INSUFFICIENT))
    assert summary(refunding) == (Status.REFUND_INITIATED, FailReason.INVENTORY_INSUFFICIENT, Refund.REFUND_INITIATED)
    assert not refunding.terminal

    # Payment announces the refund it starts: already recorded, so a no-op
    assert apply(refunding, Input(ev.REFUND_INITIATED)) is None

    done = step(refunding, Input(ev.REFUND_DONE))
    assert summary(done) == (Status.FAILED, FailReason.INVENTORY_INSUFFICIENT, Refund.REFUND_DONE)
    assert done.terminal
    assert done.transaction_id == "tx-1"


def test_out_of_stock_then_refund_failed_shows_refund_failed() -> None:
    s = run(
        Input(ev.PAYMENT_DONE),
        Input(ev.INVENTORY_INSUFFICIENT),
        Input(ev.REFUND_FAILED, fail_reason="wallet unreachable"),
    )
    assert summary(s) == (Status.FAILED, FailReason.INVENTORY_INSUFFICIENT, Refund.REFUND_FAILED)
    assert "FAILED" in s.status_info  # an operator must act: the message says so


def test_refund_failed_then_an_operator_retry_succeeding_moves_to_refund_done() -> None:
    failed = run(Input(ev.PAYMENT_DONE), Input(ev.INVENTORY_INSUFFICIENT), Input(ev.REFUND_FAILED))
    done = step(failed, Input(ev.REFUND_DONE))
    assert summary(done) == (Status.FAILED, FailReason.INVENTORY_INSUFFICIENT, Refund.REFUND_DONE)
    # but never back from DONE to FAILED
    assert apply(done, Input(ev.REFUND_FAILED)) is None


# ---- timeouts -----------------------------------------------------------------------------------

IN_FLIGHT_PATHS = {
    Status.INITIATED: (),
    Status.PAYMENT_DONE: (Input(ev.PAYMENT_DONE),),
    Status.REFUND_INITIATED: (Input(ev.PAYMENT_DONE), Input(ev.INVENTORY_INSUFFICIENT)),
}


@pytest.mark.parametrize("status", list(IN_FLIGHT_PATHS))
def test_saga_timeout_fails_every_in_flight_order(status: Status) -> None:
    before = run(*IN_FLIGHT_PATHS[status])
    assert before.status == status
    after = step(before, Input(ev.ORDER_TIMED_OUT))
    assert after.status == Status.FAILED
    assert after.terminal
    assert after.refund_status == before.refund_status  # the timeout itself refunds nothing
    # a second sweep does nothing
    assert apply(after, Input(ev.ORDER_TIMED_OUT)) is None


@pytest.mark.parametrize("status", [Status.INITIATED, Status.PAYMENT_DONE])
def test_saga_timeout_before_inventory_answers_is_failed_timeout(status: Status) -> None:
    s = run(*IN_FLIGHT_PATHS[status], Input(ev.ORDER_TIMED_OUT))
    assert summary(s) == (Status.FAILED, FailReason.TIMEOUT, None)


def test_saga_timeout_while_refunding_keeps_the_out_of_stock_reason() -> None:
    # The order already failed for lack of stock and is being compensated: the sweeper ends it
    # but does not overwrite why it failed (domain: `state.fail_reason or TIMEOUT`).
    s = run(*IN_FLIGHT_PATHS[Status.REFUND_INITIATED], Input(ev.ORDER_TIMED_OUT))
    assert summary(s) == (Status.FAILED, FailReason.INVENTORY_INSUFFICIENT, Refund.REFUND_INITIATED)
    done = step(s, Input(ev.REFUND_DONE))
    assert summary(done) == (Status.FAILED, FailReason.INVENTORY_INSUFFICIENT, Refund.REFUND_DONE)


@pytest.mark.parametrize("status", [Status.INITIATED, Status.PAYMENT_DONE])
def test_refund_after_a_timeout_annotates_refund_status_but_stays_failed_timeout(status: Status) -> None:
    timed_out = run(*IN_FLIGHT_PATHS[status], Input(ev.ORDER_TIMED_OUT))

    initiated = step(timed_out, Input(ev.REFUND_INITIATED))
    assert summary(initiated) == (Status.FAILED, FailReason.TIMEOUT, Refund.REFUND_INITIATED)
    assert "timed out" in initiated.status_info

    done = step(initiated, Input(ev.REFUND_DONE))
    assert summary(done) == (Status.FAILED, FailReason.TIMEOUT, Refund.REFUND_DONE)
    assert "timed out" in done.status_info

    # REFUND_DONE may arrive without the REFUND_INITIATED before it
    assert summary(step(timed_out, Input(ev.REFUND_DONE))) == (Status.FAILED, FailReason.TIMEOUT, Refund.REFUND_DONE)
    assert summary(step(timed_out, Input(ev.REFUND_FAILED))) == (
        Status.FAILED,
        FailReason.TIMEOUT,
        Refund.REFUND_FAILED,
    )


@pytest.mark.parametrize(
    "late",
    [
        ev.PAYMENT_DONE,
        ev.PAYMENT_FAIL,
        ev.INVENTORY_RESERVED,
        ev.INVENTORY_RESERVED_SEED_ALIAS,
        ev.INVENTORY_INSUFFICIENT,
    ],
)
def test_a_late_saga_event_does_not_revive_a_timed_out_order(late: str) -> None:
    timed_out = run(Input(ev.PAYMENT_DONE), Input(ev.ORDER_TIMED_OUT))
    assert apply(timed_out, Input(late, fail_reason=ev.INSUFFICIENT_FUND)) is None


def test_a_refund_after_a_payment_error_does_not_claim_the_order_timed_out() -> None:
    # ADR 5: when the wallet could not be reached Payment publishes PAYMENT_FAIL serverError and its
    # voider later refunds a debit that did land, publishing REFUND_DONE. The order failed with
    # PAYMENT_ERROR, not because the saga timed out, so its status text must not say so.
    failed = step(START, Input(ev.PAYMENT_FAIL, fail_reason=ev.SERVER_ERROR))
    refunded = step(failed, Input(ev.REFUND_DONE))
    assert summary(refunded) == (Status.FAILED, FailReason.PAYMENT_ERROR, Refund.REFUND_DONE)
    assert "timed out" not in refunded.status_info, refunded.status_info


# ---- duplicates ---------------------------------------------------------------------------------

FLOWS = {
    "happy": (Input(ev.PAYMENT_DONE, transaction_id="tx"), Input(ev.INVENTORY_RESERVED)),
    "insufficient": (Input(ev.PAYMENT_FAIL, fail_reason=ev.INSUFFICIENT_FUND),),
    "server-error": (Input(ev.PAYMENT_FAIL, fail_reason=ev.SERVER_ERROR),),
    "out-of-stock": (Input(ev.PAYMENT_DONE), Input(ev.INVENTORY_INSUFFICIENT), Input(ev.REFUND_DONE)),
    "refund-failed": (Input(ev.PAYMENT_DONE), Input(ev.INVENTORY_INSUFFICIENT), Input(ev.REFUND_FAILED)),
    "timeout": (Input(ev.PAYMENT_DONE), Input(ev.ORDER_TIMED_OUT), Input(ev.REFUND_INITIATED), Input(ev.REFUND_DONE)),
}


@pytest.mark.parametrize("flow", list(FLOWS))
def test_every_event_of_a_flow_delivered_twice_is_ignored_the_second_time(flow: str) -> None:
    state = START
    for inp in FLOWS[flow]:
        state = step(state, inp)
        assert apply(state, inp) is None, f"{inp.name} applied twice in flow {flow}"


@pytest.mark.parametrize("flow", list(FLOWS))
def test_every_event_duplicated_ends_where_the_clean_flow_ends(flow: str) -> None:
    clean = run(*FLOWS[flow])
    doubled = run(*itertools.chain.from_iterable((i, i) for i in FLOWS[flow]))
    assert doubled == clean


def test_a_redelivered_payment_done_after_placing_changes_nothing() -> None:
    placed = run(*FLOWS["happy"])
    assert apply(placed, Input(ev.PAYMENT_DONE, transaction_id="another")) is None


# ---- reordering ---------------------------------------------------------------------------------


def test_reservation_before_payment_still_places_and_the_late_payment_is_ignored() -> None:
    placed = step(START, Input(ev.INVENTORY_RESERVED, transaction_id="tx-9"))
    assert summary(placed) == (Status.PLACED, None, None)
    assert placed.transaction_id == "tx-9"  # Inventory repeats Payment's transaction id
    assert apply(placed, Input(ev.PAYMENT_DONE, transaction_id="tx-9")) is None


def test_out_of_stock_before_payment_still_refunds_and_the_late_payment_is_ignored() -> None:
    refunding = step(START, Input(ev.INVENTORY_INSUFFICIENT))
    assert summary(refunding) == (Status.REFUND_INITIATED, FailReason.INVENTORY_INSUFFICIENT, Refund.REFUND_INITIATED)
    assert apply(refunding, Input(ev.PAYMENT_DONE)) is None
    assert summary(run(Input(ev.REFUND_DONE), start=refunding)) == (
        Status.FAILED,
        FailReason.INVENTORY_INSUFFICIENT,
        Refund.REFUND_DONE,
    )


def test_refund_done_before_inventory_insufficient_still_ends_failed_refunded() -> None:
    s = run(Input(ev.PAYMENT_DONE), Input(ev.REFUND_DONE), Input(ev.INVENTORY_INSUFFICIENT), Input(ev.REFUND_INITIATED))
    assert summary(s) == (Status.FAILED, FailReason.INVENTORY_INSUFFICIENT, Refund.REFUND_DONE)


def test_refund_initiated_before_inventory_insufficient_is_refunding() -> None:
    s = run(Input(ev.PAYMENT_DONE), Input(ev.REFUND_INITIATED), Input(ev.INVENTORY_INSUFFICIENT))
    assert summary(s) == (Status.REFUND_INITIATED, FailReason.INVENTORY_INSUFFICIENT, Refund.REFUND_INITIATED)


def test_payment_fail_after_payment_done_is_stale() -> None:
    paid = step(START, Input(ev.PAYMENT_DONE))
    assert apply(paid, Input(ev.PAYMENT_FAIL, fail_reason=ev.INSUFFICIENT_FUND)) is None


def test_the_first_transaction_id_sticks() -> None:
    paid = step(START, Input(ev.PAYMENT_DONE, transaction_id="first"))
    placed = step(paid, Input(ev.INVENTORY_RESERVED, transaction_id="second"))
    assert placed.transaction_id == "first"


# ---- the seed's alias ---------------------------------------------------------------------------


@pytest.mark.parametrize("before", [(), (Input(ev.PAYMENT_DONE),)])
def test_the_seeds_misspelt_reservation_behaves_like_the_real_one(before: tuple[Input, ...]) -> None:
    state = run(*before)
    via_alias = apply(state, Input(ev.INVENTORY_RESERVED_SEED_ALIAS, transaction_id="t"))
    via_name = apply(state, Input(ev.INVENTORY_RESERVED, transaction_id="t"))
    assert via_alias is not None
    assert via_alias == via_name
    assert via_alias.status == Status.PLACED
    # and after one, the other is a duplicate
    assert apply(via_alias, Input(ev.INVENTORY_RESERVED)) is None
    assert apply(via_name, Input(ev.INVENTORY_RESERVED_SEED_ALIAS)) is None


# ---- terminal states ----------------------------------------------------------------------------

TERMINAL_PATHS = {
    "placed": FLOWS["happy"],
    "placed-reordered": (Input(ev.INVENTORY_RESERVED), Input(ev.PAYMENT_DONE)),
    "insufficient": FLOWS["insufficient"],
    "server-error": FLOWS["server-error"],
    "out-of-stock-refunded": FLOWS["out-of-stock"],
    "out-of-stock-refund-failed": FLOWS["refund-failed"],
    "timeout": (Input(ev.ORDER_TIMED_OUT),),
    "timeout-refunded": FLOWS["timeout"],
}


@pytest.mark.parametrize("path", list(TERMINAL_PATHS))
def test_a_terminal_order_never_changes_status(path: str) -> None:
    final = run(*TERMINAL_PATHS[path])
    assert final.terminal
    for name, reason in itertools.product(ALL_NAMES + ("NOPE",), WIRE_REASONS):
        after = apply(final, Input(name, fail_reason=reason, transaction_id="other"))
        if after is None:
            continue
        # the only thing allowed: a refund annotation on a FAILED order
        assert final.status == Status.FAILED, f"{name} changed a PLACED order"
        assert name in (ev.REFUND_INITIATED, ev.REFUND_DONE, ev.REFUND_FAILED), name
        assert after.status == Status.FAILED
        assert after.fail_reason == final.fail_reason
        assert after.refund_status is not None and after.refund_status != final.refund_status
        # a refund may tell a transaction id the order never learnt, but never replaces one
        assert after.transaction_id == (final.transaction_id or "other")


def test_a_placed_order_ignores_every_event() -> None:
    placed = run(*FLOWS["happy"])
    for name, reason in itertools.product(ALL_NAMES, WIRE_REASONS):
        assert apply(placed, Input(name, fail_reason=reason)) is None, name


def test_the_transition_table_never_leaves_a_terminal_state_except_failed_to_failed() -> None:
    for (name, src), dst in TRANSITIONS.items():
        if src == Status.PLACED:
            pytest.fail(f"{name} leaves PLACED")
        if src == Status.FAILED:
            assert dst == Status.FAILED, name
            assert name in (ev.REFUND_INITIATED, ev.REFUND_DONE, ev.REFUND_FAILED), name
        assert dst != Status.INITIATED, name  # nothing goes back to the start


# ---- unknown names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["", "UNKNOWN", "payment_done", "PAYMENT_DONE ", ev.ORDER_INITIATED, ev.USER_REGISTERED],
)
@pytest.mark.parametrize("status", list(IN_FLIGHT_PATHS))
def test_names_the_order_does_not_handle_are_ignored(name: str, status: Status) -> None:
    state = run(*IN_FLIGHT_PATHS[status])
    assert apply(state, Input(name, fail_reason=ev.INSUFFICIENT_FUND, transaction_id="t")) is None


def test_apply_does_not_mutate_its_input() -> None:
    before = OrderState(Status.INITIATED)
    step(before, Input(ev.PAYMENT_DONE, transaction_id="t"))
    assert before == OrderState(Status.INITIATED)


# ---- cancel, ship, deliver (ADR 13) -------------------------------------------------------------

ALL_REQUESTS = list(Request)
EXPECTED_DECISIONS = {
    Request.CANCEL: {
        Status.INITIATED: Decision.CANCEL,
        Status.PAYMENT_DONE: Decision.CANCEL,
        Status.PLACED: Decision.CANCEL,
        Status.CANCELING: Decision.ALREADY,
        Status.CANCELED: Decision.ALREADY,
    },
    Request.SHIP: {Status.PLACED: Decision.MOVE, Status.ON_THE_WAY: Decision.ALREADY},
    Request.DELIVER: {Status.ON_THE_WAY: Decision.MOVE, Status.DELIVERED: Decision.ALREADY},
}


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("request_", ALL_REQUESTS)
def test_every_request_is_decided_from_every_status(request_: Request, status: Status) -> None:
    expected = EXPECTED_DECISIONS[request_].get(status, Decision.REFUSED)
    assert decide(request_, status) == expected
    single = {Request.CANCEL: decide_cancel, Request.SHIP: decide_ship, Request.DELIVER: decide_deliver}[request_]
    assert single(status) == expected
    if expected in (Decision.CANCEL, Decision.MOVE):
        assert requested(OrderState(status), request_).status == REQUESTS[(request_, status)]
    else:
        with pytest.raises(ValueError):
            requested(OrderState(status), request_)
    if expected == Decision.REFUSED:
        assert str(status) in refusal(request_, status)


def test_the_requests_are_the_saga_definitions_steps() -> None:
    for request_ in Request:
        step = saga.BY_NAME[request_.value]
        assert step.participant == "order"
        assert step.outcomes == (ANNOUNCES[request_],)
        assert {to for (r, _), to in REQUESTS.items() if r == request_} == {Status(step.leads_to)}


def test_a_cancel_starts_canceling_with_neither_side_settled_and_keeps_what_the_order_knows() -> None:
    placed = run(*FLOWS["happy"])
    canceling = requested(placed, Request.CANCEL)
    assert summary(canceling) == (Status.CANCELING, None, None)
    assert (canceling.payment_settled, canceling.stock_settled) == (False, False)
    assert canceling.transaction_id == placed.transaction_id
    assert not canceling.terminal


def test_refusals_say_why() -> None:
    assert "shipped" in refusal(Request.CANCEL, Status.ON_THE_WAY)
    assert "can no longer be canceled" in refusal(Request.CANCEL, Status.FAILED)
    assert refusal(Request.SHIP, Status.INITIATED) == "only a PLACED order can be shipped; this one is INITIATED"
    assert refusal(Request.DELIVER, Status.PLACED) == "only an ON_THE_WAY order can be delivered; this one is PLACED"
    assert Refused(Request.SHIP, Status.FAILED).status == Status.FAILED


def test_a_placed_order_canceled_is_refunded_and_released_then_canceled() -> None:
    s = requested(run(*FLOWS["happy"]), Request.CANCEL)
    s = step(s, Input(ev.REFUND_INITIATED))
    assert summary(s) == (Status.CANCELING, None, Refund.REFUND_INITIATED)
    s = step(s, Input(ev.REFUND_DONE))
    assert (s.status, s.payment_settled, s.stock_settled) == (Status.CANCELING, True, False)
    s = step(s, Input(ev.INVENTORY_RELEASED))
    assert summary(s) == (Status.CANCELED, None, Refund.REFUND_DONE)
    assert s.terminal and s.transaction_id == "tx"
    assert "refunded" in s.status_info


def test_the_stock_side_may_settle_first() -> None:
    s = requested(run(*FLOWS["happy"]), Request.CANCEL)
    s = step(s, Input(ev.INVENTORY_RELEASED))
    assert (s.status, s.payment_settled, s.stock_settled) == (Status.CANCELING, False, True)
    s = step(s, Input(ev.REFUND_DONE))
    assert summary(s) == (Status.CANCELED, None, Refund.REFUND_DONE)


@pytest.mark.parametrize("settles", [ev.PAYMENT_VOIDED, ev.PAYMENT_FAIL])
def test_an_order_never_charged_is_canceled_without_a_refund(settles: str) -> None:
    s = requested(START, Request.CANCEL)
    s = step(s, Input(settles, fail_reason=ev.INSUFFICIENT_FUND))
    s = step(s, Input(ev.INVENTORY_RELEASED))
    assert summary(s) == (Status.CANCELED, None, None)
    assert "nothing was charged" in s.status_info


def test_a_refund_that_fails_cancels_with_refund_failed_and_an_alert() -> None:
    s = requested(run(Input(ev.PAYMENT_DONE)), Request.CANCEL)
    s = run(Input(ev.INVENTORY_RELEASED), Input(ev.REFUND_FAILED, fail_reason="wallet down"), start=s)
    assert summary(s) == (Status.CANCELED, None, Refund.REFUND_FAILED)
    assert needs_alert(s)
    # an operator's retry succeeding later is recorded on the canceled order; never back
    done = step(s, Input(ev.REFUND_DONE))
    assert summary(done) == (Status.CANCELED, None, Refund.REFUND_DONE)
    assert apply(done, Input(ev.REFUND_FAILED)) is None


def test_a_late_debit_and_a_late_reservation_are_recorded_and_keep_it_canceling() -> None:
    s = requested(START, Request.CANCEL)
    paid = step(s, Input(ev.PAYMENT_DONE, transaction_id="tx-late"))
    assert (paid.status, paid.transaction_id, paid.payment_settled) == (Status.CANCELING, "tx-late", False)
    reserved = step(paid, Input(ev.INVENTORY_RESERVED, transaction_id="tx-late"))
    assert (reserved.status, reserved.stock_settled) == (Status.CANCELING, False)
    assert "given back" in reserved.status_info
    # each again is a duplicate
    assert apply(reserved, Input(ev.INVENTORY_RESERVED, transaction_id="tx-late")) is None
    assert apply(paid, Input(ev.PAYMENT_DONE, transaction_id="tx-late")) is None
    end = run(Input(ev.REFUND_INITIATED), Input(ev.REFUND_DONE), Input(ev.INVENTORY_RELEASED), start=reserved)
    assert summary(end) == (Status.CANCELED, None, Refund.REFUND_DONE)


def test_out_of_stock_after_a_cancel_settles_the_stock_side_without_failing_the_order() -> None:
    s = requested(run(Input(ev.PAYMENT_DONE)), Request.CANCEL)
    s = run(Input(ev.INVENTORY_INSUFFICIENT), Input(ev.REFUND_INITIATED), Input(ev.REFUND_DONE), start=s)
    assert summary(s) == (Status.CANCELED, None, Refund.REFUND_DONE)
    assert apply(s, Input(ev.INVENTORY_RELEASED)) is None  # Inventory's answer to the cancel, after


def test_a_settled_side_settled_again_is_a_duplicate() -> None:
    s = step(requested(START, Request.CANCEL), Input(ev.PAYMENT_VOIDED))
    for again in (ev.PAYMENT_VOIDED, ev.PAYMENT_FAIL):
        assert apply(s, Input(again)) is None
    s = step(s, Input(ev.INVENTORY_RELEASED))
    assert s.status == Status.CANCELED
    for name in (*ev.STEP_OUTCOMES, *ev.CANCEL_OUTCOMES):
        if name not in (ev.REFUND_INITIATED, ev.REFUND_DONE, ev.REFUND_FAILED):
            assert apply(s, Input(name, transaction_id="t")) is None, name


def test_the_answers_to_a_cancel_mean_nothing_outside_canceling() -> None:
    for path in (*FLOWS, "start"):
        state = run(*FLOWS[path]) if path != "start" else START
        for name in ev.CANCEL_OUTCOMES:
            assert apply(state, Input(name, transaction_id="t")) is None, (path, name)
    for status in (Status.ON_THE_WAY, Status.DELIVERED):
        for name in ALL_NAMES:
            assert apply(OrderState(status), Input(name, transaction_id="t")) is None, (status, name)


def test_the_sweeper_does_not_time_out_a_canceling_order() -> None:
    assert Status.CANCELING not in IN_FLIGHT
    assert IN_FLIGHT == (Status.INITIATED, Status.PAYMENT_DONE, Status.REFUND_INITIATED)
    assert apply(requested(START, Request.CANCEL), Input(ev.ORDER_TIMED_OUT)) is None
    assert TERMINAL == {Status.PLACED, Status.FAILED, Status.CANCELED}


@pytest.mark.parametrize(
    ("status", "refund", "done"),
    [
        (Status.INITIATED, None, False),
        (Status.PAYMENT_DONE, None, False),
        (Status.REFUND_INITIATED, Refund.REFUND_INITIATED, False),
        (Status.CANCELING, None, False),
        (Status.CANCELING, Refund.REFUND_DONE, False),
        (Status.PLACED, None, True),
        (Status.FAILED, None, True),
        (Status.FAILED, Refund.REFUND_INITIATED, False),
        (Status.FAILED, Refund.REFUND_DONE, True),
        (Status.CANCELED, None, True),
        (Status.CANCELED, Refund.REFUND_DONE, True),
        (Status.CANCELED, Refund.REFUND_FAILED, True),
        (Status.ON_THE_WAY, None, True),
        (Status.DELIVERED, None, True),
    ],
)
def test_the_live_stream_ends_once_no_step_is_in_flight(status: Status, refund: Refund | None, done: bool) -> None:
    assert stream_done(status, refund) is done
