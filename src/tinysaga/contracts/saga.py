"""The order saga, declared once.

Every step of the saga is a row of `STEPS`: which participant does it, the events that trigger it,
the events it may answer with, the step that compensates it, and the order status it leads to
(with how long an order may stay there before it counts as stuck). Everything else is derived from
this table, not written beside it:

- the event names each service handles (`handled_by`), which the settings may narrow but not widen;
- the check that every step has a handler and every handler a step (`check_handlers`, at start-up
  and in the tests);
- `./tiny-saga saga`: the table and the Mermaid diagram (`table`, `mermaid`), which the README shows.

The events themselves, with a typed payload per name, are in `contracts.events`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tinysaga.contracts import events as ev

ORDER_TOPIC = "order-topic"
USER_TOPIC = "user-topic"
COMMANDS_TOPIC = "saga-commands"  # orchestration mode only (SPEC section 5)
# Notification keeps the users' contacts from the user topic in a consumer group of its own
CONTACTS_GROUP = "notification-contacts"

# How the saga runs (TINYSAGA_SAGA_MODE). Choreography: each participant reacts to the events that
# trigger its steps. Orchestration: Order directs the saga; the steps that have a `command` are
# started only by that command on COMMANDS_TOPIC, which Order sends, in the transaction that
# records the event that calls for it (ADR 14).
CHOREOGRAPHY, ORCHESTRATION = "choreography", "orchestration"
MODES = (CHOREOGRAPHY, ORCHESTRATION)

# The participants: the services with a part in the saga (Auth only opens the user's story).
ORDER, PAYMENT, WALLET, INVENTORY, NOTIFICATION, AUTH = (
    "order",
    "payment",
    "wallet",
    "inventory",
    "notification",
    "auth",
)

# What starts a step that no event starts: a request, or the clock.
API_CALL = "POST /api/orders"
CANCEL_CALL = "POST /api/orders/{orderId}/cancel"
SHIP_CALL = "POST /api/admin/orders/{orderId}/ship"
DELIVER_CALL = "POST /api/admin/orders/{orderId}/deliver"
REFUND_RETRY_CALL = "POST /api/admin/orders/{orderId}/refund-retry"
REQUESTS = (API_CALL, CANCEL_CALL, SHIP_CALL, DELIVER_CALL, REFUND_RETRY_CALL)
DEADLINE = "the saga's deadline passes"


@dataclass(frozen=True)
class Step:
    name: str
    participant: str
    does: str  # one line, for the table
    triggers: tuple[str, ...]  # event names (or API_CALL / DEADLINE)
    outcomes: tuple[str, ...] = ()  # the events it may publish
    compensation: str | None = None  # the step that undoes it
    leads_to: str | None = None  # the order status its success leads to
    stay_seconds: float | None = None  # how long an order may stay in that status before it is stuck
    kind: str = "action"  # action | compensation | cancel | lifecycle | tracking | notification | setup
    topic: str = ORDER_TOPIC
    batch: bool = False  # the participant may handle a poll's worth of this step in one transaction
    # seconds the participant's consumer may wait after a poll that brought this step's events, for
    # more to share the transaction (only for a step nobody waits on: a side channel)
    gather_seconds: float = 0.0
    ends: tuple[tuple[str, str], ...] = ()  # (outcome, order status) for the outcomes that end the saga
    command: str | None = None  # in orchestration mode, what starts the step instead of its triggers

    @property
    def handled_events(self) -> tuple[str, ...]:
        return tuple(t for t in self.triggers if t in ev.ALL_NAMES)


STEPS: tuple[Step, ...] = (
    # ---- the forward path --------------------------------------------------------------------
    Step(
        "create_order",
        ORDER,
        "checks the product and stock, writes the order INITIATED with ORDER_INITIATED",
        (API_CALL,),
        (ev.ORDER_INITIATED,),
        leads_to="INITIATED",
        stay_seconds=10,
    ),
    Step(
        "charge",
        PAYMENT,
        "debits the wallet (one wallet call for a poll's orders)",
        (ev.ORDER_INITIATED,),
        (ev.PAYMENT_DONE, ev.PAYMENT_FAIL),
        compensation="refund",
        leads_to="PAYMENT_DONE",
        stay_seconds=10,
        batch=True,
        ends=((ev.PAYMENT_FAIL, "FAILED"),),
        command=ev.CHARGE_PAYMENT,
    ),
    Step(
        "reserve",
        INVENTORY,
        "reserves the stock with one conditional UPDATE",
        (ev.PAYMENT_DONE,),
        (ev.INVENTORY_RESERVED, ev.INVENTORY_INSUFFICIENT),
        compensation="release",
        leads_to="PLACED",
        batch=True,
        ends=((ev.INVENTORY_RESERVED, "PLACED"),),
        command=ev.RESERVE_STOCK,
    ),
    # ---- compensations -----------------------------------------------------------------------
    Step(
        "refund",
        PAYMENT,
        "gives back what the ledger says was charged (a void when nothing was)",
        (ev.INVENTORY_INSUFFICIENT, ev.ORDER_TIMED_OUT, ev.ORDER_CANCEL_REQUESTED, ev.REFUND_RETRY_REQUESTED),
        (ev.REFUND_INITIATED, ev.REFUND_DONE, ev.REFUND_FAILED, ev.PAYMENT_VOIDED),
        leads_to="FAILED",
        kind="compensation",
        ends=((ev.REFUND_DONE, "FAILED or CANCELED"), (ev.REFUND_FAILED, "FAILED or CANCELED")),
        command=ev.REFUND_PAYMENT,
    ),
    Step(
        "release",
        INVENTORY,
        "gives a timed-out or canceled order's reservation back (or blocks a late one)",
        (ev.ORDER_TIMED_OUT, ev.ORDER_CANCEL_REQUESTED),
        (ev.INVENTORY_RELEASED,),  # to a cancel only
        kind="compensation",
        command=ev.RELEASE_STOCK,
    ),
    Step(
        "time_out",
        ORDER,
        "the sweeper fails a saga past its deadline with TIMEOUT",
        (DEADLINE,),
        (ev.ORDER_TIMED_OUT,),
        leads_to="FAILED",
        kind="compensation",
    ),
    Step(
        "retry_refund",
        ORDER,
        "an operator retries the refund of an order whose refund failed (issue 17)",
        (REFUND_RETRY_CALL,),
        (ev.REFUND_RETRY_REQUESTED,),
        kind="compensation",
    ),
    # ---- the order's life after the saga (ADR 13) ----------------------------------------------
    Step(
        "cancel_order",
        ORDER,
        "the owner cancels: CANCELING, and what was done is undone by refund and release",
        (CANCEL_CALL,),
        (ev.ORDER_CANCEL_REQUESTED,),
        leads_to="CANCELING",
        stay_seconds=20,
        kind="cancel",
    ),
    Step(
        "ship",
        ORDER,
        "an admin ships a placed order",
        (SHIP_CALL,),
        (ev.ORDER_SHIPPED,),
        leads_to="ON_THE_WAY",
        kind="lifecycle",
    ),
    Step(
        "deliver",
        ORDER,
        "an admin marks a shipped order delivered",
        (DELIVER_CALL,),
        (ev.ORDER_DELIVERED,),
        leads_to="DELIVERED",
        kind="lifecycle",
    ),
    # ---- the order follows the saga ------------------------------------------------------------
    Step(
        "track",
        ORDER,
        "moves the order through its state machine (CANCELED once both sides of a cancel are settled)",
        (*ev.STEP_OUTCOMES, *ev.CANCEL_OUTCOMES),
        (ev.ORDER_CANCELED,),
        kind="tracking",
        batch=True,
        ends=((ev.ORDER_CANCELED, "CANCELED"),),
    ),
    Step(
        "notify",
        NOTIFICATION,
        "tells the user by email, SMS and inbox, once per (order, type)",
        (*ev.STEP_OUTCOMES, ev.ORDER_TIMED_OUT, *ev.ORDER_CHANGES),
        kind="notification",
        batch=True,
        # an order's payment and its placement come 10-30 ms apart, and at light load the next
        # order's a fraction of a second later: one transaction for a second of them (ADR 75)
        gather_seconds=1.0,
    ),
    # ---- the user, before any order ------------------------------------------------------------
    Step(
        "open_wallet",
        WALLET,
        "opens the new user's wallet",
        (ev.USER_REGISTERED,),
        kind="setup",
        topic=USER_TOPIC,
    ),
    Step(
        "remember_contact",
        NOTIFICATION,
        "keeps the user's email and phone",
        (ev.USER_REGISTERED,),
        kind="setup",
        topic=USER_TOPIC,
    ),
)

BY_NAME: dict[str, Step] = {s.name: s for s in STEPS}


class SagaDefinitionError(RuntimeError):
    """The code and the saga definition disagree, or a setting names an event the saga does not
    route to the service: the service refuses to start."""


def steps_of(participant: str, topic: str | None = None) -> tuple[Step, ...]:
    return tuple(s for s in STEPS if s.participant == participant and (topic is None or s.topic == topic))


def starters(step: Step, mode: str) -> tuple[str, ...]:
    """What a participant receives that starts `step`: its triggering events, or, in orchestration
    mode, its command if it has one."""
    if mode == ORCHESTRATION and step.command is not None:
        return (step.command,)
    return step.handled_events


def topic_of(step: Step, mode: str) -> str:
    """The topic on which what starts `step` arrives."""
    return COMMANDS_TOPIC if mode == ORCHESTRATION and step.command is not None else step.topic


def consumed_steps(participant: str, topic: str, mode: str = CHOREOGRAPHY) -> tuple[Step, ...]:
    """The steps of a participant that a message on `topic` starts."""
    return tuple(s for s in STEPS if s.participant == participant and topic_of(s, mode) == topic and starters(s, mode))


def consumed_topics(participant: str, mode: str = CHOREOGRAPHY) -> tuple[str, ...]:
    """The topics a participant consumes, in the definition's order."""
    topics: list[str] = []
    for s in STEPS:
        t = topic_of(s, mode)
        if s.participant == participant and starters(s, mode) and t not in topics:
            topics.append(t)
    return tuple(topics)


