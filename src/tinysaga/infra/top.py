"""`./tiny-saga top` (issue 17): a live view of the running stack in the terminal, drawn with rich.
Its figures are the operations view's (`platform.operations`, read as the storefront's Operations
page reads them): Order's summary and first stuck sagas, and every service's `/metrics` (consumer
lag per group, outbox backlog, events dead-lettered, wallet retries; a service that does not answer
is shown down). `--once` prints one snapshot and exits (0 when Order answered, 1 otherwise)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tinysaga.platform.operations import Snapshot, collect
from tinysaga.platform.secrets import internal_secret
from tinysaga.platform.settings import Settings


async def _snapshot(settings: Settings) -> Snapshot:
    async with httpx.AsyncClient() as http:
        return await collect(settings, http)


def _seconds(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def render(snap: Snapshot, title: str = "Tiny-Saga") -> Group:
    """The view: headline figures, sagas by status, consumer lag, outboxes, stuck sagas."""
    parts: list[Any] = []
    s = snap.summary
    head = Table.grid(padding=(0, 3))
    if s is None:
        parts.append(Text(f"{title}: Order does not answer; no saga figures", style="bold red"))
    else:
        for _ in range(6):
            head.add_column()
        head.add_row(
            Text("sagas/s", style="bold"),
            Text(f"p50 ({s['windowSeconds']:g} s)", style="bold"),
            Text("p99", style="bold"),
            Text("ended", style="bold"),
            Text("stuck", style="bold"),
            Text("dead letters", style="bold"),
        )
        ended = ", ".join(f"{k} {v}" for k, v in s["ended"].items())
        stuck = sum(s["stuck"].values())
        dl = s["deadLetters"]
        head.add_row(
            f"{s['sagasPerSecond']:.2f}",
            _seconds(s["p50Seconds"]),
            _seconds(s["p99Seconds"]),
            ended,
            Text(str(stuck), style="bold red" if stuck else ""),
            Text(f"{dl['notReplayed']} new / {dl['kept']} kept", style="yellow" if dl["notReplayed"] else ""),
        )
        parts += [Text(title, style="bold"), head]
        flight = Table(title="sagas in flight, by step", title_justify="left")
        flight.add_column("waiting for")
        flight.add_column("status")
        flight.add_column("in flight", justify="right")
        flight.add_column("oldest waiting", justify="right")
        flight.add_column("stuck", justify="right")
        for status, n in s["inFlight"].items():
            steps = ", ".join(s.get("awaiting", {}).get(status, [])) or "-"
            oldest = _seconds(s.get("oldestSeconds", {}).get(status))
            flight.add_row(steps, status, str(n), oldest, str(s["stuck"].get(status, 0)))
        parts.append(flight)
    lag = Table(title="consumer lag", title_justify="left")
    lag.add_column("group")
    lag.add_column("records behind", justify="right")
    for (service, group), n in sorted(snap.lag.items()):
        lag.add_row(group if group == service else f"{group} ({service})", f"{n:.0f}")
    outbox = Table(title="outboxes and dead letters", title_justify="left")
    outbox.add_column("service")
    outbox.add_column("outbox rows", justify="right")
    outbox.add_column("oldest", justify="right")
    outbox.add_column("dead-lettered", justify="right")
    services = sorted(set(snap.outbox) | set(snap.dead_lettered))
    for service in services:
        rows, oldest = snap.outbox.get(service, (0.0, 0.0))
        outbox.add_row(
            service, f"{rows:.0f}", _seconds(oldest) if rows else "-", f"{snap.dead_lettered.get(service, 0):.0f}"
        )
    parts += [lag, outbox]
    if snap.stuck:
        stuck_table = Table(title="stuck sagas (longest first)", title_justify="left")
        for col in ("order", "status", "waiting for", "in status", "last event"):
            stuck_table.add_column(col)
        for st in snap.stuck:
            stuck_table.add_row(
                st["orderId"],
                st["orderStatus"],
                ", ".join(st["waitingFor"]) or "-",
                f"{st['ageSeconds']:.1f} s (> {st['deadlineSeconds']:g} s)",
                st["lastEvent"] or "-",
            )
        parts.append(stuck_table)
    footer = f"wallet retries since start: {snap.wallet_retries:.0f}"
    if snap.down:
        parts.append(Text(f"down: {', '.join(snap.down)}", style="bold red"))
    parts.append(Text(footer, style="dim"))
    return Group(*parts)


def run(settings: Settings, once: bool, interval: float = 2.0, console: Console | None = None) -> int:
    console = console or Console()
    try:
        internal_secret(settings)
    except OSError:
        console.print(f"no stack here ({settings.home}): start it with ./tiny-saga up", style="red")
        return 1
    if once:
        snap = asyncio.run(_snapshot(settings))
        console.print(render(snap))
        return 0 if snap.summary is not None else 1
    with Live(render(asyncio.run(_snapshot(settings))), console=console, refresh_per_second=1, screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(render(asyncio.run(_snapshot(settings))))
        except KeyboardInterrupt:
            return 0
