"""The email channel's SMTP client against the project's SMTP sink on a real loopback socket: the
whole mail in one write when the server offers PIPELINING and CHUNKING, MAIL/RCPT/DATA together
when it offers PIPELINING only, one command at a time when it offers neither (or knows no EHLO);
the message arrives as written either way. A refusal, a silent server or a closed connection
raises SmtpError; EmailSender replaces a connection the server closed, and reports a server that
is down as ChannelDown."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.unit.smtp_support import stop_sinks
from tinysaga.notification.adapters import ChannelDown, EmailSender
from tinysaga.notification.smtp_client import SmtpConnection, SmtpError, dot_stuffed
from tinysaga.notification.smtp_sink import EXTENSIONS, Mailbox, Session
from tinysaga.platform.settings import Settings

MESSAGES = [
    b"Subject: placed\r\n\r\nYour order is placed.\r\n",
    b"Subject: dots\r\n\r\n.a line that starts with a dot\r\n..two\r\n.\r\nlast\r\n",
    b"Subject: no line end\r\n\r\nthe last line has no CRLF",
]


class Recording(Session):
    """The sink, recording the command verbs of each read (what came together), and refusing
    RCPT to refused@x.y and, with `no_ehlo`, EHLO."""

    reads: list[list[str]]
    no_ehlo = False

    def data_received(self, data: bytes) -> None:
        self.reads.append([])
        super().data_received(data)

    def command(self, line: str) -> None:
        verb = line.partition(" ")[0].upper()
        if self.reads:
            self.reads[-1].append(verb)
        if verb == "EHLO" and self.no_ehlo:
            self.reply("502 Error: command not implemented")
        elif verb == "RCPT" and "refused@" in line:
            self.reply("550 No such user")
        else:
            super().command(line)


@pytest.fixture
async def start_sink(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    servers: list[asyncio.AbstractServer] = []
    sessions: set[Session] = set()

    async def start(extensions: tuple[str, ...] = EXTENSIONS, no_ehlo: bool = False) -> tuple[int, Path, list]:
        folder = tmp_path / f"mail{len(servers)}"
        mailbox, reads = Mailbox(folder), []

        def session() -> Recording:
            s = Recording(mailbox, sessions, extensions)
            s.reads, s.no_ehlo = reads, no_ehlo
            return s

        server = await asyncio.get_running_loop().create_server(session, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1], folder, reads

    yield start
    stop_sinks(servers, sessions)


def kept(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.glob("*.eml"))]


def as_delivered(message: bytes) -> bytes:
    return message if message.endswith(b"\r\n") else message + b"\r\n"


@pytest.mark.parametrize(
    ("extensions", "no_ehlo", "mail_reads"),
    [
        (EXTENSIONS, False, [["MAIL", "RCPT", "BDAT"]]),  # one round trip
        (("PIPELINING", "8BITMIME"), False, [["MAIL", "RCPT", "DATA"], []]),  # two: then the message
        (("8BITMIME",), False, [["MAIL"], ["RCPT"], ["DATA"], []]),  # four
        (EXTENSIONS, True, [["MAIL"], ["RCPT"], ["DATA"], []]),  # HELO: no extensions
    ],
)
async def test_each_mail_in_as_few_round_trips_as_the_server_allows(
    start_sink: Callable, extensions: tuple[str, ...], no_ehlo: bool, mail_reads: list[list[str]]
) -> None:
    port, folder, reads = await start_sink(extensions, no_ehlo)
    conn = await SmtpConnection.open("127.0.0.1", port, "tinysaga.local")
    try:
        for message in MESSAGES:
            before = len(reads)
            await conn.send("shop@tinysaga.local", "u@x.y", message)
            assert reads[before:] == mail_reads
    finally:
        await conn.quit()
    assert kept(folder) == [as_delivered(m) for m in MESSAGES]


async def test_a_refused_recipient_raises_and_the_group_is_read_to_its_end(start_sink: Callable) -> None:
    for extensions in (EXTENSIONS, ("PIPELINING",), ()):
        port, folder, _ = await start_sink(extensions)
        conn = await SmtpConnection.open("127.0.0.1", port, "tinysaga.local")
        with pytest.raises(SmtpError) as refused:
            await conn.send("shop@tinysaga.local", "refused@x.y", MESSAGES[0])
        assert (refused.value.step, refused.value.code) == ("RCPT", 550)
        # nothing of the refused mail is left to read: the next one goes through on the same session
        await conn.send("shop@tinysaga.local", "u@x.y", MESSAGES[1])
        await conn.quit()
        assert kept(folder) == [MESSAGES[1]]


async def test_a_silent_or_closing_server_raises() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async def greets_then_closes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hi\r\n")
        await reader.readline()
        writer.close()

    for handler, text in ((silent, "no reply within"), (greets_then_closes, "connection closed")):
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(SmtpError, match=text):
            await SmtpConnection.open("127.0.0.1", port, "c", timeout=0.3)
        server.close()


async def test_not_an_smtp_reply_raises() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n")

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    with pytest.raises(SmtpError, match="not an SMTP reply"):
        await SmtpConnection.open("127.0.0.1", server.sockets[0].getsockname()[1], "c", timeout=1)
    server.close()


def test_dot_stuffing() -> None:
    assert dot_stuffed(b".a\r\nb\r\n.\r\n..c") == b"..a\r\nb\r\n..\r\n...c\r\n"
    assert dot_stuffed(b"") == b""


async def test_email_sender_replaces_a_closed_connection_and_reports_a_down_server(start_sink: Callable) -> None:
    port, folder, _ = await start_sink()
    sender = EmailSender(Settings(smtp_host="127.0.0.1", smtp_port=port))
    await sender.send("u@x.y", "first", "one")
    assert sender.smtp is not None
    sender.smtp.writer.transport.abort()  # the kept connection is gone (as when the server closed it)
    await sender.send("u@x.y", "second", "two")  # tried again on a new one
    await sender.close()
    assert [m.split(b"Subject: ")[1].split(b"\r\n")[0] for m in kept(folder)] == [b"first", b"second"]

    closed = socket_port_closed()
    down = EmailSender(Settings(smtp_host="127.0.0.1", smtp_port=closed))
    with pytest.raises(ChannelDown):
        await down.send("u@x.y", "s", "b")


def socket_port_closed() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
