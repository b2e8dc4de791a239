"""Notification's steps of the saga: `notify` (on the order topic: a notification per (order, type)
and channel) and `remember_contact` (on the user topic); and the deliverer, which sends each
notification with retries."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from tinysaga.contracts import events as ev
from tinysaga.notification.adapters import ChannelDown, EmailSender, SmsProvider, Undeliverable
from tinysaga.notification.domain import (
    EMAIL,
    SUPERSEDED_BY,
    Action,
    Contact,
    Wanted,
    delivery_for,
    notification_for,
    skipped_when_added,
    subject_for,
)
from tinysaga.notification.repository import NotificationRepository
from tinysaga.platform.consumer import Handler, HandlerContext
from tinysaga.platform.retry import NOTIFICATION, pause
from tinysaga.platform.uow import UnitOfWork

log = logging.getLogger("tinysaga.notification")
DELIVERY_BATCH = 50


class Notifications(Protocol):
    """What the handlers need of the repository (`NotificationRepository` on a unit of work)."""

    async def add_notifications(self, wanted: Sequence[Wanted]) -> bool: ...
    async def contacts(self, user_ids: Sequence[str]) -> dict[str, Contact]: ...
    async def remember_contact(
        self, user_id: str | None, email: str | None, phone: str | None, name: str | None
    ) -> None: ...


@dataclass(frozen=True)
class Looked:
    """What `prepare` found of an event's user: the contact, None when none is known yet."""

    contact: Contact | None


class NotificationHandlers:
    def __init__(
        self,
        repository: Callable[[Any], Notifications],
        added: Callable[[], None] = lambda: None,
        contacts: Callable[[Sequence[str]], Awaitable[dict[str, Contact]]] | None = None,
    ) -> None:
        self.repository = repository  # the repository of a unit of work
        self.added = added  # called once notifications added are committed (wakes the deliverer)
        self.contacts = contacts  # on the pool, for `prepare`

    async def prepare(self, events: list[ev.Event]) -> dict[Any, Looked]:
        """The contacts of a poll's users, by eventId, read in one query before its transaction (the
        consumer's `prepare`), so that `notify` does not read them one by one."""
        users = sorted({e.userId for e in events if e.userId})
        if not users or self.contacts is None:
            return {}
        found = await self.contacts(users)
        return {e.eventId: Looked(found.get(e.userId)) for e in events if e.userId}

    WANTED = "notify: wanted"  # ctx.memo's key: the notifications the events of a batch want, in order

    def on_order_topic(self) -> dict[str, Handler]:
        return {"notify": self.notify}

    def on_user_topic(self) -> dict[str, Handler]:
        return {"remember_contact": self.remember_contact}

    async def notify(self, event: ev.Event, ctx: HandlerContext) -> None:
        """Both channels' notifications of an (order, type), once, each skipped at once when its
        user has no address on that channel; an event that tells the user nothing (or names no
        order or user) is recorded as handled and adds nothing. The rows of a batch's events are
        added together, by one statement before its commit (ADR 70)."""
        what = notification_for(event)
        async with ctx.transaction() as uow:
            if what is None or not event.orderId or not event.userId:
                return
            kind, message = what
            repo = self.repository(uow)
            if isinstance(ctx.prepared, Looked):
                contact = ctx.prepared.contact
            else:  # not prepared (it failed): read here
                contact = (await repo.contacts([event.userId])).get(event.userId)
            wanted: list[Wanted] = ctx.memo.setdefault(self.WANTED, [])
            if not wanted:
                uow.before_commit(self.WANTED, lambda: self._add(repo, uow, wanted))
            skipped = skipped_when_added(contact)
            wanted.append(Wanted(event.userId, event.orderId, kind, message, SUPERSEDED_BY.get(kind), skipped))

    async def _add(self, repo: Notifications, uow: UnitOfWork, wanted: list[Wanted]) -> None:
        if await repo.add_notifications(wanted):  # something for the deliverer
            uow.after_commit(self.added)

    async def remember_contact(self, event: ev.Event, ctx: HandlerContext) -> None:
        """Keep (or replace) the user's email, phone and name."""
        if not event.userId:
            raise ValueError(f"{event.eventName} without a valid userId")
        async with ctx.transaction() as uow:
            await self.repository(uow).remember_contact(event.userId, event.email, event.phone, event.name)


