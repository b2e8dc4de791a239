"""A local SMTP sink for the demo: accepts every mail on loopback and keeps it as a .eml file in
the state dir, where the admin page reads it. Point TINYSAGA_SMTP_HOST/PORT at a real server instead.

It speaks the commands a mail client sends to submit mail (RFC 5321: EHLO or HELO, MAIL, RCPT,
DATA, RSET, NOOP, VRFY, HELP, QUIT), with PIPELINING (RFC 2920: the replies to the commands that
came together go back in one write) and CHUNKING (RFC 3030: BDAT, the message sent as counted
octets, so a client can send a whole mail in one write; ADR 65), on asyncio's protocol callbacks.
Every notification's email passes through it on the stack's own cores, and a general SMTP server
library (aiosmtpd) cost about a millisecond of CPU per mail, most of it parsing addresses the sink
does not need (ADR 58)."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

from tinysaga.platform.settings import get_settings

HOSTNAME = "tinysaga-sink"
MAX_LINE = 1000  # octets of a command line, its CRLF included (RFC 5321 says 512; a client may send more)
MAX_MESSAGE = 32 * 1024 * 1024  # octets of a message (advertised as SIZE)
MAX_RECIPIENTS = 1000
IDLE_CLOSE = 300.0  # seconds: a connection that sends nothing this long is closed
EXTENSIONS = (f"SIZE {MAX_MESSAGE}", "8BITMIME", "PIPELINING", "CHUNKING", "HELP")
HELP = "Supported commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT"


def ehlo_reply(extensions: tuple[str, ...]) -> bytes:
    lines = [HOSTNAME, *extensions]
    return b"".join(f"250{'-' if i < len(lines) - 1 else ' '}{line}\r\n".encode() for i, line in enumerate(lines))


def unstuff(content: bytes) -> bytes:
    """The message as written: the dot the client put before each line that starts with one
    (RFC 5321, 4.5.2) taken off."""
    if content.startswith(b".."):
        content = content[1:]
    return content.replace(b"\r\n..", b"\r\n.")


def address(arg: str, keyword: str) -> tuple[str, list[str]] | None:
    """The path of `FROM:<a> PARAMS` or `TO:<a> PARAMS` and its parameters; None when malformed."""
    if arg[: len(keyword)].upper() != keyword:
        return None
    rest = arg[len(keyword) :].strip()
    if rest.startswith("<"):
        end = rest.find(">")
        if end < 0:
            return None
        return rest[1:end], rest[end + 1 :].split()
    path, *params = rest.split() or [""]
    return (path, params) if path else None


@dataclass
class Chunk:
    """A BDAT whose octets are being read: how many, how many are still to come, whether it ends
    the message, and the refusal to answer once they are read (None: taken)."""

    size: int
    last: bool
    refusal: str | None
    left: int = field(init=False)

    def __post_init__(self) -> None:
        self.left = self.size


class Mailbox:
    """Where accepted mail goes: one .eml file per message, named by its arrival."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def keep(self, content: bytes) -> None:
        (self.folder / f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml").write_bytes(content)


class Session(asyncio.Protocol):
    """One client's connection: commands line by line, then the message of each DATA, or the
    counted octets of each BDAT. `extensions`: what EHLO offers (a test offers less)."""

    def __init__(self, mailbox: Mailbox, sessions: set[Session], extensions: tuple[str, ...] = EXTENSIONS) -> None:
        self.mailbox = mailbox
        self.sessions = sessions
        self.ehlo = ehlo_reply(extensions)
        self.chunking = "CHUNKING" in extensions
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.out = bytearray()  # the replies to what came in one read, written together
        self.greeted = False
        self.sender: str | None = None
        self.recipients: list[str] = []
        self.in_data = False
        self.data_start = False  # the buffer starts where the message does (nothing of it dropped)
        self.scan_from = 0  # where to look for the message's end next (what was searched holds none)
        self.too_big = False
        self.skipping = False  # within a command line too long to read
        self.chunk: Chunk | None = None  # the BDAT whose octets are being read
        self.chunks = bytearray()  # the message so far, from the BDATs of this mail transaction
        self.chunked = False  # a BDAT came in this mail transaction: DATA may not
        self.last_heard = time.monotonic()

    # ---- asyncio's callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport subclass
        self.sessions.add(self)
        self.reply(f"220 {HOSTNAME} ESMTP")
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.sessions.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.last_heard = time.monotonic()
        self.buf += data
        try:
            self.work()
        finally:
            self.flush()

    def work(self) -> None:
        """Everything the buffer holds: commands, and the message of a DATA or a BDAT."""
        while self.transport is not None and not self.transport.is_closing():
            if self.chunk is not None:
                if not self.take_chunk():
                    return
                continue
            if self.in_data:
                if not self.take_message():
                    return
                continue
            end = self.buf.find(b"\n")
            if end < 0:
                if len(self.buf) > MAX_LINE:  # a line with no end in sight: refused, the rest skipped
                    self.buf.clear()
                    if not self.skipping:
                        self.reply("500 Error: line too long")
                    self.skipping = True
                return
            line = bytes(self.buf[: end + 1])
            del self.buf[: end + 1]
            if self.skipping:  # the end of a line already refused
                self.skipping = False
                continue
            if len(line) > MAX_LINE:
                self.reply("500 Error: line too long")
                continue
            self.command(line.rstrip(b"\r\n").decode("utf-8", "replace"))

    # ---- the conversation ---------------------------------------------------------------------

    def reply(self, text: str) -> None:
        self.out += text.encode() + b"\r\n"

    def flush(self) -> None:
        if self.out and self.transport is not None:
            self.transport.write(bytes(self.out))
        self.out.clear()

    def reset(self) -> None:
        self.sender, self.recipients = None, []
        self.chunks.clear()
        self.chunked = self.too_big = False

    def command(self, line: str) -> None:
        verb, _, arg = line.partition(" ")
        verb, arg = verb.upper(), arg.strip()
        if verb in ("EHLO", "HELO"):
            if not arg:
                self.reply(f"501 Syntax: {verb} hostname")
                return
            self.greeted = True
            self.reset()
            if verb == "EHLO":
                self.out += self.ehlo
            else:
                self.reply(f"250 {HOSTNAME}")
        elif verb == "MAIL":
            self.mail(arg)
        elif verb == "RCPT":
            self.rcpt(arg)
        elif verb == "BDAT" and self.chunking:
            self.bdat(arg)
        elif verb == "DATA":
            if arg:
                self.reply("501 Syntax: DATA")
            elif self.chunked:
                self.reply("503 Error: DATA after BDAT")
            elif not self.recipients:
                self.reply("503 Error: need RCPT command")
            else:
                self.in_data, self.data_start, self.too_big, self.scan_from = True, True, False, 0
                self.reply("354 End data with <CR><LF>.<CR><LF>")
        elif verb == "RSET":
            self.reset()
            self.reply("250 OK")
        elif verb == "NOOP":
            self.reply("250 OK")
        elif verb == "VRFY":
            self.reply("252 Cannot VRFY user, but will accept message and attempt delivery")
        elif verb == "HELP":
            self.reply(f"250 {HELP}")
        elif verb == "QUIT":
            self.reply("221 Bye")
            self.flush()
            assert self.transport is not None
            self.transport.close()
        else:
            self.reply(f'500 Error: command "{verb[:32]}" not recognized')

    def mail(self, arg: str) -> None:
        if not self.greeted:
            self.reply("503 Error: send HELO first")
            return
        if self.sender is not None:
            self.reply("503 Error: nested MAIL command")
            return
        parsed = address(arg, "FROM:")
        if parsed is None:
            self.reply("501 Syntax: MAIL FROM: <address>")
            return
        path, params = parsed
        for p in params:
            key, _, value = p.partition("=")
            if key.upper() == "SIZE" and (not value.isdigit() or int(value) > MAX_MESSAGE):
                self.reply("552 Error: message size exceeds fixed maximum message size")
                return
        self.sender = path
        self.reply("250 OK")

    def rcpt(self, arg: str) -> None:
        if self.sender is None:
            self.reply("503 Error: need MAIL command")
            return
        parsed = address(arg, "TO:")
        if parsed is None or not parsed[0]:
            self.reply("501 Syntax: RCPT TO: <address>")
            return
        if len(self.recipients) >= MAX_RECIPIENTS:
            self.reply("452 Error: too many recipients")
            return
        self.recipients.append(parsed[0])
        self.reply("250 OK")

    def bdat(self, arg: str) -> None:
        """`BDAT <size> [LAST]`: the next `size` octets are part of the message, whatever the state
        of the transaction (RFC 3030 has the server read them even when it refuses the command), and
        the reply comes once they are read. A size that cannot be read is refused at once."""
        size, *rest = arg.split() or [""]
        if not size.isdigit() or len(size) > 12 or [r.upper() for r in rest] not in ([], ["LAST"]):
            self.reply("501 Syntax: BDAT size [LAST]")
            return
        if not self.recipients:
            refusal = "503 Error: need RCPT command" if self.sender is not None else "503 Error: need MAIL command"
        else:
            refusal = None
        self.chunk = Chunk(int(size), bool(rest), refusal)

    def take_chunk(self) -> bool:
        """The octets of the BDAT being read, and its reply once all have come; False while not."""
        chunk = self.chunk
        assert chunk is not None
        taken = min(chunk.left, len(self.buf))
        if chunk.refusal is None and not self.too_big:
            if len(self.chunks) + taken > MAX_MESSAGE:
                self.too_big = True
                self.chunks.clear()
            else:
                self.chunks += self.buf[:taken]
        del self.buf[:taken]
        chunk.left -= taken
        if chunk.left:
            return False
        self.chunk = None
        if chunk.refusal is not None:
            self.reply(chunk.refusal)
            if self.chunked:  # a failed BDAT ends the transaction it was part of
                self.reset()
            return True
        self.chunked = True
        if not chunk.last:
            self.reply(f"250 {chunk.size} octets received")
            return True
        if self.too_big:
            self.reply("552 Error: message size exceeds fixed maximum message size")
        else:
            self.keep(bytes(self.chunks))
        self.reset()
        return True

    def keep(self, content: bytes) -> None:
        try:
            self.mailbox.keep(content)
        except OSError as e:  # a full disk, the folder gone: the client tries again later
            self.reply(f"451 Error: the message could not be kept ({e.strerror or e})")
        else:
            self.reply("250 Message accepted for delivery")

    def take_message(self) -> bool:
        """The message, once its ending line (a lone dot) has come; False while it has not."""
        if self.data_start and self.buf.startswith(b".\r\n"):
            content, end = b"", 3
        else:
            found = self.buf.find(b"\r\n.\r\n", self.scan_from)
            if found < 0:
                if len(self.buf) > MAX_MESSAGE:  # refused at its end; keep what may start the ending
                    self.too_big, self.data_start = True, False
                    del self.buf[:-4]
                self.scan_from = max(0, len(self.buf) - 4)
                return False
            content, end = bytes(self.buf[: found + 2]), found + 5
            self.too_big = self.too_big or found + 2 > MAX_MESSAGE
        del self.buf[:end]
        self.in_data = False
        if self.too_big:
            self.reply("552 Error: message size exceeds fixed maximum message size")
        else:
            self.keep(unstuff(content))
        self.reset()
        return True


async def close_idle(sessions: set[Session]) -> None:
    while True:
        await asyncio.sleep(IDLE_CLOSE / 5)
        now = time.monotonic()
        for s in list(sessions):
            if now - s.last_heard > IDLE_CLOSE and s.transport is not None:
                s.reply("421 Timeout, closing the connection")
                s.flush()
                s.transport.close()


async def main() -> None:
    s = get_settings()
    mailbox = Mailbox(s.home / "mail")
    sessions: set[Session] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Session(mailbox, sessions), s.bind_host, s.effective_smtp_port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sweeper = asyncio.create_task(close_idle(sessions))
    async with server:
        await stop.wait()
    sweeper.cancel()


if __name__ == "__main__":
    uvloop.run(main())  # the event loop the services run on (uvicorn's)
