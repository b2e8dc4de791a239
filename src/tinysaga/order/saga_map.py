"""The saga map of one order, pure: where the order is in the declared saga and what each service
did for it, and when. It is put together from the records every participant keeps of the order
(`contracts.records`: Payment's payment row, Wallet's ledger rows, Inventory's reservation,
Notification's notifications, and Order's own history), not from the events that were sent, so it
reads the same whichever way the saga runs. A participant that did not answer is `unknown`: its
steps without a record say so, and the rest of the map is drawn all the same."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tinysaga.contracts import events as ev
from tinysaga.contracts import saga
from tinysaga.contracts.records import DONE, FAILED, PENDING, Record
from tinysaga.order import domain

# A step's state on the map: DONE and FAILED as its records say; CURRENT: under way (a record
# pending) or awaited by the order; UNKNOWN: no record, and its participant did not answer;
# NOT_RUN: no record (not run, or not yet).
CURRENT, UNKNOWN, NOT_RUN = "current", "unknown", "not_run"


def order_records(history: Sequence[Mapping[str, Any]]) -> list[Record]:
    """Order's records of the order, from its history rows: a row for an event one of Order's own
    steps published is that step's (create_order, time_out, cancel_order, ship, ...); any other is
    Order following the saga (`track`)."""
    out = []
    for h in history:
        name = ev.ALIASES.get(h["event_name"], h["event_name"])
        producers = saga.producers_of(name)
        own = producers[0].name if producers and producers[0].participant == saga.ORDER else None
        step = own or "track"
        what = f"{name}: the order is {h['order_status']}"
        out.append(Record(step, what, h["at"], DONE, h.get("status_info") or ""))
    return out


def current_steps(order: Mapping[str, Any], last_event: str | None) -> list[str]:
    """The steps an order still in flight waits for (none once it is at rest)."""
    status = domain.Status(order["order_status"])
    if status not in domain.UNSETTLED:
        return []
    return domain.waiting_for(status, last_event, order["payment_settled"], order["stock_settled"])


def step_state(records: Sequence[Record], awaited: bool, participant_unknown: bool) -> str:
    if any(r.state == FAILED for r in records):
        return FAILED
    if any(r.state == PENDING for r in records):
        return CURRENT
    if records:
        return DONE
    if awaited:
        return CURRENT
    return UNKNOWN if participant_unknown else NOT_RUN


def build(
    order: Mapping[str, Any],
    last_event: str | None,
    answers: Mapping[str, Sequence[Record]],
    unknown: Mapping[str, str],
) -> dict[str, Any]:
    """The map: the order, the state of every step of the order saga, the participants (answered
    with so many records, or unknown and why), and the timeline of every record, oldest first.
    `answers`: each participant that answered, with its records; `unknown`: the others, with why."""
    current = current_steps(order, last_event)
    order_of = {name: i for i, name in enumerate(saga.participants())}
    timeline = sorted(
        ((service, r) for service, rs in answers.items() for r in rs),
        key=lambda sr: (sr[1].at, order_of.get(sr[0], len(order_of))),
    )
    steps = []
    for s in saga.STEPS:
        if s.topic != saga.ORDER_TOPIC:
            continue  # the user's own steps, before any order
        mine = [r for _, r in timeline if r.step == s.name]
        steps.append(
            {
                "step": s.name,
                "participant": s.participant,
                "state": step_state(mine, s.name in current, s.participant in unknown),
                "records": len(mine),
                "lastAt": mine[-1].at.isoformat() if mine else None,
            }
        )
    services = [
        {"service": p, "state": "unknown", "reason": unknown[p]}
        if p in unknown
        else {"service": p, "state": "answered", "records": len(answers.get(p, ()))}
        for p in saga.participants()
    ]
    return {
        "orderId": str(order["order_id"]),
        "orderStatus": order["order_status"],
        "failReason": order["fail_reason"],
        "refundStatus": order["refund_status"],
        "atRest": domain.stream_done(order["order_status"], order["refund_status"]),
        "current": current,
        "steps": steps,
        "services": services,
        "timeline": [{"service": service, **r.to_json()} for service, r in timeline],
    }
