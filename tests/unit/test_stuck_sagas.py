"""Stuck sagas (ADR 40): the deadline of each status from the saga definition, scaled under the
saga timeout; the steps a stuck order waits for; `GET /api/admin/sagas/stuck` over the fake
repository; and the gauges a scrape refreshes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.unit.fakes_order import T0, FakeOrderRepository, FakeOrders
from tests.unit.test_order_api import (  # noqa: F401 - fixtures
    ADMIN,
    USER,
    client,
    db,
    is_problem,
    letters,
    participants,
    uow,
)
from tinysaga.contracts import events as ev
from tinysaga.order import domain
from tinysaga.order.domain import Status
from tinysaga.order.handlers import StuckSagas


def test_the_deadlines_are_the_saga_definitions_stays_when_they_fit_under_the_timeout() -> None:
    assert domain.declared_stays() == {Status.INITIATED: 10, Status.PAYMENT_DONE: 10, Status.CANCELING: 20}
    assert domain.stuck_after(60) == {
        Status.INITIATED: 10,
        Status.PAYMENT_DONE: 10,
        Status.REFUND_INITIATED: 30,  # no declared stay: half the timeout
        Status.CANCELING: 20,
    }


@pytest.mark.parametrize("timeout", [1, 5, 12, 20, 39.5, 40, 41, 60, 600])
def test_every_deadline_stays_at_most_half_the_timeout_and_keeps_the_stays_proportions(timeout: float) -> None:
    after = domain.stuck_after(timeout)
    assert set(after) == set(domain.UNSETTLED)
    assert all(0 < secs <= timeout / 2 for secs in after.values())
    assert after[Status.CANCELING] == pytest.approx(2 * after[Status.INITIATED])
    assert after[Status.INITIATED] == pytest.approx(min(10, timeout / 4))


def test_a_stuck_order_waits_for_the_steps_its_last_event_starts() -> None:
    assert domain.waiting_for(Status.INITIATED, ev.ORDER_INITIATED, False, False) == ["charge"]
    assert domain.waiting_for(Status.PAYMENT_DONE, ev.PAYMENT_DONE, False, False) == ["reserve"]
    assert domain.waiting_for(Status.REFUND_INITIATED, ev.INVENTORY_INSUFFICIENT, False, False) == ["refund"]
    assert domain.waiting_for(Status.REFUND_INITIATED, ev.REFUND_INITIATED, False, False) == ["refund"]
    assert domain.waiting_for(Status.CANCELING, ev.ORDER_CANCEL_REQUESTED, False, False) == ["refund", "release"]
    assert domain.waiting_for(Status.CANCELING, ev.PAYMENT_VOIDED, True, False) == ["release"]
    assert domain.waiting_for(Status.INITIATED, None, False, False) == []


async def test_the_admin_lists_the_sagas_past_their_status_deadline(
    client: httpx.AsyncClient,  # noqa: F811
    db: FakeOrders,  # noqa: F811
) -> None:
    stuck = db.put(Status.INITIATED, trace_id="5a" * 16)
    fresh_payment = db.put(Status.PAYMENT_DONE)
    canceling = db.put(Status.CANCELING, payment_settled=True)
    db.put(Status.PLACED)  # settled: never stuck
    db.now = T0 + timedelta(seconds=15)
    db.orders[fresh_payment]["updated_at"] = T0 + timedelta(seconds=8)  # 7 s in PAYMENT_DONE: not yet
    r = await client.get("/api/admin/sagas/stuck", headers=ADMIN)
    assert r.status_code == 200, r.text
    listed = {s["orderId"]: s for s in r.json()}
    assert set(listed) == {str(stuck)}  # CANCELING may stay 20 s
    s = listed[str(stuck)]
    assert (s["orderStatus"], s["step"], s["waitingFor"], s["lastEvent"]) == (
        "INITIATED",
        "charge",
        ["charge"],
        ev.ORDER_INITIATED,
    )
    assert s["ageSeconds"] == pytest.approx(15, abs=0.01) and s["deadlineSeconds"] == 10
    assert s["timesOutAt"] == db.orders[stuck]["deadline_at"].isoformat()
    assert s["traceId"] == "5a" * 16  # its trace, to see where it stalled (ADR 42)

    db.now = T0 + timedelta(seconds=25)
    r = await client.get("/api/admin/sagas/stuck?limit=5", headers=ADMIN)
    listed = {s["orderId"]: s for s in r.json()}
    assert set(listed) == {str(stuck), str(fresh_payment), str(canceling)}
    c = listed[str(canceling)]
    assert c["waitingFor"] == ["release"] and c["timesOutAt"] is None  # the sweeper leaves a cancel alone
    assert [s["orderId"] for s in r.json()][0] == str(stuck)  # longest in its status first


async def test_stuck_sagas_are_for_admins_and_the_limit_is_checked(client: httpx.AsyncClient) -> None:  # noqa: F811
    is_problem(await client.get("/api/admin/sagas/stuck", headers=USER), 403)
    body = is_problem(await client.get("/api/admin/sagas/stuck?limit=0", headers=ADMIN), 422)
    assert body["errors"]
    is_problem(await client.get("/api/admin/sagas/stuck?limit=many", headers=ADMIN), 422)


async def test_a_scrape_counts_the_sagas_in_flight_and_the_stuck_ones_by_status() -> None:
    orders = FakeOrders()
    for _ in range(3):
        orders.put(Status.INITIATED)
    orders.put(Status.REFUND_INITIATED)
    orders.now = T0 + timedelta(seconds=12)
    await StuckSagas(reader=FakeOrderRepository(orders), timeout_seconds=60).refresh_gauges()  # type: ignore[arg-type]

    def gauge(name: str, status: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"status": status})

    assert gauge("tinysaga_sagas_in_flight", "INITIATED") == 3
    assert gauge("tinysaga_sagas_stuck", "INITIATED") == 3
    assert gauge("tinysaga_sagas_in_flight", "REFUND_INITIATED") == 1
    assert gauge("tinysaga_sagas_stuck", "REFUND_INITIATED") == 0  # 30 s allowed there
    assert gauge("tinysaga_sagas_in_flight", "CANCELING") == 0


def test_each_unsettled_status_waits_for_the_steps_the_saga_says() -> None:
    assert {s: domain.awaited_steps(s) for s in domain.UNSETTLED} == {
        Status.INITIATED: ["charge"],
        Status.PAYMENT_DONE: ["reserve"],
        Status.REFUND_INITIATED: ["refund"],
        Status.CANCELING: ["refund", "release"],
    }


def test_percentiles_by_nearest_rank() -> None:
    assert domain.percentile([], 0.5) is None
    assert domain.percentile([3.0], 0.99) == 3.0
    values = [float(i) for i in range(1, 101)]
    assert (domain.percentile(values, 0.5), domain.percentile(values, 0.99)) == (50.0, 99.0)
    assert domain.percentile([5.0, 1.0, 3.0], 0.5) == 3.0


async def test_the_summary_counts_the_sagas_ended_in_the_window(
    client: httpx.AsyncClient,  # noqa: F811
    db: FakeOrders,  # noqa: F811
    letters: Any,  # noqa: F811
) -> None:
    from tests.unit.test_operator_actions import three_letters

    placed = [db.put(Status.INITIATED) for _ in range(3)]
    failed = db.put(Status.INITIATED)
    db.put(Status.INITIATED)  # still in flight
    old = db.put(Status.INITIATED)
    for i, oid in enumerate([*placed, failed, old]):
        status = "FAILED" if oid == failed else "PLACED"
        at = T0 + timedelta(seconds=(100 if oid == old else 0) + i + 1)
        db.orders[oid].update(order_status=status)
        db.history.append({"order_id": oid, "order_status": status, "status_info": "", "event_name": "X", "at": at})
    db.orders[old]["created_at"] = T0 + timedelta(seconds=100)
    db.history.append(  # a later annotation of a FAILED order does not end its saga again
        {
            "order_id": failed,
            "order_status": "FAILED",
            "status_info": "",
            "event_name": "REFUND_DONE",
            "at": T0 + timedelta(seconds=140),
        }
    )
    db.now = T0 + timedelta(seconds=150)  # the old one ended 45 s ago, the others 145 s ago
    three_letters(letters)
    r = await client.get("/api/admin/sagas/summary?windowSeconds=60", headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ended"] == {"PLACED": 1, "FAILED": 0, "CANCELED": 0}
    assert body["sagasPerSecond"] == round(1 / 60, 3)
    db.now = T0 + timedelta(seconds=110)
    body = (await client.get("/api/admin/sagas/summary?windowSeconds=120", headers=ADMIN)).json()
    assert body["ended"] == {"PLACED": 4, "FAILED": 1, "CANCELED": 0}
    assert body["p50Seconds"] == pytest.approx(3.0, abs=0.01) and body["p99Seconds"] == pytest.approx(5.0, abs=0.01)
    assert body["inFlight"]["INITIATED"] == 1 and body["deadLetters"] == {"kept": 3, "notReplayed": 3}
    assert body["awaiting"]["PAYMENT_DONE"] == ["reserve"]
    # how long the oldest of each status has been waiting there (None: nobody in it)
    oldest = {"INITIATED": 110.0, "PAYMENT_DONE": None, "REFUND_INITIATED": None, "CANCELING": None}
    assert body["oldestSeconds"] == oldest
    is_problem(await client.get("/api/admin/sagas/summary?windowSeconds=0", headers=ADMIN), 422)
    is_problem(await client.get("/api/admin/sagas/summary", headers=USER), 403)
