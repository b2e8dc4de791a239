from tinysaga.platform.service import Runtime, create_service_app
from tinysaga.wallet.api import handlers, router


def setup(rt: Runtime) -> None:
    rt.consume(handlers(rt), rt.settings.handled(rt.settings.wallet_user_events), rt.settings.user_topic)


app = create_service_app("wallet", setup, routers=[router])
