"""Payment's composition: the wallet and order clients, the payments repository, the step handlers
(charges batched: one wallet call and one transaction for the orders of a poll; refunds, rare, one
by one) and the voider. Payment has no public routes: a consumer with health endpoints and the internal records of an
order."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI

from tinysaga.contracts import saga
from tinysaga.payment.adapters import OrderClient, WalletClient
from tinysaga.payment.api import router
from tinysaga.payment.handlers import PaymentHandlers
from tinysaga.payment.repository import PaymentRepository
from tinysaga.platform.service import Runtime, create_service_app
from tinysaga.platform.settings import Settings
from tinysaga.platform.uow import PgUnitOfWork


@dataclass(frozen=True)
class PaymentDeps:
    wallet: WalletClient
    orders: OrderClient
    handlers: PaymentHandlers
    payments: PaymentRepository  # reads, on the pool (the routes)


def build(rt: Runtime) -> PaymentDeps:
    wallet, orders = WalletClient(rt.settings, rt.http), OrderClient(rt)
    topic = rt.topic_name(saga.ORDER_TOPIC)
    reader = PaymentRepository(rt.pool)
    handlers = PaymentHandlers(
        repo=PaymentRepository.of,
        reader=reader,
        begin=lambda: PgUnitOfWork.begin(rt.pool, topic),
        wallet=wallet,
        orders=orders,
        currency=rt.settings.currency,
    )
    return PaymentDeps(wallet, orders, handlers, reader)


def setup(rt: Runtime) -> None:
    deps = build(rt)
    rt.deps = deps
    rt.consume(deps.handlers.by_step(), prepare=deps.handlers.prepare)
    rt.tasks.append(deps.handlers.voider())


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app("payment", setup, routers=[router], settings=settings)
