"""The saga map on the running stack: each participant's internal records of an order (read on its
own port, with the internal secret; never through the gateway), and Order's map of them for the
owner and the admin: a placed order, one refunded after it ran out of stock, a participant down
(unknown on the map, the rest drawn), bad ids and someone else's order."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.support import ApiUser, Stack, eventually, register
from tinysaga.contracts import records, saga
from tinysaga.platform.secrets import internal_secret
from tinysaga.platform.settings import Settings, get_settings

PROBLEM = "application/problem+json"
PARTICIPANTS = ("order", "payment", "wallet", "inventory", "notification")


def own_records(settings: Settings, service: str, order_id: str, **headers: str) -> httpx.Response:
    """GET a participant's records of the order on its first replica's port."""
    url = f"http://127.0.0.1:{settings.port_of(service)}/internal/orders/{order_id}/records"
    return httpx.get(url, headers={"x-internal-secret": internal_secret(settings), **headers}, timeout=10)


def told(settings: Settings, service: str, order_id: str) -> list[tuple[str, str]]:
    r = own_records(settings, service, order_id)
    assert r.status_code == 200, r.text
    return [(x.step, x.state) for x in records.parse(service, order_id, r.json())]


def states(m: dict[str, Any]) -> dict[str, str]:
    return {s["step"]: s["state"] for s in m["steps"]}


def is_problem(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["status"] == status


def wait_notified(user: ApiUser, order_id: str, kind: str) -> None:
    user.wait_until(
        order_id,
        lambda _: any(n["type"] == kind and n["orderId"] == order_id for n in user.get("/api/notifications").json()),
        timeout=30,
    )


def test_each_participant_tells_what_it_did_for_a_placed_order(
    rich_user: ApiUser, product, settings: Settings, gateway: str
) -> None:
    oid = rich_user.place(product(stock=3, price="6.00"), 2)
    assert rich_user.wait_terminal(oid)["orderStatus"] == "PLACED"
    wait_notified(rich_user, oid, "ORDER_PLACED")
    assert told(settings, "order", oid) == [("create_order", "done"), ("track", "done"), ("track", "done")]
    assert told(settings, "payment", oid) == [("charge", "done")]
    assert told(settings, "wallet", oid) == [("charge", "done")]
    assert told(settings, "inventory", oid) == [("reserve", "done")]
    assert {step for step, _ in told(settings, "notification", oid)} == {"notify"}
    r = own_records(settings, "inventory", oid)
    assert r.json()["records"][0]["what"].startswith("reserved 2 × ")
    for service in PARTICIPANTS:
        # an order the participant never saw: nothing to tell; not an order id: 422
        assert own_records(settings, service, str(uuid.uuid4())).json()["records"] == []
        is_problem(own_records(settings, service, "not-an-order"), 422)
        # only with the internal secret, and never through the gateway
        r = httpx.get(f"http://127.0.0.1:{settings.port_of(service)}/internal/orders/{oid}/records", timeout=10)
        is_problem(r, 403)
    is_problem(rich_user.get(f"/internal/orders/{oid}/records"), 404)


def test_an_order_out_of_stock_after_payment_shows_its_refund(
    gateway: str, product, stack: Stack, settings: Settings
) -> None:
    """Two orders for the last unit both pass the early check (Payment held); one is placed, the
    other refunded: its map has the charge, the failed reservation and the refund, from Payment,
    Wallet and Inventory's own rows."""
    pid = product(stock=1, price="9.00")
    a, b = register(gateway, tag="map-a"), register(gateway, tag="map-b")
    a.deposit(50)
    b.deposit(50)
    stack.hold("payment")
    try:
        oa, ob = a.place(pid), b.place(pid)
    finally:
        stack.release("payment")
    fa, fb = a.wait_terminal(oa), b.wait_terminal(ob)
    assert sorted([fa["orderStatus"], fb["orderStatus"]]) == ["FAILED", "PLACED"]
    loser, oid = (a, oa) if fa["orderStatus"] == "FAILED" else (b, ob)
    loser.wait_until(oid, lambda o: o["refundStatus"] == "REFUND_DONE")
    assert told(settings, "payment", oid) == [("charge", "done"), ("refund", "done")]
    assert told(settings, "wallet", oid) == [("charge", "done"), ("refund", "done")]
    assert told(settings, "inventory", oid) == [("reserve", "failed")]

    m = loser.get(f"/api/orders/{oid}/saga").json()
    assert (m["orderStatus"], m["failReason"], m["atRest"]) == ("FAILED", "INVENTORY_INSUFFICIENT", True)
    st = states(m)
    assert (st["create_order"], st["charge"], st["reserve"], st["refund"]) == ("done", "done", "failed", "done")
    assert (st["release"], st["time_out"], st["cancel_order"], st["ship"]) == ("not_run",) * 4
    who = {(t["service"], t["step"]) for t in m["timeline"]}
    assert {("payment", "refund"), ("wallet", "refund"), ("inventory", "reserve"), ("order", "track")} <= who
    times = [t["at"] for t in m["timeline"]]
    assert times == sorted(times)


