"""The SMTP client the email channel submits mail with (RFC 5321), on one kept connection.

A mail costs as few round trips as the server allows (ADR 65):
- the server offers PIPELINING and CHUNKING (RFC 2920, RFC 3030): MAIL, RCPT and `BDAT <size>
  LAST` with the message go in one write, and the three replies come back together: one round trip;
- PIPELINING only: MAIL, RCPT and DATA in one write, then the dot-stuffed message: two;
- neither: one command at a time, as RFC 5321 has it: four.
A refusal (a reply other than the one expected) raises `SmtpError` with the server's code and
text, once the transaction is reset; a silent server, a closed connection or a reply that is not
SMTP raises it without a code, and then the session is not to be used again. No TLS and no AUTH:
the channel submits to a relay on a trusted network (the local sink by default)."""

from __future__ import annotations

import asyncio

MAX_REPLY_LINE = 4096  # octets of one line of a reply (RFC 5321 allows 512)


class SmtpError(Exception):
    """The server refused a step, answered out of protocol, or did not answer in time."""

    def __init__(self, step: str, code: int, text: str) -> None:
        super().__init__(f"{step}: {code} {text}" if code else f"{step}: {text}")
        self.step, self.code, self.text = step, code, text


def dot_stuffed(message: bytes) -> bytes:
    """The message as DATA sends it: a dot doubled at the start of each line, ending in CRLF."""
    stuffed = (b"." + message if message.startswith(b".") else message).replace(b"\r\n.", b"\r\n..")
    return stuffed if stuffed.endswith(b"\r\n") or not stuffed else stuffed + b"\r\n"


def ending_in_crlf(message: bytes) -> bytes:
    """The message with its last line ended (what DATA would have delivered)."""
    return message if message.endswith(b"\r\n") or not message else message + b"\r\n"


def envelope_path(address: str) -> str:
    if any(c in address for c in "\r\n<>"):
        raise ValueError(f"not an envelope address: {address!r}")
    return f"<{address}>"


class SmtpConnection:
    """One session with a server: `open` (greeting and EHLO), `send` per mail, `quit`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader, self.writer, self.timeout = reader, writer, timeout
        self.extensions: set[str] = set()

    @classmethod
    async def open(cls, host: str, port: int, helo_name: str, *, timeout: float = 5.0) -> SmtpConnection:
        """Connected and greeted, the server's extensions read from its EHLO reply (HELO, and none,
        from a server that does not know EHLO)."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=MAX_REPLY_LINE), timeout)
        except TimeoutError as e:
            raise SmtpError("connect", 0, f"no connection within {timeout} s") from e
        conn = cls(reader, writer, timeout)
        try:
            await conn._expect("greeting", 220)
            conn.writer.write(f"EHLO {helo_name}\r\n".encode())
            code, lines = await conn._reply("EHLO")
            if code == 250:
                conn.extensions = {line.split(" ", 1)[0].upper() for line in lines[1:]}
            else:
                conn.writer.write(f"HELO {helo_name}\r\n".encode())
                await conn._expect("HELO", 250)
        except BaseException:
            conn.close()
            raise
        return conn

    @property
    def pipelining(self) -> bool:
        return "PIPELINING" in self.extensions

    @property
    def chunking(self) -> bool:
        return "CHUNKING" in self.extensions

    async def send(self, sender: str, recipient: str, message: bytes) -> None:
        """Submit one message for one recipient; returns once the server has taken it. A refusal
        raises SmtpError after a RSET, so the session can carry the next mail."""
        mail = f"MAIL FROM:{envelope_path(sender)}\r\n".encode()
        rcpt = f"RCPT TO:{envelope_path(recipient)}\r\n".encode()
        try:
            if self.pipelining and self.chunking:
                body = ending_in_crlf(message)
                self.writer.write(b"".join((mail, rcpt, b"BDAT %d LAST\r\n" % len(body), body)))
                await self._group(("MAIL", 250), ("RCPT", 250, 251), ("BDAT", 250))
                return
            if self.pipelining:
                self.writer.write(mail + rcpt + b"DATA\r\n")
                await self._group(("MAIL", 250), ("RCPT", 250, 251), ("DATA", 354))
            else:
                self.writer.write(mail)
                await self._expect("MAIL", 250)
                self.writer.write(rcpt)
                await self._expect("RCPT", 250, 251)
                self.writer.write(b"DATA\r\n")
                await self._expect("DATA", 354)
            self.writer.write(dot_stuffed(message) + b".\r\n")
            await self._expect("message", 250)
        except SmtpError as e:
            if e.code:  # refused: the transaction is ended, the session goes on
                self.writer.write(b"RSET\r\n")
                await self._expect("RSET", 250)
            raise

    async def quit(self) -> None:
        """QUIT, then close (whatever the server answers)."""
        try:
            self.writer.write(b"QUIT\r\n")
            await self._reply("QUIT")
        finally:
            self.close()

    def close(self) -> None:
        self.writer.close()

    # ---- replies -------------------------------------------------------------------------------

    async def _reply(self, step: str) -> tuple[int, list[str]]:
        """The next reply: its code and its lines' texts (a reply of several lines is `250-...`
        lines then one `250 ...`)."""
        lines: list[str] = []
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    raw = await self.reader.readline()
                    if not raw.endswith(b"\n"):
                        raise SmtpError(step, 0, "connection closed by the server")
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
                        raise SmtpError(step, 0, f"not an SMTP reply: {line[:80]!r}")
                    lines.append(line[4:])
                    if line[3:4] != "-":
                        return int(line[:3]), lines
        except TimeoutError as e:
            raise SmtpError(step, 0, f"no reply within {self.timeout} s") from e
        except (ValueError, asyncio.LimitOverrunError) as e:  # a line longer than the reader's limit
            raise SmtpError(step, 0, "reply line too long") from e

    async def _expect(self, step: str, *ok: int) -> None:
        code, lines = await self._reply(step)
        if code not in ok:
            raise SmtpError(step, code, " ".join(lines))

    async def _group(self, *steps: tuple[str, int] | tuple[str, int, int]) -> None:
        """The replies to a pipelined group, one per command in order; all are read before the
        first refusal is raised, so that nothing of the group is left unread. A server that
        refused the envelope and still waits for a message (354) has left the session unusable:
        it is closed."""
        refused: SmtpError | None = None
        code = 0
        for step, *ok in steps:
            code, lines = await self._reply(step)
            if code not in ok and refused is None:
                refused = SmtpError(step, code, " ".join(lines))
        if refused is not None and code == 354:
            self.close()
            raise SmtpError(refused.step, 0, f"{refused} (and the server waits for the message)")
        if refused is not None:
            raise refused
