"""The load generator's HTTP client: HTTP/1.1 keep-alive connections to the gateway, each request
written as bytes prepared once, each answer read by its length.

The generator shares the two cores with the stack it measures, so what it spends on a request is
taken from the sagas. Measured on one host against a server that answers at once (4,000 POSTs, 50 at
a time, in one process): aiohttp on asyncio's loop about 490-630 µs of CPU per request, on uvloop
400-440; this client on uvloop 55-70. The bench's few other calls (registering users, the admin's,
the services' metrics) still use aiohttp: they are not in the measured phases.

The caller bounds how many requests are open at once: a request takes an idle connection or opens
one, and gives it back when its answer has been read whole (never when it failed: that connection
is closed).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

IDLE_LIMIT = 5.0  # s: the gateway closes a keep-alive connection idle for 10 s; not reused past this


class BadAnswer(Exception):
    """An answer this client cannot read as HTTP/1.1."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[bytes, bytes]  # names lower-cased; a repeated header keeps its last value
    body: bytes


def prepare(method: str, path: str, host: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """A whole request as bytes, its Content-Length set (written as is by `Client.send`)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Client:
    """Keep-alive connections to one address (host, port)."""

    def __init__(self, host: str, port: int, timeout: float = 60.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.idle: deque[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = deque()
        self.opened = 0  # connections opened so far (a test reads it to see them reused)

    async def send(self, request: bytes) -> Answer:
        """Write a request made by `prepare` and read its answer, within the timeout. Raises
        OSError, EOFError (the connection closed before the answer was whole), BadAnswer or
        TimeoutError; the connection is then closed."""
        reader, writer = await self._connection()
        try:
            async with asyncio.timeout(self.timeout):
                writer.write(request)
                answer, reusable = await read_answer(reader)
        except BaseException:
            writer.close()
            raise
        if reusable:
            self.idle.append((reader, writer, time.monotonic()))
        else:
            writer.close()
        return answer

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        now = time.monotonic()
        while self.idle:
            reader, writer, since = self.idle.pop()  # the most recently used: the likeliest alive
            if reader.at_eof() or now - since > IDLE_LIMIT:
                writer.close()
                continue
            return reader, writer
        self.opened += 1
        return await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        while self.idle:
            _, writer, _ = self.idle.pop()
            writer.close()


async def read_answer(reader: asyncio.StreamReader) -> tuple[Answer, bool]:
    """One answer from the stream, and whether the connection can carry another request."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as e:
        raise BadAnswer("the answer's header is too long") from e
    lines = head[:-4].split(b"\r\n")
    status_line = lines[0]
    if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12 or not status_line[9:12].isdigit():
        raise BadAnswer(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    status = int(status_line[9:12])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise BadAnswer(f"not a header line: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    connection = headers.get(b"connection", b"").lower()
    reusable = status_line.startswith(b"HTTP/1.1") and b"close" not in connection
    if status in (204, 304) or 100 <= status < 200:
        return Answer(status, headers, b""), reusable
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        return Answer(status, headers, await _chunks(reader)), reusable
    length = headers.get(b"content-length")
    if length is not None:
        if not length.isdigit():
            raise BadAnswer(f"a Content-Length that is not a number: {length[:40]!r}")
        return Answer(status, headers, await reader.readexactly(int(length))), reusable
    return Answer(status, headers, await reader.read()), False  # the body ends with the connection


async def _chunks(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size_line = (await reader.readuntil(b"\r\n"))[:-2].split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError as e:
            raise BadAnswer(f"not a chunk size: {size_line[:40]!r}") from e
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, up to the empty line
                pass
            return b"".join(parts)
        chunk = await reader.readexactly(size + 2)
        if chunk[-2:] != b"\r\n":
            raise BadAnswer("a chunk not followed by CRLF")
        parts.append(chunk[:-2])
