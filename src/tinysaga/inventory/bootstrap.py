from tinysaga.inventory.api import handlers, router
from tinysaga.platform.service import Runtime, create_service_app


def setup(rt: Runtime) -> None:
    rt.consume(handlers(rt), rt.settings.handled(rt.settings.inventory_events), batch=True)


app = create_service_app("inventory", setup, routers=[router])
