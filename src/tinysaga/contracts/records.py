"""What a participant did for one order, as it tells it from its own rows: the answer of
`GET /internal/orders/{orderId}/records` (`routes.ORDER_RECORDS`), which Order puts together into the
order's saga map. Each record is one thing the participant did, under the step of the saga
definition it belongs to, with when and how it ended. The records say what happened, not which
event started it, so they read the same whichever way the saga is run."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tinysaga.contracts import saga

DONE, FAILED, PENDING = "done", "failed", "pending"
STATES = (DONE, FAILED, PENDING)
MAX_RECORDS = 200  # what one participant may answer for one order
WHAT_MAX = 200
DETAIL_MAX = 500


class InvalidRecords(ValueError):
    """An answer that is not a participant's records of the order."""


@dataclass(frozen=True)
class Record:
    step: str  # a step of the saga definition
    what: str  # what the participant did, in a few words
    at: datetime  # when (timezone-aware)
    state: str = DONE  # done, failed (it did not succeed) or pending (under way)
    detail: str = ""

    def __post_init__(self) -> None:
        if self.step not in saga.BY_NAME:
            raise InvalidRecords(f"{self.step!r} is not a step of the saga")
        if self.state not in STATES:
            raise InvalidRecords(f"{self.state!r} is not one of {STATES}")
        if self.at.tzinfo is None:
            raise InvalidRecords("a record's time must say its timezone")

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "what": self.what[:WHAT_MAX],
            "at": self.at.isoformat(),
            "state": self.state,
            "detail": self.detail[:DETAIL_MAX],
        }


def answer(service: str, order_id: str, records: Iterable[Record]) -> dict[str, Any]:
    """A participant's answer: its records of the order, oldest first."""
    ordered = sorted(records, key=lambda r: r.at)[:MAX_RECORDS]
    return {"service": service, "orderId": order_id, "records": [r.to_json() for r in ordered]}


def parse(service: str, order_id: str, body: Any) -> list[Record]:
    """The records in a participant's answer (InvalidRecords when it is not one for this service
    and order)."""
    if not isinstance(body, Mapping) or body.get("service") != service or body.get("orderId") != order_id:
        raise InvalidRecords(f"not {service}'s records of order {order_id}")
    items = body.get("records")
    if not isinstance(items, list) or len(items) > MAX_RECORDS:
        raise InvalidRecords("records must be a list")
    out = []
    for item in items:
        try:
            out.append(
                Record(
                    step=str(item["step"]),
                    what=str(item["what"])[:WHAT_MAX],
                    at=datetime.fromisoformat(str(item["at"])),
                    state=str(item.get("state", DONE)),
                    detail=str(item.get("detail") or "")[:DETAIL_MAX],
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidRecords(f"a record of {service} cannot be read: {e}") from e
    return out
