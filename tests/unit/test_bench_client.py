"""The load generator's HTTP client (bench/client.py) against a real server on a socket, each test
scripting what the server answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from bench.client import BadAnswer, Client, prepare

CLOSE = b""  # after an answer in the script: the server closes that connection


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
    return head + await reader.readexactly(length)


class Server:
    """Answers each request with the next of `answers` (written as they are; CLOSE after one closes
    the connection right after it, and a CLOSE in its place closes it without an answer); records
    the requests and counts the connections. With no answer left, it closes the connection."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers
        self.requests: list[bytes] = []
        self.connections = 0
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.answers:
                self.requests.append(await read_request(reader))
                answer = self.answers.pop(0)
                writer.write(answer)
                await writer.drain()
                if answer == CLOSE:
                    break
                if self.answers and self.answers[0] == CLOSE:
                    self.answers.pop(0)
                    break
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[list[bytes]], Awaitable[Server]]]:
    servers: list[asyncio.Server] = []

    async def start(answers: list[bytes]) -> Server:
        s = Server(answers)
        srv = await asyncio.start_server(s.handle, "127.0.0.1", 0)
        s.port = srv.sockets[0].getsockname()[1]
        servers.append(srv)
        return s

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()


def ok(body: bytes, status: str = "202 Accepted", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra}content-length: {len(body)}\r\n\r\n"
    return head.encode() + body


def test_a_prepared_request_carries_its_length_and_headers() -> None:
    r = prepare("POST", "/api/orders", "127.0.0.1:8080", {"Authorization": "Bearer t"}, b'{"a":1}')
    assert r == (
        b"POST /api/orders HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 7\r\n"
        b'Authorization: Bearer t\r\n\r\n{"a":1}'
    )


async def test_answers_are_read_by_their_length_on_one_kept_alive_connection(serve) -> None:
    server = await serve([ok(b'{"orderId":"1"}'), ok(b'{"orderId":"2"}'), ok(b"{}", "503 Service Unavailable")])
    client = Client("127.0.0.1", server.port)
    request = prepare("POST", "/api/orders", "x", {}, b"{}")
    answers = [await client.send(request) for _ in range(3)]
    assert [(a.status, a.body) for a in answers] == [(202, b'{"orderId":"1"}'), (202, b'{"orderId":"2"}'), (503, b"{}")]
    assert answers[0].headers[b"content-type"] == b"application/json"
    assert server.connections == 1 and client.opened == 1
    assert server.requests == [request] * 3
    await client.close()


async def test_requests_open_at_once_each_get_a_connection_then_share_them(serve) -> None:
    server = await serve([ok(b"{}")] * 6)
    client = Client("127.0.0.1", server.port)
    request = prepare("POST", "/", "x", {}, b"")
    first = await asyncio.gather(*(client.send(request) for _ in range(3)))
    second = await asyncio.gather(*(client.send(request) for _ in range(3)))
    assert [a.status for a in first + second] == [202] * 6
    assert client.opened == 3 and server.connections == 3
    await client.close()


async def test_a_chunked_answer_is_joined(serve) -> None:
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\nt: v\r\n\r\n"
    server = await serve([chunked, ok(b"next")])
    client = Client("127.0.0.1", server.port)
    a = await client.send(prepare("GET", "/", "x", {}))
    assert (a.status, a.body) == (200, b"abcdefg")
    assert (await client.send(prepare("GET", "/", "x", {}))).body == b"next"
    assert client.opened == 1
    await client.close()


async def test_a_connection_the_server_will_close_is_not_used_again(serve) -> None:
    server = await serve([ok(b"a", extra="connection: close\r\n"), ok(b"b")])
    client = Client("127.0.0.1", server.port)
    assert (await client.send(prepare("GET", "/", "x", {}))).body == b"a"
    assert (await client.send(prepare("GET", "/", "x", {}))).body == b"b"
    assert client.opened == 2
    await client.close()


async def test_an_answer_without_a_length_ends_with_the_connection(serve) -> None:
    server = await serve([b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n\r\nno length", CLOSE])
    client = Client("127.0.0.1", server.port)
    a = await client.send(prepare("GET", "/", "x", {}))
    assert (a.status, a.body) == (400, b"no length")
    assert not client.idle
    await client.close()


async def test_a_connection_closed_before_the_answer_is_whole_fails_the_request(serve) -> None:
    server = await serve([b"HTTP/1.1 202 Accepted\r\ncontent-length: 100\r\n\r\nshort", CLOSE])
    client = Client("127.0.0.1", server.port)
    with pytest.raises(EOFError):
        await client.send(prepare("GET", "/", "x", {}))
    assert not client.idle
    server2 = await serve([CLOSE])
    client2 = Client("127.0.0.1", server2.port)
    with pytest.raises(EOFError):
        await client2.send(prepare("GET", "/", "x", {}))


@pytest.mark.parametrize(
    "answer",
    [
        b"SMTP 220 hello\r\n\r\n",
        b"HTTP/1.1 2x2 Odd\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_an_answer_that_is_not_http_is_refused(serve, answer: bytes) -> None:
    server = await serve([answer])
    client = Client("127.0.0.1", server.port)
    with pytest.raises(BadAnswer):
        await client.send(prepare("GET", "/", "x", {}))
    assert not client.idle


async def test_a_server_that_does_not_answer_times_the_request_out(serve) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    srv = await asyncio.start_server(silent, "127.0.0.1", 0)
    client = Client("127.0.0.1", srv.sockets[0].getsockname()[1], timeout=0.2)
    with pytest.raises(TimeoutError):
        await client.send(prepare("GET", "/", "x", {}))
    assert not client.idle
    srv.close()
    await srv.wait_closed()


async def test_an_idle_connection_the_server_closed_is_not_reused(serve) -> None:
    server = await serve([ok(b"a")])  # one answer, then the server closes the connection
    client = Client("127.0.0.1", server.port)
    assert (await client.send(prepare("GET", "/", "x", {}))).body == b"a"
    for _ in range(100):  # until the client's side has read the close
        if client.idle[0][0].at_eof():
            break
        await asyncio.sleep(0.01)
    server.answers.append(ok(b"b"))
    assert (await client.send(prepare("GET", "/", "x", {}))).body == b"b"
    assert client.opened == 2
    await client.close()
