"""Toxiproxy (Shopify's TCP proxy made for fault injection): the network faults of a chaos stack.

Built once with `go install` at a pinned version (Go checks the module against its checksum
database) into the cache, like Kafka's jars; run by the supervisor with a config of one proxy per
upstream the services reach over the network: PostgreSQL, Wallet (for Payment) and each Kafka node
(its listener for clients, advertised as the proxy's address). Faults are toxics added and removed
over its HTTP API, or a proxy disabled for a while.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tinysaga.infra import kafka
from tinysaga.infra.postgres import SetupError
from tinysaga.platform.settings import Settings

MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"


def binary(settings: Settings) -> Path:
    return settings.cache / f"toxiproxy-{settings.toxiproxy_version}" / "toxiproxy-server"


def ensure_installed(settings: Settings) -> Path:
    exe = binary(settings)
    if exe.exists():
        return exe
    known = ("/usr/local/go/bin/go", "/usr/lib/go/bin/go")
    go = shutil.which("go") or next((p for p in known if Path(p).exists()), None)
    if go is None:
        raise SetupError("Go is missing: chaos builds Toxiproxy with it (Debian: apt-get install golang-go)")
    tmp = exe.parent / "bin.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    print(f"  building Toxiproxy {settings.toxiproxy_version} with go install ...", flush=True)
    r = subprocess.run(
        [go, "install", f"{MODULE}@v{settings.toxiproxy_version}"],
        env={**os.environ, "GOBIN": str(tmp), "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"},
        capture_output=True,
        text=True,
    )
    if r.returncode != 0 or not (tmp / "server").exists():
        raise SetupError(f"go install {MODULE}@v{settings.toxiproxy_version} failed:\n{(r.stdout + r.stderr)[-3000:]}")
    (tmp / "server").rename(exe)
    shutil.rmtree(tmp, ignore_errors=True)
    return exe


def api_port(settings: Settings) -> int:
    return settings.port_of("toxiproxy")


def proxies(settings: Settings) -> list[dict[str, object]]:
    """name, where the services connect (listen) and where it leads (upstream)."""
    out: list[dict[str, object]] = [
        {
            "name": "postgres",
            "listen": f"127.0.0.1:{settings.port_of('proxy-postgres')}",
            "upstream": f"127.0.0.1:{settings.pg_port}",
        },
        {
            "name": "wallet",
            "listen": f"127.0.0.1:{settings.port_of('proxy-wallet')}",
            "upstream": f"127.0.0.1:{settings.port_of('wallet')}",
        },
    ]
    for i in kafka.node_ids(settings):
        out.append(
            {
                "name": kafka.node_name(settings, i),
                "listen": f"127.0.0.1:{kafka.proxy_port(settings, i)}",
                "upstream": f"127.0.0.1:{kafka.client_listener_port(settings, i)}",
            }
        )
    return [{**p, "enabled": True} for p in out]


def config_path(settings: Settings) -> Path:
    return settings.home / "toxiproxy" / "proxies.json"


def write_config(settings: Settings) -> None:
    path = config_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(proxies(settings), indent=1))


def command(settings: Settings) -> list[str]:
    return [
        str(binary(settings)),
        "-host",
        "127.0.0.1",
        "-port",
        str(api_port(settings)),
        "-config",
        str(config_path(settings)),
    ]


def service_env(settings: Settings) -> dict[str, str]:
    """What the services and the relay are told, so that they reach PostgreSQL, Kafka and Wallet
    through the proxies (the operator's tools keep going straight)."""
    return {
        "TINYSAGA_PG_PORT": str(settings.port_of("proxy-postgres")),
        "TINYSAGA_KAFKA_BOOTSTRAP_SERVERS": ",".join(
            f"127.0.0.1:{kafka.proxy_port(settings, i)}" for i in kafka.node_ids(settings)
        ),
        "TINYSAGA_WALLET_URL": f"http://127.0.0.1:{settings.port_of('proxy-wallet')}",
    }
