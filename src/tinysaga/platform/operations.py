"""The operations view's figures: what `./tiny-saga top` draws in the terminal and the storefront's
Operations page charts (`GET /api/admin/operations`, served by the web service), read the same way
for both:
- Order's operations summary (`GET /api/admin/sagas/summary`: sagas per second, p50 and p99 of the
  sagas that ended in the last minute; in flight, stuck and the oldest's wait by status, with the
  steps each status awaits; dead letters) and its first stuck sagas (`GET /api/admin/sagas/stuck`);
- every service process's `/metrics`: consumer lag per group, outbox backlog, events dead-lettered,
  wallet retries; a process that does not answer is down.
Everything is read on the services' own ports (with the internal secret, and an admin identity for
Order's routes), all at once, each within TIMEOUT_SECONDS."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tinysaga.platform.secrets import SERVICES_WITH_DB, internal_secret
from tinysaga.platform.settings import Settings

WINDOW_SECONDS = 60
STUCK_SHOWN = 8
TIMEOUT_SECONDS = 3.0
SERVICES = (*SERVICES_WITH_DB, "web")  # every service process has a /metrics


@dataclass
class Snapshot:
    summary: dict[str, Any] | None = None  # Order's, None when no replica answered
    stuck: list[dict[str, Any]] = field(default_factory=list)
    lag: dict[tuple[str, str], float] = field(default_factory=dict)  # (service, group) -> records
    outbox: dict[str, tuple[float, float]] = field(default_factory=dict)  # service -> (rows, oldest s)
    dead_lettered: dict[str, float] = field(default_factory=dict)  # service -> events since start
    wallet_retries: float = 0.0
    down: list[str] = field(default_factory=list)  # processes whose /metrics did not answer
    at: float = 0.0  # when it was read (Unix time)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "summary": self.summary,
            "stuck": self.stuck,
            "consumerLag": [
                {"service": service, "group": group, "records": n} for (service, group), n in sorted(self.lag.items())
            ],
            "outboxes": [
                {"service": service, "rows": rows, "oldestSeconds": oldest}
                for service, (rows, oldest) in sorted(self.outbox.items())
            ],
            "deadLettered": dict(sorted(self.dead_lettered.items())),
            "walletRetries": self.wallet_retries,
            "down": self.down,
        }


def service_processes(settings: Settings) -> list[tuple[str, str, str]]:
    """(process, service, base URL) of every service process, named as the stack names them."""
    out = []
    for service in SERVICES:
        n = settings.replicas(service)
        for i in range(1, n + 1):
            out.append((service if n == 1 else f"{service}-{i}", service, settings.service_url(service, i)))
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


async def _metrics(http: httpx.AsyncClient, url: str) -> str | None:
    try:
        r = await http.get(f"{url}/metrics", timeout=TIMEOUT_SECONDS)
        r.raise_for_status()
        return r.text
    except httpx.HTTPError:
        return None


async def _order_figures(
    http: httpx.AsyncClient, url: str, headers: dict[str, str]
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    try:
        summary, stuck = await asyncio.gather(
            http.get(f"{url}/api/admin/sagas/summary", params={"windowSeconds": WINDOW_SECONDS}, headers=headers),
            http.get(f"{url}/api/admin/sagas/stuck", params={"limit": STUCK_SHOWN}, headers=headers),
        )
        summary.raise_for_status()
        stuck.raise_for_status()
        return summary.json(), stuck.json()
    except (httpx.HTTPError, ValueError):
        return None


async def collect(settings: Settings, http: httpx.AsyncClient, admin_id: str = "tiny-saga-top") -> Snapshot:
    """One snapshot of the stack, read as an admin (`admin_id`: who asks Order)."""
    snap = Snapshot(at=time.time())
    procs = service_processes(settings)
    headers = {"x-internal-secret": internal_secret(settings), "x-user-id": admin_id, "x-user-role": "admin"}
    texts = await asyncio.gather(*(_metrics(http, url) for _, _, url in procs))
    for (name, service, _), text in zip(procs, texts, strict=True):
        if text is None:
            snap.down.append(name)
        else:
            read_metrics(snap, service, text)
    for name, service, url in procs:  # the first Order replica that answers
        if service != "order" or name in snap.down:
            continue
        figures = await _order_figures(http, url, headers)
        if figures is not None:
            snap.summary, snap.stuck = figures
            break
    return snap
