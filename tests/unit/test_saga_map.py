"""The saga map: the declared saga served as data (`GET /api/saga/definition`, derived from
`contracts.saga.STEPS`), Order's records of an order from its history, the map put together from
every participant's records (`order.saga_map`, `handlers.SagaMap` over fake participants, one of
them down, slow or confused), and its routes (the owner's, the admin's, Order's internal records)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.unit.fakes_order import T0, FakeOrderRepository, FakeOrders, FakeParticipants
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
from tinysaga.contracts import records, saga
from tinysaga.contracts.records import DONE, FAILED, PENDING, Record
from tinysaga.order import saga_map
from tinysaga.order.domain import FailReason, Refund, Status
from tinysaga.order.handlers import SagaMap

# ---- the declared saga, as data -------------------------------------------------------------------


def test_the_definition_is_every_step_of_the_saga_with_its_fields() -> None:
    d = saga.definition()
    assert [s["name"] for s in d["steps"]] == [s.name for s in saga.STEPS]
    for served, step in zip(d["steps"], saga.STEPS, strict=True):
        assert served["participant"] == step.participant and served["kind"] == step.kind
        assert served["triggers"] == list(step.triggers) and served["outcomes"] == list(step.outcomes)
        assert served["compensation"] == step.compensation and served["leadsTo"] == step.leads_to
        assert [(e["event"], e["orderStatus"]) for e in served["ends"]] == list(step.ends)
    assert d["participants"] == ["order", "payment", "inventory", "notification", "wallet"]


def test_every_arrow_joins_steps_or_ends_in_a_status_and_every_outcome_has_one() -> None:
    d = saga.definition()
    names = {s.name for s in saga.STEPS}
    for e in d["edges"]:
        assert e["from"] in names and e["event"] in saga.BY_NAME[e["from"]].outcomes
        assert (e["to"] in names) != e["toStatus"], e
    drawn = {(e["from"], e["event"]) for e in d["edges"]}
    for s in saga.STEPS:
        if s.topic == saga.ORDER_TOPIC:
            assert all((s.name, out) in drawn for out in s.outcomes if s.kind != "tracking"), s.name
    assert {"from": "reserve", "to": "PLACED", "event": ev.INVENTORY_RESERVED, "dashed": False, "toStatus": True} in (
        d["edges"]
    )
    assert {
        "from": "reserve",
        "to": "refund",
        "event": ev.INVENTORY_INSUFFICIENT,
        "dashed": True,
        "toStatus": False,
    } in (d["edges"])


def test_a_step_added_to_the_saga_is_served_and_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = saga.Step("gift_wrap", "inventory", "wraps it", (ev.INVENTORY_RESERVED,), kind="lifecycle")
    steps = (*saga.STEPS, extra)
    monkeypatch.setattr(saga, "STEPS", steps)
    monkeypatch.setattr(saga, "BY_NAME", {s.name: s for s in steps})
    d = saga.definition()
    assert d["steps"][-1]["name"] == "gift_wrap"
    assert {
        "from": "reserve",
        "to": "gift_wrap",
        "event": ev.INVENTORY_RESERVED,
        "dashed": False,
        "toStatus": False,
    } in (d["edges"])


async def test_the_definition_route_serves_it_to_a_signed_in_user(client: httpx.AsyncClient) -> None:  # noqa: F811
    r = await client.get("/api/saga/definition", headers=USER)
    assert r.status_code == 200
    assert r.json() == saga.definition()
    is_problem(await client.get("/api/saga/definition"), 401)


# ---- Order's records ------------------------------------------------------------------------------


def history_row(event: str, status: str, seconds: float) -> dict[str, Any]:
    return {"event_name": event, "order_status": status, "status_info": "info", "at": T0 + timedelta(seconds=seconds)}


def test_orders_history_rows_are_its_own_steps_or_it_following_the_saga() -> None:
    rows = [
        history_row(ev.ORDER_INITIATED, "INITIATED", 0),
        history_row(ev.PAYMENT_DONE, "PAYMENT_DONE", 1),
        history_row(ev.INVENTORY_RESERVED_SEED_ALIAS, "PLACED", 2),
        history_row(ev.ORDER_SHIPPED, "ON_THE_WAY", 3),
        history_row(ev.ORDER_CANCEL_REQUESTED, "CANCELING", 4),
        history_row(ev.ORDER_TIMED_OUT, "FAILED", 5),
        history_row(ev.REFUND_RETRY_REQUESTED, "FAILED", 6),
        history_row(ev.ORDER_CANCELED, "CANCELED", 7),
        history_row("SOMETHING_NEW", "PLACED", 8),  # a name the definition does not know: Order followed it
    ]
    got = saga_map.order_records(rows)
    assert [r.step for r in got] == [
        "create_order",
        "track",
        "track",
        "ship",
        "cancel_order",
        "time_out",
        "retry_refund",
        "track",
        "track",
    ]
    assert got[2].what == "INVENTORY_RESERVED: the order is PLACED" and got[0].detail == "info"
    assert all(r.state == DONE for r in got)


# ---- the map ----------------------------------------------------------------------------------------


def order_row(status: Status, **kw: Any) -> dict[str, Any]:
    return {
        "order_id": uuid.UUID(int=1),
        "order_status": status.value,
        "fail_reason": None,
        "refund_status": None,
        "payment_settled": False,
        "stock_settled": False,
        **kw,
    }


def at(seconds: float) -> Any:
    return T0 + timedelta(seconds=seconds)


def states(m: dict[str, Any]) -> dict[str, str]:
    return {s["step"]: s["state"] for s in m["steps"]}


PLACED_ANSWERS = {
    "order": [
        Record("create_order", "ORDER_INITIATED: the order is INITIATED", at(0)),
        Record("track", "PAYMENT_DONE: the order is PAYMENT_DONE", at(2)),
        Record("track", "INVENTORY_RESERVED: the order is PLACED", at(4)),
    ],
    "payment": [Record("charge", "charged 10.00 USD", at(1))],
    "wallet": [Record("charge", "debited 10.00 USD", at(1))],
    "inventory": [Record("reserve", "reserved 1 × sku", at(3))],
    "notification": [
        Record("notify", "ORDER_PLACED: email sent", at(5)),
        Record("notify", "ORDER_PLACED: SMS waiting to be sent", at(4.5), PENDING),
    ],
}


def test_a_placed_order_has_its_forward_path_done_and_nothing_else_run() -> None:
    m = saga_map.build(order_row(Status.PLACED), ev.INVENTORY_RESERVED, PLACED_ANSWERS, {})
    st = states(m)
    assert (st["create_order"], st["charge"], st["reserve"], st["track"]) == (DONE, DONE, DONE, DONE)
    assert st["notify"] == saga_map.CURRENT  # an SMS still waiting to be sent
    for step in ("refund", "release", "time_out", "retry_refund", "cancel_order", "ship", "deliver"):
        assert st[step] == saga_map.NOT_RUN, step
    assert set(st) == {s.name for s in saga.STEPS if s.topic == saga.ORDER_TOPIC}
    assert m["current"] == [] and m["atRest"] is True
    # the timeline: every record, oldest first, with who did it
    assert [(t["service"], t["step"]) for t in m["timeline"]] == [
        ("order", "create_order"),
        ("payment", "charge"),
        ("wallet", "charge"),
        ("order", "track"),
        ("inventory", "reserve"),
        ("order", "track"),
        ("notification", "notify"),
        ("notification", "notify"),
    ]
    assert next(s for s in m["steps"] if s["step"] == "charge")["records"] == 2
    assert all(s["state"] == "answered" for s in m["services"])


def test_out_of_stock_after_payment_shows_the_failed_reservation_and_the_refund() -> None:
    answers = {
        **PLACED_ANSWERS,
        "inventory": [Record("reserve", "not enough stock", at(3), FAILED)],
        "payment": [Record("charge", "charged", at(1)), Record("refund", "refunded", at(5))],
        "wallet": [Record("charge", "debited", at(1)), Record("refund", "credited back", at(5))],
    }
    row = order_row(Status.FAILED, fail_reason=FailReason.INVENTORY_INSUFFICIENT, refund_status=Refund.REFUND_DONE)
    st = states(saga_map.build(row, ev.REFUND_DONE, answers, {}))
    assert (st["charge"], st["reserve"], st["refund"], st["release"]) == (DONE, FAILED, DONE, saga_map.NOT_RUN)


def test_an_order_in_flight_shows_the_steps_it_waits_for_as_current() -> None:
    answers = {"order": PLACED_ANSWERS["order"][:2], "payment": [Record("charge", "charged", at(1))]}
    m = saga_map.build(order_row(Status.PAYMENT_DONE), ev.PAYMENT_DONE, answers, {})
    assert m["current"] == ["reserve"] and states(m)["reserve"] == saga_map.CURRENT
    assert m["atRest"] is False
    # a cancel waits for what is not settled yet
    canceling = order_row(Status.CANCELING, payment_settled=True)
    m = saga_map.build(canceling, ev.PAYMENT_VOIDED, {"order": []}, {})
    assert m["current"] == ["release"] and states(m)["refund"] == saga_map.NOT_RUN
    # a record that says the awaited step is done wins over the order's older view
    done = {**answers, "inventory": [Record("reserve", "reserved", at(3))]}
    assert states(saga_map.build(order_row(Status.PAYMENT_DONE), ev.PAYMENT_DONE, done, {}))["reserve"] == DONE


def test_a_participant_that_did_not_answer_leaves_its_steps_unknown_and_the_rest_drawn() -> None:
    answers = {k: v for k, v in PLACED_ANSWERS.items() if k != "inventory"}
    m = saga_map.build(order_row(Status.PLACED), ev.INVENTORY_RESERVED, answers, {"inventory": "no answer within 2 s"})
    st = states(m)
    assert st["reserve"] == st["release"] == saga_map.UNKNOWN
    assert st["charge"] == DONE  # from Payment's and Wallet's records
    assert {"service": "inventory", "state": "unknown", "reason": "no answer within 2 s"} in m["services"]
    assert all(t["service"] != "inventory" for t in m["timeline"])
    # Payment down, Wallet up: the charge is still known from the wallet's ledger
    answers = {k: v for k, v in PLACED_ANSWERS.items() if k != "payment"}
    st = states(saga_map.build(order_row(Status.PLACED), ev.INVENTORY_RESERVED, answers, {"payment": "down"}))
    assert st["charge"] == DONE and st["refund"] == saga_map.UNKNOWN


# ---- the handler, over fake participants ------------------------------------------------------------


def put_placed(orders: FakeOrders) -> uuid.UUID:
    oid = orders.put(Status.PLACED)
    orders.history.append(
        {
            "order_id": oid,
            "order_status": "PLACED",
            "status_info": "placed",
            "event_name": ev.INVENTORY_RESERVED,
            "at": at(4),
        }
    )
    return oid


async def test_the_map_asks_every_other_participant_once_and_tells_who_did_not_answer() -> None:
    orders = FakeOrders()
    oid = put_placed(orders)
    fake = FakeParticipants(
        answers={"payment": [Record("charge", "charged", at(1))], "wallet": [Record("charge", "debited", at(1))]},
        down={"inventory"},
        slow={"notification"},
    )
    mapper = SagaMap(reader=FakeOrderRepository(orders), fetch=fake, timeout_seconds=0.05)  # type: ignore[arg-type]
    m = await mapper(orders.orders[oid])
    assert sorted(s for s, _ in fake.asked) == ["inventory", "notification", "payment", "wallet"]
    assert {s for _, s in fake.asked} == {str(oid)}
    by = {s["service"]: s for s in m["services"]}
    assert by["inventory"]["state"] == "unknown" and "no replica" in by["inventory"]["reason"]
    assert by["notification"] == {"service": "notification", "state": "unknown", "reason": "no answer within 0.05 s"}
    assert by["payment"] == {"service": "payment", "state": "answered", "records": 1}
    assert by["order"]["records"] == 2  # its history: INITIATED, then PLACED
    st = states(m)
    assert (st["create_order"], st["charge"], st["reserve"], st["notify"]) == (DONE, DONE, "unknown", "unknown")


async def test_an_answer_for_another_order_is_not_shown() -> None:
    orders = FakeOrders()
    oid = put_placed(orders)
    fake = FakeParticipants(answers={"inventory": [Record("reserve", "reserved", at(3))]}, confused={"inventory"})
    m = await SagaMap(reader=FakeOrderRepository(orders), fetch=fake)(orders.orders[oid])  # type: ignore[arg-type]
    assert states(m)["reserve"] == "unknown"
    assert all(t["service"] != "inventory" for t in m["timeline"])


# ---- the routes -------------------------------------------------------------------------------------


async def test_the_owner_sees_the_map_of_their_order_and_nobody_else_does(
    client: httpx.AsyncClient,  # noqa: F811
    db: FakeOrders,  # noqa: F811
    participants: FakeParticipants,  # noqa: F811
) -> None:
    oid = put_placed(db)
    participants.answers["inventory"] = [Record("reserve", "reserved 2 × PROD-1", at(3))]
    r = await client.get(f"/api/orders/{oid}/saga", headers=USER)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["orderId"], body["orderStatus"], body["atRest"]) == (str(oid), "PLACED", True)
    assert states(body)["reserve"] == DONE
    assert ("inventory", "reserve", "reserved 2 × PROD-1") in [
        (t["service"], t["step"], t["what"]) for t in body["timeline"]
    ]
    # someone else's order, no such order, not an order id: 404 as the other order routes
    is_problem(await client.get(f"/api/orders/{oid}/saga", headers={"x-user-id": "user-2"}), 404)
    is_problem(await client.get(f"/api/orders/{uuid.uuid4()}/saga", headers=USER), 404)
    is_problem(await client.get("/api/orders/not-an-order/saga", headers=USER), 404)
    is_problem(await client.get(f"/api/orders/{oid}/saga"), 401)


async def test_the_admin_sees_the_map_of_any_order(
    client: httpx.AsyncClient,  # noqa: F811
    db: FakeOrders,  # noqa: F811
) -> None:
    oid = db.put(Status.INITIATED, user_id="user-2")
    r = await client.get(f"/api/admin/orders/{oid}/saga", headers=ADMIN)
    assert r.status_code == 200 and r.json()["current"] == ["charge"]
    is_problem(await client.get(f"/api/admin/orders/{oid}/saga", headers=USER), 403)
    is_problem(await client.get(f"/api/admin/orders/{uuid.uuid4()}/saga", headers=ADMIN), 404)
    is_problem(await client.get("/api/admin/orders/%20/saga", headers=ADMIN), 404)


async def test_orders_own_records_answer_as_every_participants_do(
    client: httpx.AsyncClient,  # noqa: F811
    db: FakeOrders,  # noqa: F811
) -> None:
    oid = put_placed(db)
    r = await client.get(f"/internal/orders/{oid}/records")
    assert r.status_code == 200
    got = records.parse("order", str(oid), r.json())
    assert [x.step for x in got] == ["create_order", "track"]
    empty = await client.get(f"/internal/orders/{uuid.uuid4()}/records")
    assert empty.status_code == 200 and empty.json()["records"] == []
    body = is_problem(await client.get("/internal/orders/12345/records"), 422)
    assert body["errors"][0]["field"] == "orderId"
