from tinysaga.order import dead_letters
from tinysaga.order.api import StatusFanout, router
from tinysaga.order.handlers import handlers, sweeper
from tinysaga.platform.service import Runtime, create_service_app


def setup(rt: Runtime) -> None:
    rt.consume(handlers(rt), rt.settings.handled(rt.settings.order_events), batch=True)
    fanout = StatusFanout()
    rt.state["fanout"] = fanout

    async def status_listener() -> None:
        await fanout.run(rt)

    rt.tasks += [status_listener, sweeper(rt), dead_letters.collector(rt)]


app = create_service_app("order", setup, routers=[router, dead_letters.router])
