"""What runs: every process of the stack, its command, port and health check."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from tinysaga.infra import kafka, toxiproxy
from tinysaga.platform.settings import REPO_ROOT, Settings


@dataclass(frozen=True)
class ProcSpec:
    name: str
    argv: list[str]
    port: int | None
    health: str | None  # "http://..." (must answer 200) or "tcp:PORT"; None: alive is enough
    stop_order: int = 1  # lower stops first
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = str(REPO_ROOT)


def gateway_config_path(settings: Settings) -> str:
    return str(settings.home / "gateway" / "haproxy.cfg")


def processes(settings: Settings) -> list[ProcSpec]:
    py = sys.executable
    # a chaos stack: the services and the relay reach PostgreSQL, Kafka and Wallet through Toxiproxy
    proxied = toxiproxy.service_env(settings) if settings.fault_proxy else {}
    procs = [
        ProcSpec(
            kafka.node_name(settings, i),
            kafka.command(settings, i),
            settings.kafka_node_port(i),
            f"tcp:{settings.kafka_node_port(i)}",
            stop_order=9,
        )
        for i in kafka.node_ids(settings)
    ]
    procs += [
        ProcSpec("relay", [py, "-m", "tinysaga.platform.relay"], None, None, stop_order=5, env=proxied),
        ProcSpec(
            "smtp-sink",
            [py, "-m", "tinysaga.notification.smtp_sink"],
            settings.effective_smtp_port,
            f"tcp:{settings.effective_smtp_port}",
            stop_order=5,
        ),
        ProcSpec(
            "gateway",
            ["haproxy", "-db", "-f", gateway_config_path(settings)],
            settings.gateway_port,
            f"http://127.0.0.1:{settings.gateway_port}/health",
            stop_order=0,
        ),
    ]
    if settings.fault_proxy:
        port = toxiproxy.api_port(settings)
        procs.append(
            ProcSpec("toxiproxy", toxiproxy.command(settings), port, f"http://127.0.0.1:{port}/version", stop_order=8)
        )
    for service in ("auth", "order", "payment", "wallet", "inventory", "notification", "web"):
        n = settings.replicas(service)
        for i in range(1, n + 1):
            name = service if n == 1 else f"{service}-{i}"
            port = settings.port_of(service, i)
            procs.append(
                ProcSpec(
                    name,
                    [py, "-m", f"tinysaga.{service}", "--port", str(port)],
                    port,
                    f"http://127.0.0.1:{port}/health/ready",
                    env=proxied,
                )
            )
    return procs
