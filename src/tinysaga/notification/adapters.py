"""Channels. Email goes over SMTP (by default to the local sink `tiny-saga up` starts); SMS goes
through a provider interface whose default adapter records the message in the database."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Protocol

import aiosmtplib
import asyncpg

from tinysaga.platform.settings import Settings


class ChannelDown(Exception):
    """The channel could not take the message now; it is retried later."""


class EmailSender:
    """Sends over one SMTP connection per delivery round (opened at the first mail, closed by
    `close()`), not one connection per mail."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.smtp: aiosmtplib.SMTP | None = None

    async def send(self, to: str, subject: str, body: str) -> None:
        msg = EmailMessage()
        msg["From"] = self.s.smtp_sender
        msg["To"] = to
        msg["Subject"] = subject
        msg.set_content(body)
        try:
            if self.smtp is None:
                self.smtp = aiosmtplib.SMTP(hostname=self.s.smtp_host, port=self.s.effective_smtp_port, timeout=5)
                await self.smtp.connect()
            await self.smtp.send_message(msg)
        except (aiosmtplib.SMTPException, OSError) as e:
            await self.close()
            raise ChannelDown(f"smtp: {e}") from e

    async def close(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is not None:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()


class SmsProvider(Protocol):
    async def send(self, conn: asyncpg.Connection, notification_id: object, to: str, body: str) -> None: ...


class RecordingSms:
    """Records each SMS (the default: a real provider is an adapter with the same method)."""

    async def send(self, conn: asyncpg.Connection, notification_id: object, to: str, body: str) -> None:
        await conn.execute(
            "INSERT INTO sms_messages(notification_id, to_number, body) VALUES ($1,$2,$3) ON CONFLICT DO NOTHING",
            notification_id,
            to,
            body,
        )


def sms_provider(settings: Settings) -> SmsProvider:
    if settings.sms_provider == "record":
        return RecordingSms()
    raise RuntimeError(f"unknown SMS provider {settings.sms_provider!r} (TINYSAGA_SMS_PROVIDER)")
