"""The gateway: HAProxy's configuration, rendered from `deploy/haproxy/haproxy.cfg.tmpl`.

HAProxy itself verifies the access token (RS256 signature against the auth service's public key,
`alg`, `iss`, `exp`), sets the identity headers the services trust (after deleting any a client
sent), applies the rate limits in stick tables, limits body size, and balances the replicas with
health checks. No Python runs in the request path."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from string import Template

REPO_ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = REPO_ROOT / "deploy" / "haproxy" / "haproxy.cfg.tmpl"


@dataclass(frozen=True)
class GatewayConfig:
    port: int
    public_key_path: str
    issuer: str
    internal_secret: str
    backends: dict[str, list[tuple[str, int]]]
    rate_user_per_10s: int = 100
    rate_ip_per_10s: int = 2000
    rate_auth_per_min: int = 60
    max_body_bytes: int = 65536
    maxconn: int = 2000
    stats_port: int = 8180


def _problem_http(status: int, reason: str, detail: str) -> str:
    body = (
        f'{{"type":"urn:tinysaga:problem:{reason.lower().replace(" ", "-")}","title":"{reason}",'
        f'"status":{status},"detail":"{detail}"}}'
    )
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}"
    )


ERROR_PAGES = {
    400: ("Bad Request", "the request could not be read"),
    408: ("Request Timeout", "the request took too long to arrive"),
    502: ("Bad Gateway", "the service gave an invalid answer"),
    503: ("Service Unavailable", "service unavailable; try again shortly"),
    504: ("Gateway Timeout", "the service did not answer in time"),
}


def _backends(cfg: GatewayConfig) -> str:
    out = []
    for name, servers in cfg.backends.items():
        lines = [
            f"backend {name}",
            "    balance roundrobin",
            "    option httpchk",
            "    http-check send meth GET uri /health/ready",
        ]
        lines += [f"    server {name}-{i} {host}:{port} check" for i, (host, port) in enumerate(servers, 1)]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def render_config(cfg: GatewayConfig, errors_dir: Path) -> str:
    for v in (cfg.issuer, cfg.internal_secret, cfg.public_key_path):
        if any(c in v for c in " '\"\\\n#"):
            raise ValueError(f"unsafe value for the gateway config: {v!r}")
    return Template(TEMPLATE.read_text()).substitute(
        port=cfg.port,
        maxconn=cfg.maxconn,
        public_key_path=cfg.public_key_path,
        issuer=cfg.issuer,
        internal_secret=cfg.internal_secret,
        rate_user_per_10s=cfg.rate_user_per_10s,
        rate_ip_per_10s=cfg.rate_ip_per_10s,
        rate_auth_per_min=cfg.rate_auth_per_min,
        max_body_bytes=cfg.max_body_bytes,
        errors_dir=errors_dir,
        stats_port=cfg.stats_port,
        backends=_backends(cfg),
        backends_down=" or ".join(
            f"is_health_backends {{ nbsrv({name}) lt {len(servers)} }}" for name, servers in cfg.backends.items()
        ),
    )


def write_config(cfg: GatewayConfig, path: Path) -> Path:
    errors_dir = path.parent / "errors"
    errors_dir.mkdir(parents=True, exist_ok=True)
    for status, (reason, detail) in ERROR_PAGES.items():
        (errors_dir / f"{status}.http").write_text(_problem_http(status, reason, detail))
    path.write_text(render_config(cfg, errors_dir))
    path.chmod(0o600)  # it holds the internal secret
    return path


def server_states(stats_port: int) -> dict[str, str]:
    """{"order-1": "UP", ...} as the gateway's health checks see them."""
    import csv
    import io
    from urllib.request import urlopen

    with urlopen(f"http://127.0.0.1:{stats_port}/stats;csv", timeout=2) as r:
        rows = csv.reader(io.StringIO(r.read().decode()))
        header = next(rows)
        svname, status = header.index("svname"), header.index("status")
        return {row[svname]: row[status] for row in rows if row[svname] not in ("FRONTEND", "BACKEND")}


def check_config(path: Path) -> None:
    r = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError((r.stdout + r.stderr).strip())
