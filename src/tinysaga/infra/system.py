"""Set-up steps outside Python: Debian packages, the gateway's config, the demo account."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

from tinysaga.infra.gateway import GatewayConfig, check_config, write_config
from tinysaga.infra.postgres import SetupError
from tinysaga.infra.topology import gateway_config_path
from tinysaga.platform.secrets import internal_secret
from tinysaga.platform.settings import Settings

BINARIES = {"haproxy": "haproxy", "chromium": "chromium"}
_apt_updated = False


def ensure_packages(packages: list[str]) -> None:
    """Install the Debian packages whose program is missing (needs root; says so otherwise)."""
    global _apt_updated
    missing = [p for p in packages if not shutil.which(BINARIES.get(p, p))]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SetupError(f"missing Debian packages {missing}: run `sudo apt-get install -y {' '.join(missing)}`")
    print(f"  installing Debian packages: {' '.join(missing)} ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        _apt_updated = True
    r = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        env=env,
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise SetupError(f"apt-get install {' '.join(missing)} failed:\n{r.stderr[-2000:]}")


def gateway_config(s: Settings) -> GatewayConfig:
    def replicas(service: str) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port_of(service, i)) for i in range(1, s.replicas(service) + 1)]

    return GatewayConfig(
        port=s.gateway_port,
        public_key_path=str(s.secrets_dir / "jwt_public.pem"),
        issuer=s.jwt_issuer,
        internal_secret=internal_secret(s),
        backends={name: replicas(name) for name in ("auth", "order", "wallet", "inventory", "notification", "web")},
        rate_user_per_10s=s.rate_user_per_10s,
        rate_ip_per_10s=s.rate_ip_per_10s,
        rate_auth_per_min=s.rate_auth_per_min,
        max_body_bytes=s.max_body_bytes,
        stats_port=s.port_of("gateway-stats"),
    )


def write_gateway_config(s: Settings) -> Path:
    path = Path(gateway_config_path(s))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_config(gateway_config(s), path)
    try:
        check_config(path)
    except RuntimeError as e:
        raise SetupError(f"the gateway config is invalid: {e}") from e
    return path


def _post(url: str, body: dict, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except HTTPError as e:
        return e.code, {}


def seed_demo_user(s: Settings) -> None:
    """The demo account with some money in its wallet, created once, through the public API."""
    base = f"http://127.0.0.1:{s.gateway_port}/api"
    code, _ = _post(
        f"{base}/auth/register",
        {"email": s.demo_email, "password": s.demo_password, "name": "Demo User", "phone": "+15550100"},
    )
    if code != 201:
        return  # exists already (409) or rate-limited: nothing to seed
    code, tok = _post(f"{base}/auth/token", {"email": s.demo_email, "password": s.demo_password})
    if code == 200:
        _post(f"{base}/wallet/deposits", {"amount": 500}, tok["accessToken"])
