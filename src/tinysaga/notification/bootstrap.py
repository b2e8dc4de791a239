"""Notification's wiring: the repository, the channels, the handlers by step (one consumer per
topic), the deliverer task, the routes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from tinysaga.contracts import saga
from tinysaga.notification.adapters import EmailSender, sms_provider
from tinysaga.notification.api import router
from tinysaga.notification.handlers import Deliverer, NotificationHandlers
from tinysaga.notification.repository import NotificationRepository
from tinysaga.platform.service import Runtime, create_service_app
from tinysaga.platform.settings import Settings


@dataclass(frozen=True)
class NotificationDeps:
    """What the routes use (`api.deps`)."""

    notifications: NotificationRepository  # on the pool
    mail_folder: Path  # where the local SMTP sink keeps the mails


def setup(rt: Runtime) -> None:
    s = rt.settings
    rt.deps = NotificationDeps(NotificationRepository(rt.pool), s.home / "mail")
    deliverer = Deliverer(NotificationRepository(rt.pool), EmailSender(s), sms_provider(s))
    hs = NotificationHandlers(
        NotificationRepository.of, added=deliverer.wake, contacts=NotificationRepository(rt.pool).contacts
    )
    rt.consume(hs.on_order_topic(), prepare=hs.prepare)
    rt.consume(hs.on_user_topic(), topic=saga.USER_TOPIC, group=saga.CONTACTS_GROUP)
    rt.tasks.append(deliverer.notification_deliverer)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app("notification", setup, routers=[router], settings=settings)
