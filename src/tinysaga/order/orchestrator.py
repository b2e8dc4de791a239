"""Order as the saga's orchestrator (TINYSAGA_SAGA_MODE=orchestration, SPEC section 5, ADR 14).

The order's row is the saga's state, and Order already changes it on every outcome; in
orchestration mode it also sends, in the same transaction, the command of each step the change
calls for: the steps of the saga definition that have a `command` and that the event triggers in
choreography (`saga.commanded_by`). So the orchestrator executes the declared definition rather
than a second copy of it:

- ORDER_INITIATED (the order written)          -> CHARGE_PAYMENT
- PAYMENT_DONE (INITIATED -> PAYMENT_DONE)      -> RESERVE_STOCK
- INVENTORY_INSUFFICIENT (-> FAILED)            -> REFUND_PAYMENT
- ORDER_TIMED_OUT, ORDER_CANCEL_REQUESTED       -> REFUND_PAYMENT and RELEASE_STOCK
- REFUND_RETRY_REQUESTED (an operator)          -> REFUND_PAYMENT

An outcome that does not move the order to another status (a duplicate, a late answer to an order
that timed out or is being canceled) sends nothing: the compensations were sent with the change
that ended the forward path. In choreography (`CHOREOGRAPHY`) no command is ever sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tinysaga.contracts import events as ev
from tinysaga.contracts import saga
from tinysaga.platform.settings import Settings

Outgoing = Sequence[tuple[str, ev.Event]]  # (topic, command)


@dataclass(frozen=True)
class Orchestrator:
    topic: str | None  # where commands go; None: choreography, nothing is sent

    @classmethod
    def of(cls, settings: Settings) -> Orchestrator:
        return cls(settings.commands_topic if settings.saga_mode == saga.ORCHESTRATION else None)

    @property
    def active(self) -> bool:
        return self.topic is not None

    def commands(self, event: ev.Event) -> list[tuple[str, ev.Event]]:
        """The commands that `event` (Order's own, or an outcome that moved the order on) calls for."""
        if self.topic is None:
            return []
        return [(self.topic, ev.command(s.command, event)) for s in saga.commanded_by(event.eventName) if s.command]


CHOREOGRAPHY = Orchestrator(None)