def test_the_map_is_the_owners_and_the_admins_and_a_participant_down_is_unknown(
    rich_user: ApiUser, user: ApiUser, admin: ApiUser, product, stack: Stack
) -> None:
    oid = rich_user.place(product(stock=2, price="4.00"))
    assert rich_user.wait_terminal(oid)["orderStatus"] == "PLACED"
    wait_notified(rich_user, oid, "ORDER_PLACED")

    def settled() -> dict[str, Any] | None:
        """The owner's map once notifying is done too (the email can be in while the SMS is still
        being sent): from then on the map no longer changes, so two reads of it can be compared."""
        mine = rich_user.get(f"/api/orders/{oid}/saga")
        assert mine.status_code == 200, mine.text
        notify = states(body := mine.json())["notify"]
        assert notify in ("done", "current")
        return body if notify == "done" else None

    m = eventually(settled, what="the notifications of the order done")
    assert {s["step"] for s in m["steps"]} == {s.name for s in saga.STEPS if s.topic == saga.ORDER_TOPIC}
    assert [s["service"] for s in m["services"]] == list(saga.participants())
    assert all(s["state"] == "answered" for s in m["services"])
    # the admin sees any order's map; nobody else does
    assert admin.get(f"/api/admin/orders/{oid}/saga").json()["steps"] == m["steps"]
    is_problem(user.get(f"/api/orders/{oid}/saga"), 404)
    is_problem(user.get(f"/api/admin/orders/{oid}/saga"), 403)
    for bad in ("not-an-order", str(uuid.uuid4()), "%00", "1" * 300):
        is_problem(rich_user.get(f"/api/orders/{bad}/saga"), 404)
        is_problem(admin.get(f"/api/admin/orders/{bad}/saga"), 404)
    definition = user.get("/api/saga/definition")
    assert definition.status_code == 200 and definition.json() == saga.definition(get_settings().saga_mode)

    stack.hold("notification")
    try:
        r = rich_user.get(f"/api/orders/{oid}/saga")
        assert r.status_code == 200, r.text
        down = r.json()
    finally:
        stack.release("notification")
    services = {s["service"]: s for s in down["services"]}
    assert services["notification"]["state"] == "unknown" and services["notification"]["reason"]
    assert states(down)["notify"] == "unknown"
    assert all(t["service"] != "notification" for t in down["timeline"])
    # the rest of the map is drawn as before
    assert {k: v for k, v in states(down).items() if k != "notify"} == {
        k: v for k, v in states(m).items() if k != "notify"
    }


@pytest.mark.parametrize("who", ["nobody", "user"])
def test_the_definition_needs_a_signed_in_user(gateway: str, user: ApiUser, who: str) -> None:
    r = httpx.get(f"{gateway}/api/saga/definition") if who == "nobody" else user.get("/api/saga/definition")
    if who == "nobody":
        is_problem(r, 401)
    else:
        assert [s["name"] for s in r.json()["steps"]] == [s.name for s in saga.STEPS]
