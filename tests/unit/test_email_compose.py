"""The email the notification service writes out by hand must read back as the message it meant."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest

from tinysaga.notification.adapters import EmailSender, Undeliverable
from tinysaga.platform.settings import Settings


def parse(raw: bytes):  # noqa: ANN201 - an EmailMessage
    return message_from_bytes(raw, policy=policy.default)


@pytest.fixture
def sender() -> EmailSender:
    return EmailSender(Settings(smtp_sender="shop@tinysaga.local"))


def test_ascii_message_reads_back_with_its_headers(sender: EmailSender) -> None:
    raw = sender.compose("ann@example.com", "Tiny-Saga: payment done", "We took 2.00 USD.\nThanks.")
    assert b"\r\n\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    msg = parse(raw)
    assert msg["From"] == "shop@tinysaga.local"
    assert msg["To"] == "ann@example.com"
    assert msg["Subject"] == "Tiny-Saga: payment done"
    assert msg["Message-ID"].endswith("@tinysaga.local>")
    assert msg["Date"]
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content().replace("\r\n", "\n") == "We took 2.00 USD.\nThanks."
    assert not msg.defects


def test_non_ascii_subject_and_body_are_encoded(sender: EmailSender) -> None:
    raw = sender.compose("zoë@example.com", "Tiny-Saga: café", "Ваш заказ готов — 2,00 €")
    assert raw.split(b"\r\n\r\n", 1)[1].isascii()
    msg = parse(raw)
    assert msg["Subject"] == "Tiny-Saga: café"
    assert msg.get_content().strip() == "Ваш заказ готов — 2,00 €"
    assert msg["Content-Transfer-Encoding"] == "base64"


def test_two_message_ids_differ(sender: EmailSender) -> None:
    a, b = (parse(sender.compose("a@example.com", "s", "b"))["Message-ID"] for _ in range(2))
    assert a != b


@pytest.mark.parametrize(
    "to", ["", "  ", "a@example.com\r\nBcc: x@example.com", "a@example.com, b@example.com", "<a@example.com>"]
)
def test_an_address_that_is_not_one_address_is_undeliverable(sender: EmailSender, to: str) -> None:
    with pytest.raises(Undeliverable):
        sender.compose(to, "s", "b")