def handled_by(participant: str, topic: str = ORDER_TOPIC, mode: str = CHOREOGRAPHY) -> frozenset[str]:
    """Every message name the participant handles on `topic`, the seed's aliases included."""
    names = {n for s in consumed_steps(participant, topic, mode) for n in starters(s, mode)}
    names |= {alias for alias, canonical in ev.ALIASES.items() if canonical in names}
    return frozenset(names)


def producers_of(event_name: str) -> tuple[Step, ...]:
    return tuple(s for s in STEPS if event_name in s.outcomes)


def commanded_by(event_name: str) -> tuple[Step, ...]:
    """In orchestration mode, the steps whose command Order sends when `event_name` happens: the
    commanded steps it triggers in choreography."""
    name = ev.ALIASES.get(event_name, event_name)
    return tuple(s for s in STEPS if s.command is not None and name in s.triggers)


def routes(
    participant: str, topic: str, narrowed: Iterable[str] | None = None, mode: str = CHOREOGRAPHY
) -> dict[str, Step]:
    """Message name -> the participant's step it starts, for the names it handles on `topic`. A
    setting (`narrowed`) may leave names out; one the definition does not route to this participant
    is refused."""
    allowed = handled_by(participant, topic, mode)
    names = allowed if narrowed is None else frozenset(narrowed)
    unknown = names - allowed
    if unknown:
        raise SagaDefinitionError(
            f"the settings make {participant} handle {sorted(unknown)} on {topic}, which the saga definition"
            f" does not route to it in {mode} (it routes {sorted(allowed)})"
        )
    out: dict[str, Step] = {}
    for step in consumed_steps(participant, topic, mode):
        for n in starters(step, mode):
            if n in out:
                raise SagaDefinitionError(f"{participant}: {n} triggers both {out[n].name} and {step.name}")
            out[n] = step
    return {n: out[ev.ALIASES.get(n, n)] for n in names}


