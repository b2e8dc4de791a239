"""The local SMTP sink on a real loopback socket: mail from the client Notification uses
(aiosmtplib) is kept as sent, dot-stuffed lines and all; a raw conversation gets RFC 5321's
answers for commands out of order, unknown or too long, and a message over the size limit is
refused without stopping the session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest

from tests.unit.smtp_support import stop_sinks
from tinysaga.notification import smtp_sink
from tinysaga.notification.smtp_sink import Mailbox, Session, address, unstuff


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    folder = tmp_path / "mail"
    sessions: set[Session] = set()
    mailbox = Mailbox(folder)
    server = await asyncio.get_running_loop().create_server(lambda: Session(mailbox, sessions), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, folder
    finally:
        stop_sinks([server], sessions)


def kept(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.glob("*.eml"))]


async def test_mail_from_the_notification_client_is_kept_as_written(sink: tuple[int, Path]) -> None:
    port, folder = sink
    body = b"Subject: Order placed\r\nTo: u@x.y\r\n\r\n.a line that starts with a dot\r\n..two\r\n.\r\nlast\r\n"
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=5)
    await smtp.connect()
    try:
        assert smtp.supports_extension("size") and smtp.supports_extension("8bitmime")
        for _ in range(3):
            errors, _ = await smtp.sendmail("shop@tinysaga.local", ["u@x.y"], body)
            assert errors == {}
        await smtp.sendmail("shop@tinysaga.local", ["u@x.y"], b"")  # an empty message
    finally:
        await smtp.quit()
    assert kept(folder)[:3] == [body] * 3
    assert len(kept(folder)) == 4


async def converse(port: int, lines: list[bytes | tuple[bytes, int]]) -> list[str]:
    """Send each line (or chunk) and read one reply per line after the greeting; (chunk, n): a
    pipelined group, n replies."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = [(await reader.readline()).decode()]
    for item in lines:
        line, n = item if isinstance(item, tuple) else (item, 1)
        writer.write(line)
        await writer.drain()
        for _ in range(n):
            reply = (await asyncio.wait_for(reader.readline(), 5)).decode()
            while reply[3:4] == "-":  # a reply of several lines
                reply = (await asyncio.wait_for(reader.readline(), 5)).decode()
            replies.append(reply.strip())
    writer.close()
    return replies


async def test_commands_out_of_order_unknown_or_too_long_get_their_error(sink: tuple[int, Path]) -> None:
    port, folder = sink
    replies = await converse(
        port,
        [
            b"MAIL FROM:<a@b.c>\r\n",  # before HELO
            b"EHLO client\r\n",
            b"RCPT TO:<d@e.f>\r\n",  # before MAIL
            b"DATA\r\n",  # before RCPT
            b"MAIL FROM a@b.c\r\n",  # no colon
            b"MAIL FROM:<a@b.c> SIZE=99999999999\r\n",  # over the limit
            b"MAIL FROM:<a@b.c> SIZE=120\r\n",
            b"MAIL FROM:<a@b.c>\r\n",  # nested
            b"RCPT TO:<>\r\n",
            b"RCPT TO:<d@e.f>\r\n",
            b"TURN\r\n",
            b"X" * 2000 + b"\r\n",  # too long
            b"Y" * 1500,  # too long, and its end comes later: one answer
            b"Y\r\nNOOP\r\n",  # its end (skipped, no answer), then a command
            b"NOOP\r\n",
            b"RSET\r\n",
            b"DATA\r\n",  # the envelope was reset
            b"QUIT\r\n",
        ],
    )
    codes = [r[:3] for r in replies]
    assert codes == [
        "220", "503", "250", "503", "503", "501", "552", "250", "503",
        "501", "250", "500", "500", "500", "250", "250", "250", "503", "221",
    ]  # fmt: skip
    assert kept(folder) == []


