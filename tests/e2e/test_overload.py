"""The bound on sagas in flight (ADR 50, 52), through the gateway: with Payment held, every order
stays INITIATED, so the sagas in flight only grow and age. A burst of orders past
TINYSAGA_MAX_SAGAS_IN_FLIGHT is answered 503 problem+json with Retry-After beyond it (by the bound,
or earlier by the wait when the host accepts them slowly), across both Order replicas, with nothing
written for a turned-away order; and once TINYSAGA_MAX_SAGA_SECONDS_FROM are in flight and older
than a new order may wait, a new order is turned away for the wait, whatever the host's speed. Once
the held sagas settle, orders are accepted again; the invariants hold."""

from __future__ import annotations

import concurrent.futures
import inspect
import math
import time

from tests.support import ApiUser, Stack, check_invariants, fetch, register, run_sync, wait_at_rest
from tinysaga.order import domain
from tinysaga.order.handlers import InFlightBound
from tinysaga.platform.settings import Settings

PROBLEM = "application/problem+json"
UNSETTLED = [s.value for s in domain.UNSETTLED]
# how old a replica's count of the sagas in flight may be near the bound
MIN_AGE = inspect.signature(InFlightBound).parameters["min_age"].default
# how old it may be at most, near the bound or not
MAX_AGE = inspect.signature(InFlightBound).parameters["max_age"].default


def in_flight(settings: Settings) -> int:
    [row] = run_sync(
        fetch(settings, "order", "SELECT count(*) AS n FROM orders WHERE order_status = ANY($1)", UNSETTLED)
    )
    return row["n"]


def test_beyond_the_bound_a_new_order_is_turned_away_with_nothing_written(
    gateway: str, product, stack: Stack, settings: Settings
) -> None:
    bound = settings.max_sagas_in_flight
    assert bound > 0
    run_sync(wait_at_rest(settings))
    pid = product(stock=10 * bound, price="1.00")
    # the gateway allows a user 100 requests per 10 s: enough users to reach the bound at once
    users = [register(gateway, tag="bound") for _ in range(bound // 60 + 2)]
    for u in users:
        u.deposit(10 * bound)
    stack.hold("payment")
    try:
        start = in_flight(settings)
        wanted = bound - start + 60  # 60 more than fit

        def place(i: int) -> tuple[ApiUser, int, dict[str, str], dict]:
            u = users[i % len(users)]
            r = u.order(pid)
            return u, r.status_code, dict(r.headers), r.json()

        began = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(place, range(wanted)))
        took = time.monotonic() - began
        after = in_flight(settings)
    finally:
        stack.release("payment")

    codes = sorted({code for _, code, _, _ in results})
    assert codes == [202, 503], codes
    accepted = [(u, body["orderId"]) for u, code, _, body in results if code == 202]
    for _, code, headers, body in results:
        if code == 503:
            assert headers["content-type"].startswith(PROBLEM)
            assert headers["retry-after"] == str(settings.overloaded_retry_after_seconds)
            assert body["type"] == "urn:tinysaga:problem:overloaded" and body["status"] == 503
            assert body["limit"] in ("bound", "wait") and body["inFlight"] >= settings.max_saga_seconds_from, body
    # turned away once the held sagas were too many, or too many and too old: which of the two comes
    # first depends on how fast the host accepts them (the test below makes sure of the wait); never
    # before wait_from of them, and never past the bound by more than the requests racing at it (8)
    # and what one replica accepts before the other counts again (within MIN_AGE, at the burst's pace)
    assert settings.max_saga_seconds > 0 and settings.max_saga_seconds_from < bound
    slack = 8 + math.ceil(len(accepted) / took * MIN_AGE)
    assert slack < wanted - (bound - start), (slack, took)  # a stack without the bound would fail below
    assert settings.max_saga_seconds_from <= after <= bound + slack, (start, len(accepted), after, slack)
    # nothing written for a turned-away order: the users have exactly the accepted ones
    ids = [u.user_id for u in users]
    [row] = run_sync(fetch(settings, "order", "SELECT count(*) AS n FROM orders WHERE user_id = ANY($1)", ids))
    assert row["n"] == len(accepted)

    # once the held sagas settle, orders are accepted again
    run_sync(wait_at_rest(settings, timeout=180))
    deadline = time.monotonic() + 30
    while (r := users[0].order(pid)).status_code == 503:
        assert time.monotonic() < deadline, r.text
        time.sleep(1)
    assert r.status_code == 202, r.text
    users[0].wait_terminal(r.json()["orderId"])
    run_sync(wait_at_rest(settings))
    counts = run_sync(check_invariants(settings, ids, [pid]))
    assert counts["orders"] == len(accepted) + 1


def test_once_the_sagas_in_flight_are_old_a_new_order_is_turned_away_for_the_wait(
    gateway: str, product, stack: Stack, settings: Settings
) -> None:
    wait_from, max_wait = settings.max_saga_seconds_from, settings.max_saga_seconds
    assert 0 < wait_from < settings.max_sagas_in_flight and max_wait > 0
    run_sync(wait_at_rest(settings))
    pid = product(stock=10 * wait_from, price="1.00")
    users = [register(gateway, tag="wait") for _ in range(2)]
    for u in users:
        u.deposit(10 * wait_from)
    stack.hold("payment")
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            # fewer than wait_from in flight: accepted however long they take
            first = list(pool.map(lambda i: users[i % 2].order(pid), range(wait_from - in_flight(settings))))
            assert [r.status_code for r in first] == [202] * len(first), [r.text for r in first if r.status_code != 202]
            # older than an order may wait, and past the age at which each replica counts again
            time.sleep(max(max_wait, MAX_AGE) + 0.5)
            later = list(pool.map(lambda i: users[i % 2].order(pid), range(6)))
        held = in_flight(settings)
    finally:
        stack.release("payment")

    for r in later:
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith(PROBLEM)
        assert r.headers["retry-after"] == str(settings.overloaded_retry_after_seconds)
        body = r.json()
        assert body["type"] == "urn:tinysaga:problem:overloaded", body
        assert f"{held} orders are in progress and a new one would take about" in body["detail"], body
        assert body["limit"] == "wait" and body["expectedWaitSeconds"] >= max_wait, body
    ids = [u.user_id for u in users]
    [row] = run_sync(fetch(settings, "order", "SELECT count(*) AS n FROM orders WHERE user_id = ANY($1)", ids))
    assert row["n"] == len(first)

    run_sync(wait_at_rest(settings, timeout=180))
    r = users[0].order(pid)
    assert r.status_code == 202, r.text
    users[0].wait_terminal(r.json()["orderId"])
    run_sync(wait_at_rest(settings))
    counts = run_sync(check_invariants(settings, ids, [pid]))
    assert counts["orders"] == len(first) + 1
