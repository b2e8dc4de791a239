"""Channels. Email goes over SMTP (by default to the local sink `tiny-saga up` starts); SMS goes
through a provider interface whose default adapter records the message in the database."""

from __future__ import annotations

import base64
import socket
import uuid
from email.header import Header
from email.utils import formatdate
from typing import Protocol

import asyncpg

from tinysaga.notification.repository import NotificationRepository
from tinysaga.notification.smtp_client import SmtpConnection, SmtpError
from tinysaga.platform.settings import Settings


class ChannelDown(Exception):
    """The channel could not take the message now; it is retried later."""


class Undeliverable(Exception):
    """The message can never be sent as it is (e.g. the address is not one address); skipped."""


class EmailSender:
    """Sends over one SMTP connection, opened at the first mail and kept while mail keeps coming
    (the deliverer calls `close()` once it has been quiet for a while), not one per mail; each mail
    in as few round trips as the server allows (`smtp_client`, ADR 65)."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.smtp: SmtpConnection | None = None
        self.domain = settings.smtp_sender.rpartition("@")[2] or socket.gethostname()

    def compose(self, to: str, subject: str, body: str) -> bytes:
        """A plain-text message (RFC 5322), written out directly: `email.message.EmailMessage`
        parses and re-folds every header and was most of the CPU a notification cost."""
        if any(c in to for c in "\r\n<>,;") or not to.strip():
            raise Undeliverable(f"not one email address: {to!r}")
        text = body.replace("\r\n", "\n").replace("\n", "\r\n")
        if text.isascii() and all(len(line) <= 998 for line in text.split("\r\n")):
            encoding, payload = "7bit", text
        else:
            encoding = "base64"
            payload = base64.encodebytes(text.encode("utf-8")).decode("ascii").replace("\n", "\r\n")
        subj = subject if subject.isascii() else Header(subject, "utf-8").encode()
        head = (
            f"From: {self.s.smtp_sender}\r\n"
            f"To: {to}\r\n"
            f"Subject: {subj}\r\n"
            f"Date: {formatdate(localtime=False, usegmt=True)}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@{self.domain}>\r\n"
            "MIME-Version: 1.0\r\n"
            'Content-Type: text/plain; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: {encoding}\r\n\r\n"
        )
        return (head + payload).encode("utf-8")

    async def send(self, to: str, subject: str, body: str) -> None:
        msg = self.compose(to, subject, body)
        # A connection kept from an earlier round may have been closed by the server meanwhile:
        # then the mail is tried once more on a new one before the channel counts as down.
        for last_try in (self.smtp is None, True):
            try:
                if self.smtp is None:
                    self.smtp = await SmtpConnection.open(
                        self.s.smtp_host, self.s.effective_smtp_port, self.domain, timeout=5
                    )
                await self.smtp.send(self.s.smtp_sender, to, msg)
                return
            except (SmtpError, OSError) as e:
                self._drop()  # after a refusal or a broken exchange the session is not used again
                if last_try:
                    raise ChannelDown(f"smtp: {e}") from e

    def _drop(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is not None:
            smtp.close()

    async def close(self) -> None:
        """End the session politely (QUIT), when the channel has been quiet for a while."""
        smtp, self.smtp = self.smtp, None
        if smtp is not None:
            try:
                await smtp.quit()
            except (SmtpError, OSError):
                pass


class SmsProvider(Protocol):
    """Sends an SMS; `conn` is the delivery round's connection (in its transaction)."""

    async def send(self, conn: asyncpg.Connection, notification_id: object, to: str, body: str) -> None: ...


class RecordingSms:
    """Records each SMS (the default: a real provider is an adapter with the same method)."""

    async def send(self, conn: asyncpg.Connection, notification_id: object, to: str, body: str) -> None:
        await NotificationRepository(conn).record_sms(notification_id, to, body)


def sms_provider(settings: Settings) -> SmsProvider:
    if settings.sms_provider == "record":
        return RecordingSms()
    raise RuntimeError(f"unknown SMS provider {settings.sms_provider!r} (TINYSAGA_SMS_PROVIDER)")
