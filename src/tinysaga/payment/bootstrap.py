from fastapi import APIRouter

from tinysaga.payment.adapters import WalletClient
from tinysaga.payment.handlers import handlers, voider
from tinysaga.platform.service import Runtime, create_service_app


def setup(rt: Runtime) -> None:
    wallet = WalletClient(rt.settings, rt.http)
    rt.consume(handlers(rt, wallet), rt.settings.handled(rt.settings.payment_events))
    rt.tasks.append(voider(rt, wallet))


# Payment has no public routes: it is a consumer with health endpoints.
app = create_service_app("payment", setup, routers=[APIRouter()])