def check_handlers(participant: str, topic: str, handlers: Mapping[str, object]) -> None:
    """Every step of the participant that an event on `topic` triggers (in choreography; in
    orchestration the commanded ones come by command instead) has a handler, and every handler is
    for such a step."""
    wanted = {s.name for s in consumed_steps(participant, topic)}
    given = set(handlers)
    if given != wanted:
        missing, extra = sorted(wanted - given), sorted(given - wanted)
        raise SagaDefinitionError(
            f"{participant} on {topic}: "
            + "; ".join(
                p
                for p in (
                    f"steps without a handler: {missing}" if missing else "",
                    f"handlers without a step: {extra}" if extra else "",
                )
                if p
            )
        )


def check_definition() -> None:
    """The definition is consistent: unique names, compensations that exist, every event some step
    publishes is handled by someone (or ends the story), every trigger is published by a step, and
    only a side channel (a notification step) gathers its events (ADR 54)."""
    if len(BY_NAME) != len(STEPS):
        raise SagaDefinitionError("two steps share a name")
    for s in STEPS:
        for out, _status in s.ends:
            if out not in s.outcomes:
                raise SagaDefinitionError(f"{s.name} ends the saga on {out}, which it does not publish")
        if s.compensation is not None and s.compensation not in BY_NAME:
            raise SagaDefinitionError(f"{s.name} is compensated by {s.compensation}, which is not a step")
        if s.gather_seconds and s.kind != "notification":
            raise SagaDefinitionError(f"{s.name} gathers its events, but the saga waits on a {s.kind} step")
        for t in s.triggers:
            if t not in ev.ALL_NAMES and t not in (*REQUESTS, DEADLINE):
                raise SagaDefinitionError(f"{s.name} is triggered by {t}, which is no event")
            if t in ev.ALL_NAMES and t != ev.USER_REGISTERED and not producers_of(t):
                raise SagaDefinitionError(f"{s.name} is triggered by {t}, which no step publishes")
    for name in ev.SAGA_EVENTS:
        if not any(name in s.handled_events for s in STEPS):
            raise SagaDefinitionError(f"{name} is published but nobody handles it")


