"""`./tiny-saga top` (issue 17): a live view of the running stack in the terminal, drawn with rich.
It reads, on the loopback ports (as the gateway does, with the internal secret and an operator's
admin identity):
- Order's operations summary (`GET /api/admin/sagas/summary`: sagas per second, p50 and p99 of the
  sagas that ended in the last minute, in flight and stuck by status, dead letters) and its first
  stuck sagas (`GET /api/admin/sagas/stuck`);
- every service's `/metrics`: consumer lag per group, outbox backlog, events dead-lettered, wallet
  retries; a service that does not answer is shown down.
`--once` prints one snapshot and exits (0 when Order answered, 1 otherwise)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tinysaga.infra.topology import processes
from tinysaga.platform.secrets import internal_secret
from tinysaga.platform.settings import Settings

WINDOW_SECONDS = 60
STUCK_SHOWN = 8
OPERATOR = {"x-user-id": "tiny-saga-top", "x-user-role": "admin"}


@dataclass
class Snapshot:
    summary: dict[str, Any] | None = None  # Order's, None when no replica answered
    stuck: list[dict[str, Any]] = field(default_factory=list)
    lag: dict[tuple[str, str], float] = field(default_factory=dict)  # (service, group) -> records
    outbox: dict[str, tuple[float, float]] = field(default_factory=dict)  # service -> (rows, oldest s)
    dead_lettered: dict[str, float] = field(default_factory=dict)  # service -> events since start
    wallet_retries: float = 0.0
    down: list[str] = field(default_factory=list)  # processes whose /metrics did not answer


def service_processes(settings: Settings) -> list[tuple[str, str, int]]:
    """(process, service, port) of every service process (the ones with a /metrics)."""
    out = []
    for p in processes(settings):
        if p.port is not None and p.argv[1:2] == ["-m"] and "--port" in p.argv:
            out.append((p.name, p.argv[2].removeprefix("tinysaga."), p.port))
    return out


def read_metrics(snap: Snapshot, service: str, text: str) -> None:
    """Add one process's metrics to the snapshot (lag and counters summed over replicas; the
    outbox, which every replica reads from the same database, taken once)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "tinysaga_consumer_lag":
                key = (s.labels["service"], s.labels["group"])
                snap.lag[key] = snap.lag.get(key, 0.0) + s.value
            elif s.name == "tinysaga_outbox_rows":
                rows, oldest = snap.outbox.get(s.labels["service"], (0.0, 0.0))
                snap.outbox[s.labels["service"]] = (max(rows, s.value), oldest)
            elif s.name == "tinysaga_outbox_oldest_seconds":
                rows, oldest = snap.outbox.get(s.labels["service"], (0.0, 0.0))
                snap.outbox[s.labels["service"]] = (rows, max(oldest, s.value))
            elif s.name == "tinysaga_events_total" and s.labels.get("outcome") == "dead_lettered":
                snap.dead_lettered[service] = snap.dead_lettered.get(service, 0.0) + s.value
            elif s.name == "tinysaga_wallet_retries_total":
                snap.wallet_retries += s.value


def collect(settings: Settings, http: httpx.Client) -> Snapshot:
    snap = Snapshot()
    procs = service_processes(settings)
    for name, service, port in procs:
        try:
            r = http.get(f"http://127.0.0.1:{port}/metrics")
            r.raise_for_status()
        except httpx.HTTPError:
            snap.down.append(name)
            continue
        read_metrics(snap, service, r.text)
    headers = {"x-internal-secret": internal_secret(settings), **OPERATOR}
    for name, service, port in procs:
        if service != "order" or name in snap.down:
            continue
        try:
            base = f"http://127.0.0.1:{port}"
            summary = http.get(
                f"{base}/api/admin/sagas/summary", params={"windowSeconds": WINDOW_SECONDS}, headers=headers
            )
            stuck = http.get(f"{base}/api/admin/sagas/stuck", params={"limit": STUCK_SHOWN}, headers=headers)
            summary.raise_for_status()
            stuck.raise_for_status()
        except httpx.HTTPError:
            continue
        snap.summary, snap.stuck = summary.json(), stuck.json()
        break
    return snap


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
        flight.add_column("stuck", justify="right")
        for status, n in s["inFlight"].items():
            steps = ", ".join(s.get("awaiting", {}).get(status, [])) or "-"
            flight.add_row(steps, status, str(n), str(s["stuck"].get(status, 0)))
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
    with httpx.Client(timeout=5) as http:
        if once:
            snap = collect(settings, http)
            console.print(render(snap))
            return 0 if snap.summary is not None else 1
        with Live(render(collect(settings, http)), console=console, refresh_per_second=1, screen=False) as live:
            try:
                while True:
                    time.sleep(interval)
                    live.update(render(collect(settings, http)))
            except KeyboardInterrupt:
                return 0
