"""A local SMTP sink for the demo: accepts every mail on loopback and keeps it as a .eml file in
the state dir, where the admin page reads it. Point TINYSAGA_SMTP_HOST/PORT at a real server instead."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import uvloop
from aiosmtpd.smtp import SMTP, Envelope, Session

from tinysaga.platform.settings import get_settings


class MaildirHandler:
    def __init__(self, folder) -> None:  # noqa: ANN001
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml"
        data = envelope.original_content or envelope.content
        (self.folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())
        return "250 Message accepted for delivery"


async def main() -> None:
    s = get_settings()
    handler = MaildirHandler(s.home / "mail")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="tinysaga-sink"), s.bind_host, s.effective_smtp_port
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    uvloop.run(main())  # the event loop the services run on (uvicorn's): an SMTP command costs less
