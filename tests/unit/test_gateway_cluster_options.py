"""The gateway config's options for a cluster (deploy/k8s): bind every address, the internal secret
read by HAProxy from its environment (so the rendered file holds none), and backends that are DNS
names resolved at run time into one server per replica. Without them the config is the local one."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from tests.unit.test_gateway_config import ISSUER, SECRET, cfg, key_path, lines_with  # noqa: F401 (fixtures)
from tinysaga.infra.gateway import SERVICES, GatewayConfig, check_public_key, haproxy_binary, render_config

ENV = "TINYSAGA_UNIT_SECRET"


@pytest.fixture
def cluster(cfg: GatewayConfig) -> GatewayConfig:  # noqa: F811
    return replace(
        cfg,
        internal_secret="",
        internal_secret_env=ENV,
        bind_host="0.0.0.0",
        discover_servers=4,
        backends={name: [(f"{name}-pods.shop.svc.cluster.local", 9100 + i)] for i, name in enumerate(SERVICES)},
    )


def haproxy_check(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != ENV}
    return subprocess.run(
        [haproxy_binary(), "-c", "-f", str(path)], env={**clean, **env}, capture_output=True, text=True
    )


def test_the_local_config_has_no_resolvers_and_binds_loopback(cfg: GatewayConfig) -> None:  # noqa: F811
    text = render_config(cfg)
    assert not lines_with(text, "resolvers dns") and not lines_with(text, "server-template")
    assert lines_with(text, "bind 127.0.0.1:18080")


def test_the_cluster_config_passes_haproxy_check_with_the_secret_in_the_environment(
    cluster: GatewayConfig, tmp_path: Path
) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(render_config(cluster))
    check_public_key(cluster.public_key_path)
    r = haproxy_check(path, {ENV: "from-the-environment"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "WARNING" not in r.stdout + r.stderr
    missing = haproxy_check(path, {})
    assert missing.returncode != 0, "without the secret the gateway must not start"


def test_the_cluster_config_holds_no_secret_but_refers_to_the_variable(cluster: GatewayConfig) -> None:
    text = render_config(cluster)
    assert SECRET not in text
    assert lines_with(text, "http-request set-header X-Internal-Secret", f'"${{{ENV}}}"')
    assert len(lines_with(text, "http-check send", f'hdr X-Internal-Secret "${{{ENV}}}"')) == len(SERVICES)
    assert lines_with(text, "bind 0.0.0.0:18080")
    assert lines_with(text, "bind 127.0.0.1:18181")  # the stats listener stays in the pod


def test_each_backend_is_one_dns_name_resolved_into_servers(cluster: GatewayConfig) -> None:
    text = render_config(cluster)
    assert lines_with(text, "resolvers dns") and lines_with(text, "parse-resolv-conf")
    for i, name in enumerate(SERVICES):
        (line,) = lines_with(text, f"server-template {name}- 4 {name}-pods.shop.svc.cluster.local:{9100 + i} ")
        assert "resolvers dns" in line and "init-addr none" in line and "check" in line and "fall 2" in line


@pytest.mark.parametrize(
    "change",
    [
        {"internal_secret": SECRET},  # both a secret and a variable
        {"internal_secret_env": "lower-case"},
        {"internal_secret_env": 'X" hdr Evil 1'},
        {"bind_host": "0.0.0.0 ssl"},
        {"discover_servers": -1},
        {"backends": {name: [("a.svc", 1), ("b.svc", 2)] for name in SERVICES}},
    ],
)
def test_unsafe_cluster_options_are_refused(cluster: GatewayConfig, change: dict) -> None:
    with pytest.raises(ValueError):
        render_config(replace(cluster, **change))
