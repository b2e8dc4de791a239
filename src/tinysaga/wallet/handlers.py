"""Wallet's side of the saga: the `open_wallet` step (USER_REGISTERED on the user topic)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from tinysaga.contracts import events as ev
from tinysaga.platform.consumer import Handler, HandlerContext
from tinysaga.platform.uow import UnitOfWork


class Wallets(Protocol):
    """What the handlers need of the wallets table (`repository.WalletRepository`, or a fake)."""

    async def open(self, user_id: str, currency: str) -> None: ...


class WalletHandlers:
    """The step handlers on the dependencies given: `repo` the repository of a unit of work, and the
    currency a new wallet holds."""

    def __init__(self, *, repo: Callable[[UnitOfWork], Wallets], currency: str) -> None:
        self.repo = repo
        self.currency = currency

    def by_step(self) -> dict[str, Handler]:
        return {"open_wallet": self.open_wallet}

    async def open_wallet(self, event: ev.Event, ctx: HandlerContext) -> None:
        """USER_REGISTERED: open the user's wallet, empty (a charge that came first opened it already)."""
        user = ev.typed_as(event, ev.UserRegistered)
        assert user.userId is not None
        async with ctx.transaction() as uow:
            await self.repo(uow).open(user.userId, self.currency)