# ---- drawings ------------------------------------------------------------------------------------


def table() -> str:
    """The saga as a Markdown table, one row per step."""
    rows = [
        "| step | participant | kind | triggered by | in orchestration, by the command | publishes | compensated by"
        " | order status after | may stay |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in STEPS:
        rows.append(
            f"| `{s.name}` | {s.participant} | {s.kind} | {', '.join(s.triggers)} | {s.command or '-'}"
            f" | {', '.join(s.outcomes) or '-'} | {s.compensation or '-'} | {s.leads_to or '-'}"
            f" | {f'{s.stay_seconds:g} s' if s.stay_seconds else '-'} |"
        )
    return "\n".join(rows)


@dataclass(frozen=True)
class Edge:
    """An arrow of the saga's drawing: `event`, published by step `source`, starts step `target`,
    or ends the saga in the order status `target` (`to_status`; "FAILED or CANCELED" for either),
    or else only moves the order (`target` is `track`)."""

    source: str
    target: str
    event: str
    dashed: bool  # into a compensation or the cancel, or out of one into `track`
    to_status: bool = False


_UNDOING = ("compensation", "cancel")


def edges() -> tuple[Edge, ...]:
    """Every arrow of the order saga, from the steps' outcomes: to each step an outcome triggers
    (Order's `track` and `notify` follow every outcome and are left out), to the order status it
    ends the saga in, or else to `track`."""
    out: list[Edge] = []
    for s in STEPS:
        if s.topic != ORDER_TOPIC:
            continue
        ends = dict(s.ends)
        if s.kind == "lifecycle" and s.leads_to:
            ends[s.outcomes[0]] = s.leads_to
        for name in s.outcomes:
            targets = [t for t in STEPS if name in t.triggers and t.kind not in ("tracking", "notification")]
            out += [Edge(s.name, t.name, name, t.kind in _UNDOING) for t in targets]
            if name in ends:
                out.append(Edge(s.name, ends[name], name, False, to_status=True))
            elif not targets and s.kind != "tracking":
                out.append(Edge(s.name, "track", name, s.kind in _UNDOING))
    return tuple(out)


def consumer_groups(mode: str = CHOREOGRAPHY) -> tuple[str, ...]:
    """The consumer groups that read the saga's topics in `mode`: each participant's, which is its
    name, and Notification's for the contacts (CONTACTS_GROUP). What is at rest is read from these
    (`ops.audit`), not only from the groups the brokers list at that moment: a coordinator that is
    still loading its groups after a node restarts can leave them out."""
    own = [p for p in participants() if consumed_topics(p, mode)]
    contacts = [CONTACTS_GROUP] if USER_TOPIC in consumed_topics(NOTIFICATION, mode) else []
    return (*own, *contacts)


def participants() -> tuple[str, ...]:
    """Every service with a step in the saga, in the order the definition names them."""
    return tuple(dict.fromkeys(s.participant for s in STEPS))


def definition(mode: str = CHOREOGRAPHY) -> dict[str, object]:
    """The saga as data for a client (`GET /api/saga/definition`, the saga map): every step with its
    fields (and what starts it in `mode`: its events, or its command), and every arrow of `edges`."""
    return {
        "mode": mode,
        "steps": [
            {
                "name": s.name,
                "participant": s.participant,
                "kind": s.kind,
                "does": s.does,
                "triggers": list(s.triggers),
                "outcomes": list(s.outcomes),
                "compensation": s.compensation,
                "leadsTo": s.leads_to,
                "staySeconds": s.stay_seconds,
                "ends": [{"event": e, "orderStatus": status} for e, status in s.ends],
                "topic": s.topic,
                "command": s.command,
                "startedBy": list(starters(s, mode)),
            }
            for s in STEPS
        ],
        "edges": [
            {"from": e.source, "to": e.target, "event": e.event, "dashed": e.dashed, "toStatus": e.to_status}
            for e in edges()
        ],
        "participants": list(participants()),
    }


def mermaid() -> str:
    """The saga as a Mermaid flowchart: each step a box (compensations and the cancel as hexagons,
    their arrows dashed), each of `edges` an arrow (`notify`, which follows every outcome as
    `track` does, is not drawn)."""
    lines = ["flowchart LR"]
    for s in STEPS:
        if s.topic != ORDER_TOPIC:
            continue
        label = f'"{s.name}<br/><i>{s.participant}</i>"'
        lines.append(f"  {s.name}{{{{{label}}}}}" if s.kind in _UNDOING else f"  {s.name}[{label}]")
    lines.append("  client([client]) -->|POST /api/orders| create_order")
    lines.append("  client -.->|POST .../cancel| cancel_order")
    lines.append("  admin([admin]) -->|POST .../ship| ship")
    lines.append("  admin -->|POST .../deliver| deliver")
    lines.append("  admin -.->|POST .../refund-retry| retry_refund")
    lines.append("  clock([deadline]) -.-> time_out")
    for e in edges():
        if e.to_status:
            node = re.sub(r"\W+", "_", e.target)
            lines.append(f'  {e.source} -->|{e.event}| {node}(("{e.target}"))')
        else:
            lines.append(f"  {e.source} {'-.->' if e.dashed else '-->'}|{e.event}| {e.target}")
    return "\n".join(lines)
