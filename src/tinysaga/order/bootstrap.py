"""Order's composition root: its repositories, clients and steps (the requests among them), built
when the app starts (nothing at import), its consumer (`track`), and its background tasks (the live
status listener, the sweeper `time_out`, the dead-letter collector)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from tinysaga.order.adapters import CatalogueClient, RecordsClient, StatusFanout, WalletClient
from tinysaga.order.handlers import (
    Begin,
    CancelOrder,
    CreateOrder,
    DeliverOrder,
    InFlightBound,
    ReplayDeadLetters,
    RetryRefund,
    SagaMap,
    ShipOrder,
    StuckSagas,
    TimeOut,
    handlers,
)
from tinysaga.order.orchestrator import Orchestrator
from tinysaga.order.repository import DeadLetterRepository, OrderRepository
from tinysaga.platform.service import Runtime, create_service_app, runtime
from tinysaga.platform.settings import Settings
from tinysaga.platform.uow import PgUnitOfWork


@dataclass
class OrderDeps:
    """What Order's routes use."""

    orders: OrderRepository  # reads, on the pool
    dead_letters: DeadLetterRepository  # reads, on the pool
    create_order: CreateOrder
    cancel_order: CancelOrder
    ship_order: ShipOrder
    deliver_order: DeliverOrder
    fanout: StatusFanout
    catalogue: CatalogueClient
    wallets: WalletClient
    currency: str
    begin: Begin  # a transaction of its own -> its unit of work
    stuck: StuckSagas
    retry_refund: RetryRefund
    replay_dead_letters: ReplayDeadLetters
    saga_map: SagaMap
    saga_mode: str = "choreography"  # how the saga runs (TINYSAGA_SAGA_MODE)


def deps(request: Any) -> OrderDeps:
    """Order's dependencies, from inside a route."""
    d = runtime(request).deps
    assert isinstance(d, OrderDeps)
    return d


def setup(rt: Runtime, collector: Callable[[Settings, Begin], Callable[[], Awaitable[None]]]) -> None:
    """Build Order's dependencies on the started runtime; `collector` makes the dead-letter task."""
    settings = rt.settings

    def begin() -> Any:
        return PgUnitOfWork.begin(rt.pool, settings.topic)

    def writer() -> Any:
        return OrderRepository.outside_transaction(rt.pool, settings.topic)

    orders = OrderRepository(rt.pool)
    dead_letters = DeadLetterRepository(rt.pool)
    catalogue = CatalogueClient(rt)
    fanout = StatusFanout()
    orchestrator = Orchestrator.of(settings)  # sends no command in choreography
    rt.deps = OrderDeps(
        saga_mode=settings.saga_mode,
        orders=orders,
        dead_letters=dead_letters,
        create_order=CreateOrder(
            reader=orders,
            writer=writer,
            catalogue=catalogue,
            bound=InFlightBound(
                orders.in_flight,
                settings.max_sagas_in_flight,
                max_wait=settings.max_saga_seconds,
                wait_from=settings.max_saga_seconds_from,
                retry_after=settings.overloaded_retry_after_seconds,
            ),
            currency=settings.currency,
            timeout_seconds=settings.saga_timeout_seconds,
            orchestrator=orchestrator,
        ),
        cancel_order=CancelOrder(reader=orders, writer=writer, orchestrator=orchestrator),
        ship_order=ShipOrder(reader=orders, writer=writer),
        deliver_order=DeliverOrder(reader=orders, writer=writer),
        fanout=fanout,
        catalogue=catalogue,
        wallets=WalletClient(rt),
        currency=settings.currency,
        begin=begin,
        stuck=StuckSagas(reader=orders, timeout_seconds=settings.saga_timeout_seconds),
        retry_refund=RetryRefund(reader=orders, writer=writer, orchestrator=orchestrator),
        replay_dead_letters=ReplayDeadLetters(reader=dead_letters, begin=begin, repository=DeadLetterRepository.of),
        saga_map=SagaMap(reader=orders, fetch=RecordsClient(rt)),
    )
    rt.scrape_hooks.append(rt.deps.stuck.refresh_gauges)
    rt.consume(handlers(OrderRepository.of, orchestrator=orchestrator))
    sweeper = TimeOut(
        begin=begin,
        repository=OrderRepository.of,
        interval_seconds=settings.sweeper_interval_seconds,
        orchestrator=orchestrator,
    )

    async def live_streams() -> None:
        await fanout.run(orders.versions)

    rt.tasks += [live_streams, sweeper.saga_sweeper, collector(settings, begin)]


def create_app(settings: Settings | None = None) -> FastAPI:
    from tinysaga.order import api, dead_letters  # imported here: their routes import `deps` above

    return create_service_app(
        "order",
        lambda rt: setup(rt, dead_letters.collector),
        routers=[api.router, dead_letters.router],
        settings=settings,
        middleware=[api.TurnAwayEarly],
    )
