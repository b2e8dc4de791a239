from fastapi import APIRouter

from tinysaga.contracts.events import ORDER_INITIATED
from tinysaga.payment.adapters import WalletClient
from tinysaga.payment.handlers import charge_batch, handlers, voider
from tinysaga.platform.service import Runtime, create_service_app


def setup(rt: Runtime) -> None:
    wallet = WalletClient(rt.settings, rt.http)
    # Charges are batched (one wallet call and one transaction for the orders of a poll); refunds,
    # rare, go one by one.
    rt.consume(
        handlers(rt, wallet),
        rt.settings.handled(rt.settings.payment_events),
        batch=frozenset({ORDER_INITIATED}),
        prepare=charge_batch(rt, wallet),
    )
    rt.tasks.append(voider(rt, wallet))


# Payment has no public routes: it is a consumer with health endpoints.
app = create_service_app("payment", setup, routers=[APIRouter()])
