from tinysaga.notification.adapters import EmailSender, sms_provider
from tinysaga.notification.api import deliverer, handlers, router
from tinysaga.platform.service import Runtime, create_service_app


def setup(rt: Runtime) -> None:
    s = rt.settings
    hs = handlers(rt)
    rt.consume(hs, s.handled(s.notification_events), batch=True)
    rt.consume(hs, frozenset({"USER_REGISTERED"}), s.user_topic, group="notification-contacts")
    rt.tasks.append(deliverer(rt, EmailSender(s), sms_provider(s)))


app = create_service_app("notification", setup, routers=[router])