def retry_pause(attempts: int) -> float:
    """Seconds before the next try of a notification tried `attempts` times: 0.5, 1, 2, ... up to 60."""
    return pause(NOTIFICATION, attempts + 1)


class Round(NamedTuple):
    """What a delivery round did: the rows it looked at, and the seconds until the next pending
    notification is due (<= 0: now; None: none is pending)."""

    looked: int
    next_due: float | None


class Deliverer:
    """Sends the notifications that are due: woken by this process's handlers once what they added
    is committed (`wake`), when the next retry falls due, and at least every `IDLE_LOOK` seconds
    (for rows another replica added, ADR 53). Once woken it gathers for `GATHER` seconds, so that
    what is committed meanwhile (an order's payment and its placement, a few orders under load) is
    sent in the same round: one transaction instead of one per event."""

    IDLE_LOOK = 5.0
    GATHER = 0.1

    def __init__(
        self,
        repository: NotificationRepository,  # on the pool
        email: EmailSender,
        sms: SmsProvider,
    ) -> None:
        self.repository = repository
        self.email = email
        self.sms = sms
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """New notifications are committed: deliver them, once gathered."""
        self._wake.set()

    async def deliver_due(self) -> Round:
        """One round: send what is due. Each row stands alone: a channel that is down is retried
        with backoff and never holds up the other channel. When the next is due is read in the
        round's transaction (no transaction of its own)."""
        async with self.repository.transaction() as repo:
            rows = await repo.lock_due(DELIVERY_BATCH)
            sent: list[object] = []
            skipped: list[tuple[object, str]] = []
            for r in rows:
                plan = delivery_for(r["channel"], r["known"], r["email"], r["phone"], r["attempts"])
                if plan.action is Action.RETRY:
                    await repo.retry_later(r["notification_id"], plan.reason, retry_pause(r["attempts"]))
                    continue
                if plan.action is Action.SKIP:
                    skipped.append((r["notification_id"], plan.reason))
                    continue
                assert plan.to is not None
                try:
                    if r["channel"] == EMAIL:
                        await self.email.send(plan.to, subject_for(r["type"]), r["message"])
                    else:
                        await self.sms.send(repo.db, r["notification_id"], plan.to, r["message"])
                except ChannelDown as e:
                    await repo.retry_later(r["notification_id"], str(e), retry_pause(r["attempts"]))
                    continue
                except Undeliverable as e:
                    skipped.append((r["notification_id"], str(e)[:500]))
                    continue
                sent.append(r["notification_id"])
            if sent:
                await repo.mark_sent(sent)
            if skipped:
                await repo.mark_skipped(skipped)
            next_due = await repo.seconds_to_next_due()
        return Round(len(rows), next_due)

    async def notification_deliverer(self) -> None:
        """The background task."""
        wake = self._wake
        try:
            while True:
                wake.clear()
                done = await self.deliver_due()
                while done.looked == DELIVERY_BATCH:
                    done = await self.deliver_due()
                # sleep until new notifications are committed here or the next retry falls due
                due = done.next_due
                look = self.IDLE_LOOK if due is None else min(self.IDLE_LOOK, max(0.05, due))
                try:
                    await asyncio.wait_for(wake.wait(), look)
                    await asyncio.sleep(self.GATHER)
                except TimeoutError:
                    # Quiet for a while: let the SMTP connection go. While mail keeps coming it is
                    # kept open across rounds (a new connection per round was most of the cost of
                    # an email at a steady trickle, on both ends).
                    await self.email.close()
        finally:
            await self.email.close()
