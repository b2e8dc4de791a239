"""Wallet's step handler (`open_wallet`, USER_REGISTERED on the user topic) against a fake
repository and the FakeUnitOfWork."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal

import pytest

from tests.unit.fakes import FakeUnitOfWork, deliver
from tinysaga.contracts import events as ev
from tinysaga.contracts import saga
from tinysaga.wallet.handlers import WalletHandlers


@dataclass
class FakeWallets:
    """The wallets table in a dict (the named methods of `WalletRepository` the handlers use)."""

    wallets: dict[str, tuple[Decimal, str]] = field(default_factory=dict)
    opened: int = 0

    async def open(self, user_id: str, currency: str) -> None:
        """Open the user's wallet, empty; nothing if it is open."""
        if user_id not in self.wallets:
            self.wallets[user_id] = (Decimal(0), currency)
            self.opened += 1


def registered(user_id: str = "u1") -> ev.Event:
    return ev.make_event(ev.USER_REGISTERED, correlation_id=user_id, userId=user_id, email="a@b.c", name="Ann")


def world() -> tuple[FakeWallets, FakeUnitOfWork, dict[str, object]]:
    table, uow = FakeWallets(), FakeUnitOfWork(topic="user-topic")
    return table, uow, WalletHandlers(repo=lambda _uow: table, currency="USD").by_step()


async def test_a_registered_user_gets_an_empty_wallet() -> None:
    table, uow, handlers = world()
    e = registered()
    assert await deliver(saga.WALLET, handlers, e, uow, topic=saga.USER_TOPIC)
    assert table.wallets == {"u1": (Decimal(0), "USD")}
    assert e.eventId in uow.handled and not uow.published


async def test_a_redelivered_or_repeated_registration_opens_one_wallet() -> None:
    table, uow, handlers = world()
    e = registered()
    await deliver(saga.WALLET, handlers, e, uow, topic=saga.USER_TOPIC)
    assert not await deliver(saga.WALLET, handlers, e, uow, topic=saga.USER_TOPIC)  # same eventId
    again = e.model_copy(update={"eventId": uuid.uuid4()})
    assert await deliver(saga.WALLET, handlers, again, uow, topic=saga.USER_TOPIC)
    assert table.opened == 1


async def test_a_wallet_opened_by_a_charge_first_keeps_its_balance() -> None:
    table, uow, handlers = world()
    table.wallets["u1"] = (Decimal("5.00"), "USD")
    await deliver(saga.WALLET, handlers, registered(), uow, topic=saga.USER_TOPIC)
    assert table.wallets["u1"] == (Decimal("5.00"), "USD")


@pytest.mark.parametrize(
    "event",
    [
        ev.Event(eventName=ev.USER_REGISTERED, correlationId="c", email="a@b.c", name="Ann"),
        ev.Event(eventName=ev.USER_REGISTERED, correlationId="c", userId="u1"),
    ],
)
async def test_a_registration_without_what_it_needs_is_refused(event: ev.Event) -> None:
    table, uow, handlers = world()
    with pytest.raises(ValueError, match="without a valid"):
        await deliver(saga.WALLET, handlers, event, uow, topic=saga.USER_TOPIC)
    assert not table.wallets and not uow.handled


async def test_wallet_handles_nothing_on_the_order_topic() -> None:
    assert saga.handled_by(saga.WALLET, saga.ORDER_TOPIC) == frozenset()
    assert saga.handled_by(saga.WALLET, saga.USER_TOPIC) == {ev.USER_REGISTERED}
