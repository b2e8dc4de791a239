from tinysaga.contracts.events import PAYMENT_DONE
from tinysaga.inventory.api import handlers, router
from tinysaga.platform.service import Runtime, create_service_app


def setup(rt: Runtime) -> None:
    # Reservations are batched; a timeout's release asks Order first (over HTTP, so not inside a
    # batch's transaction) and goes one by one, in its place in the partition's order.
    rt.consume(handlers(rt), rt.settings.handled(rt.settings.inventory_events), batch=frozenset({PAYMENT_DONE}))


app = create_service_app("inventory", setup, routers=[router])
