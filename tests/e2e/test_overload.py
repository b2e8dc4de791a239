"""The bound on sagas in flight (ADR 50, 52), through the gateway: with Payment held, every order
stays INITIATED, so the sagas in flight only grow and age; once at least
TINYSAGA_MAX_SAGA_SECONDS_FROM are in flight and older than a new order may wait (or, whatever
their age, once TINYSAGA_MAX_SAGAS_IN_FLIGHT are), a new order is answered 503 problem+json with
Retry-After and nothing is written for it, across both Order replicas; once the held sagas settle,
orders are accepted again; the invariants hold."""

from __future__ import annotations

import concurrent.futures
import time

from tests.support import ApiUser, Stack, check_invariants, fetch, register, run_sync, wait_at_rest
from tinysaga.order import domain
from tinysaga.platform.settings import Settings

PROBLEM = "application/problem+json"
UNSETTLED = [s.value for s in domain.UNSETTLED]


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
        wanted = bound - start + 20  # 20 more than fit

        def place(i: int) -> tuple[ApiUser, int, dict[str, str], dict]:
            u = users[i % len(users)]
            r = u.order(pid)
            return u, r.status_code, dict(r.headers), r.json()

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(place, range(wanted)))
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
    # turned away once the held sagas were too many and too old (not before wait_from of them),
    # and never past the bound by more than the requests racing at it
    assert settings.max_saga_seconds > 0 and settings.max_saga_seconds_from < bound
    assert settings.max_saga_seconds_from <= after <= bound + 8, (start, len(accepted), after)
    waits = [body["detail"] for _, code, _, body in results if code == 503 and "would take about" in body["detail"]]
    assert waits, "none turned away for the wait of the held sagas"
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
