"""The services' HTTP server: every response carries a Date header of the current second (added
per response, so that the server's loop need not wake every second to refresh it), and the server
stops as soon as it is asked to, however long its idle tick."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from email.utils import parsedate_to_datetime

import httpx
import uvicorn
from fastapi import FastAPI

from tinysaga.platform.service import _DateHeader, _Server


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    return app


async def test_every_response_carries_the_date_once() -> None:
    transport = httpx.ASGITransport(app=_DateHeader(_app()))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/ping")
        missing = await client.get("/nowhere")
    assert r.json() == {"pong": "yes"}
    for resp in (r, missing):
        assert len(resp.headers.get_list("date")) == 1
        assert abs(parsedate_to_datetime(resp.headers["date"]).timestamp() - time.time()) < 2


async def test_the_server_answers_with_a_date_and_stops_at_once_when_asked() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(lambda: _DateHeader(_app()), factory=True, port=port, date_header=False, log_config=None)
    server = _Server(config)
    # uvicorn raises the signal it was stopped by again once it has stopped: here, to a no-op
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{port}/ping")
        assert len(r.headers.get_list("date")) == 1
        await asyncio.sleep(0.2)  # the loop is asleep in its idle tick
        asked = time.monotonic()
        server.handle_exit(signal.SIGTERM, None)
        await asyncio.wait_for(task, 5)
        assert time.monotonic() - asked < 2 < _Server.IDLE_TICK
    finally:
        task.cancel()
        signal.signal(signal.SIGTERM, previous)


async def test_health_answers_ahead_of_the_routes_from_the_real_checks() -> None:
    from tinysaga.platform import web

    state = {"database": True}

    async def database() -> bool:
        return state["database"]

    async def broken() -> bool:
        raise OSError("unreachable")

    app = FastAPI()
    web.install(app, internal_secret="s3cret", max_body=1000)
    web.add_health(app, {"database": database})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as c:
        live, ready = await c.get("/health/live"), await c.get("/health/ready")
        state["database"] = False
        down = await c.get("/health/ready")
        post = await c.post("/health/ready", json={})
    assert live.status_code == 200 and live.json() == {"status": "up"}
    assert ready.status_code == 200 and ready.json() == {"status": "up", "checks": {"database": "up"}}
    assert down.status_code == 503 and down.json() == {"status": "down", "checks": {"database": "down"}}
    assert post.status_code == 405 and post.headers["allow"] == "GET"
    assert post.headers["content-type"] == "application/problem+json"

    failing = FastAPI()
    web.add_health(failing, {"database": database, "kafka": broken})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=failing), base_url="http://svc") as c:
        r = await c.get("/health/ready")
    assert r.status_code == 503 and r.json()["checks"] == {"database": "down", "kafka": "down"}