async def test_a_message_over_the_limit_is_refused_and_the_session_goes_on(
    sink: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, folder = sink
    monkeypatch.setattr(smtp_sink, "MAX_MESSAGE", 1000)
    big = b"".join(b"line %d of a long message\r\n" % i for i in range(200))
    replies = await converse(
        port,
        [
            b"HELO client\r\n",
            b"MAIL FROM:<a@b.c>\r\n",
            b"RCPT TO:<d@e.f>\r\n",
            b"DATA\r\n",
            big + b".\r\n",
            b"MAIL FROM:<a@b.c>\r\n",
            b"RCPT TO:<d@e.f>\r\n",
            b"DATA\r\n",
            b"small\r\n.\r\n",
        ],
    )
    assert [r[:3] for r in replies] == ["220", "250", "250", "250", "354", "552", "250", "250", "354", "250"]
    assert kept(folder) == [b"small\r\n"]


def test_dot_stuffing_and_addresses() -> None:
    assert unstuff(b"..a\r\n..\r\nb..\r\n") == b".a\r\n.\r\nb..\r\n"
    assert address("FROM:<a@b.c> SIZE=10", "FROM:") == ("a@b.c", ["SIZE=10"])
    assert address("from: <>", "FROM:") == ("", [])
    assert address("TO:d@e.f", "TO:") == ("d@e.f", [])
    assert address("TO:<d@e.f", "TO:") is None
    assert address("FROM:", "FROM:") is None


async def test_a_message_that_cannot_be_kept_is_answered_451(sink: tuple[int, Path]) -> None:
    port, folder = sink
    folder.rmdir()  # the mail folder gone
    folder.write_text("not a folder")
    replies = await converse(
        port, [b"HELO c\r\n", b"MAIL FROM:<a@b.c>\r\n", b"RCPT TO:<d@e.f>\r\n", b"DATA\r\n", b"x\r\n.\r\n", b"NOOP\r\n"]
    )
    assert [r[:3] for r in replies] == ["220", "250", "250", "250", "354", "451", "250"]


async def test_bdat_takes_a_message_in_counted_chunks_as_sent(sink: tuple[int, Path]) -> None:
    port, folder = sink
    replies = await converse(
        port,
        [
            b"EHLO client\r\n",
            b"MAIL FROM:<a@b.c>\r\n",
            b"RCPT TO:<d@e.f>\r\n",
            b"BDAT 6\r\n.hello",  # no dot-stuffing: the octets are the message
            b"BDAT 8 LAST\r\n\r\n.world",
            (b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 0 LAST\r\n", 3),  # pipelined: three replies
            b"NOOP\r\n",
        ],
    )
    assert replies[4:6] == ["250 6 octets received", "250 Message accepted for delivery"]
    assert [r[:3] for r in replies[6:]] == ["250", "250", "250", "250"]
    assert kept(folder) == [b".hello\r\n.world", b""]


async def test_ehlo_offers_pipelining_and_chunking() -> None:
    assert b"250-PIPELINING\r\n250-CHUNKING\r\n" in smtp_sink.ehlo_reply(smtp_sink.EXTENSIONS)
    assert smtp_sink.ehlo_reply(("SIZE 10",)) == b"250-tinysaga-sink\r\n250 SIZE 10\r\n"


async def test_a_refused_bdat_still_reads_its_octets(sink: tuple[int, Path]) -> None:
    port, folder = sink
    replies = await converse(
        port,
        [
            b"EHLO client\r\n",
            b"BDAT 6 LAST\r\nNOOP\r\n",  # no MAIL: refused, and "NOOP\r\n" is its message, not a command
            b"MAIL FROM:<a@b.c>\r\n",
            b"BDAT 4 LAST\r\nQUIT",  # no RCPT
            b"BDAT x\r\n",  # no size: refused at once, nothing read
            b"BDAT 4 FIRST\r\n",
            b"RCPT TO:<d@e.f>\r\n",
            b"BDAT 2\r\nab",
            b"DATA\r\n",  # a transaction of BDATs takes no DATA
            b"BDAT 2 LAST\r\ncd",
            b"NOOP\r\n",
        ],
    )
    assert [r[:3] for r in replies] == [
        "220",
        "250",
        "503",
        "250",
        "503",
        "501",
        "501",
        "250",
        "250",
        "503",
        "250",
        "250",
    ]
    assert replies[2] == "503 Error: need MAIL command" and replies[4] == "503 Error: need RCPT command"
    assert kept(folder) == [b"abcd"]


async def test_a_bdat_message_over_the_limit_is_refused_at_its_end(
    sink: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, folder = sink
    monkeypatch.setattr(smtp_sink, "MAX_MESSAGE", 1000)
    replies = await converse(
        port,
        [
            b"HELO client\r\n",
            (b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 800\r\n" + b"x" * 800, 3),
            b"BDAT 800 LAST\r\n" + b"y" * 800,
            (b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 5 LAST\r\nsmall", 3),
        ],
    )
    assert [r[:3] for r in replies] == ["220", "250", "250", "250", "250", "552", "250", "250", "250"]
    assert kept(folder) == [b"small"]


async def test_a_sink_without_chunking_does_not_know_bdat(tmp_path: Path) -> None:
    sessions: set[Session] = set()
    mailbox = Mailbox(tmp_path / "mail")
    server = await asyncio.get_running_loop().create_server(
        lambda: Session(mailbox, sessions, extensions=("PIPELINING",)), "127.0.0.1", 0
    )
    try:
        replies = await converse(server.sockets[0].getsockname()[1], [b"EHLO c\r\n", b"BDAT 0 LAST\r\n"])
    finally:
        server.close()
    assert replies[1] == "250 PIPELINING" and replies[2].startswith("500 ")
