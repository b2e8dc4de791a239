"""What the SMTP tests share: stopping the sinks a test started, and the sessions still open on
them (a session the client left open would otherwise outlive the test's event loop)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from tinysaga.notification.smtp_sink import Session


def stop_sinks(servers: Iterable[asyncio.AbstractServer], sessions: set[Session]) -> None:
    for server in servers:
        server.close()
    for s in list(sessions):
        if s.transport is not None:
            s.transport.close()
