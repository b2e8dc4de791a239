"""The gateway's HAProxy config as rendered from the template: HAProxy accepts it (`haproxy -c`,
no warning), and the settings land where they must. No HAProxy process is started here; the
behaviour through a live gateway is covered by the e2e tests.

HAProxy is a hard requirement of the project: without it these tests fail (they do not skip)."""

from __future__ import annotations

import json
import re
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tinysaga.infra.gateway import (
    SERVICES,
    TEMPLATE,
    GatewayConfig,
    check_config,
    haproxy_binary,
    render_config,
    write_config,
)

SECRET = "unit-Secret_4f9a0c1b2d3e"
ISSUER = "tinysaga-unit"


@pytest.fixture(scope="module")
def key_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("keys") / "jwt_public.pem"
    path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


@pytest.fixture
def cfg(key_path: Path) -> GatewayConfig:
    return GatewayConfig(
        port=18080,
        public_key_path=str(key_path),
        issuer=ISSUER,
        internal_secret=SECRET,
        backends={
            "auth": [("127.0.0.1", 9101)],
            "order": [("127.0.0.1", 9111), ("127.0.0.1", 9112)],
            "wallet": [("127.0.0.1", 9131), ("127.0.0.1", 9132)],
            "inventory": [("127.0.0.1", 9141)],
            "notification": [("127.0.0.1", 9151)],
            "web": [("127.0.0.1", 9161)],
        },
        rate_user_per_10s=37,
        rate_ip_per_10s=1234,
        rate_auth_per_min=11,
        max_body_bytes=5000,
        maxconn=321,
        stats_port=18181,
    )


def haproxy_check(path: Path) -> str:
    r = subprocess.run([haproxy_binary(), "-c", "-f", str(path)], capture_output=True, text=True)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    return out


def lines_with(text: str, *needles: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if all(n in line for n in needles)]


# ---- HAProxy accepts it -----------------------------------------------------------------------------


def test_haproxy_is_installed_and_at_least_2_6() -> None:
    try:
        binary = haproxy_binary()
    except RuntimeError as e:
        pytest.fail(f"HAProxy is required by the project and missing: {e}")
    out = subprocess.run([binary, "-v"], capture_output=True, text=True).stdout
    version = re.search(r"version (\d+)\.(\d+)", out)
    assert version and (int(version[1]), int(version[2])) >= (2, 6), out


def test_rendered_config_passes_haproxy_check_without_warnings(cfg: GatewayConfig, tmp_path: Path) -> None:
    path = write_config(cfg, tmp_path / "gateway" / "haproxy.cfg")
    check_config(path)  # raises with HAProxy's output if not
    out = haproxy_check(path)
    assert "WARNING" not in out and "ALERT" not in out, out


@pytest.mark.parametrize(
    "change",
    [
        {"stats_port": None},
        {"max_body_bytes": 300_000},
        {"backends": {name: [("localhost", 9200 + i), ("::1", 9300 + i)] for i, name in enumerate(SERVICES)}},
        {"maxconn": 1, "rate_user_per_10s": 1, "rate_ip_per_10s": 1, "rate_auth_per_min": 1},
    ],
)
def test_variants_pass_haproxy_check(cfg: GatewayConfig, tmp_path: Path, change: dict) -> None:
    path = write_config(replace(cfg, **change), tmp_path / "haproxy.cfg")
    check_config(path)
    out = haproxy_check(path)
    assert "WARNING" not in out and "ALERT" not in out, out


def test_config_file_is_private(cfg: GatewayConfig, tmp_path: Path) -> None:
    path = write_config(cfg, tmp_path / "haproxy.cfg")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the internal secret
    assert path.read_text() == render_config(cfg)
    assert not list(tmp_path.glob("*.tmp"))


def test_check_config_reports_haproxy_errors(tmp_path: Path) -> None:
    path = tmp_path / "broken.cfg"
    path.write_text("frontend f\n    bind 127.0.0.1:1\n    no-such-directive on\n")
    with pytest.raises(RuntimeError, match="no-such-directive"):
        check_config(path)


def test_check_config_refuses_a_missing_or_unusable_public_key(cfg: GatewayConfig, tmp_path: Path) -> None:
    # HAProxy 2.6 loads the key once at start and, if it cannot, silently rejects every token;
    # `haproxy -c` does not look at it, so check_config does.
    missing = write_config(replace(cfg, public_key_path=str(tmp_path / "nope.pem")), tmp_path / "a.cfg")
    with pytest.raises(RuntimeError, match="nope.pem"):
        check_config(missing)
    ec_key = tmp_path / "ec.pem"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(RuntimeError, match="not an RSA key"):
        check_config(write_config(replace(cfg, public_key_path=str(ec_key)), tmp_path / "b.cfg"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    with pytest.raises(RuntimeError, match="not a PEM public key"):
        check_config(write_config(replace(cfg, public_key_path=str(garbage)), tmp_path / "c.cfg"))


# ---- the settings land where they must ----------------------------------------------------------------


def test_template_is_found_from_the_repo_root() -> None:
    assert TEMPLATE.is_file() and TEMPLATE.parts[-3:] == ("deploy", "haproxy", "haproxy.cfg.tmpl")


def test_no_placeholder_is_left(cfg: GatewayConfig) -> None:
    config = [line for line in render_config(cfg).splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in config if "${" in line or "$$" in line]


def test_bind_and_maxconn(cfg: GatewayConfig) -> None:
    text = render_config(cfg)
    assert lines_with(text, "bind 127.0.0.1:18080")
    assert "maxconn 321" in lines_with(text, "maxconn")
    assert lines_with(text, "bind 127.0.0.1:18181")  # the stats listener
    assert not lines_with(render_config(replace(cfg, stats_port=None)), "stats enable")


def test_internal_secret_is_sent_to_every_backend_and_to_health_checks(cfg: GatewayConfig) -> None:
    text = render_config(cfg)
    assert lines_with(text, "http-request set-header X-Internal-Secret", SECRET)
    assert len(lines_with(text, "http-check send", f"hdr X-Internal-Secret {SECRET}")) == len(SERVICES)
    for header in ("X-User-Id", "X-User-Role", "X-Internal-Secret", "X-Forwarded-User"):
        assert lines_with(text, f"http-request del-header {header}"), header


def test_a_client_cannot_choose_the_trace_of_its_request(cfg: GatewayConfig) -> None:
    # ADR 42: the order's trace starts at the gateway-facing service, sampled by our setting only
    text = render_config(cfg)
    for header in ("traceparent", "tracestate"):
        assert lines_with(text, f"http-request del-header {header}"), header


def test_token_checks_use_the_issuer_the_key_and_only_rs256(cfg: GatewayConfig, key_path: Path) -> None:
    text = render_config(cfg)
    assert lines_with(text, "acl jwt_iss_ok", f"-m str {ISSUER}")
    assert lines_with(text, f'jwt_verify("RS256","{key_path}")')
    assert lines_with(text, "acl jwt_alg_ok", "-m str RS256")
    assert lines_with(text, "jwt_header_query('$.alg')")
    assert lines_with(text, "sub(txn.now)") and lines_with(text, "jwt_ttl", "-m int gt 0")
    assert lines_with(text, "req.cook(access_token)")


def test_backends_have_every_server_with_health_checks(cfg: GatewayConfig) -> None:
    text = render_config(cfg)
    for name, servers in cfg.backends.items():
        assert lines_with(text, f"backend {name}"), name
        assert lines_with(text, f"use_backend {name}") or name == "web"
        for i, (host, port) in enumerate(servers, 1):
            (line,) = lines_with(text, f"server {name}-{i} {host}:{port} ")
            assert "check" in line and "inter 10s" in line and "fall 2" in line and "rise 1" in line
    assert lines_with(text, "default_backend web")
    assert lines_with(text, "http-check send meth GET uri /health/ready")
    assert len(lines_with(text, "balance roundrobin")) == len(SERVICES)
    assert lines_with(text, "retry-on conn-failure") and lines_with(text, "option redispatch")
    assert lines_with(text, "http-request disable-l7-retry")


def test_health_backends_watches_every_backend(cfg: GatewayConfig) -> None:
    text = render_config(cfg)
    for name in SERVICES:
        assert lines_with(text, "acl some_backend_empty", f"nbsrv({name}) lt 1"), name
        assert len(lines_with(text, f'"{name}":%[nbsrv({name})]')) == 2, name  # the 503 and the 200 answers


def test_limits_land_in_their_rules(cfg: GatewayConfig) -> None:
    text = render_config(cfg)
    assert lines_with(text, "problem_rate") == []  # all filled in
    (ip_rule,) = lines_with(text, "http-request return status 429", "sc_http_req_rate(0) gt 1234")
    (auth_rule,) = lines_with(text, "http-request return status 429", "sc_http_req_rate(1) gt 11")
    (user_rule,) = lines_with(text, "http-request return status 429", "sc_http_req_rate(2) gt 37")
    assert "hdr Retry-After 10" in ip_rule and "hdr Retry-After 10" in user_rule
    assert "hdr Retry-After 60" in auth_rule
    assert lines_with(text, "track-sc2 var(txn.jwt_sub) table rate_user")  # per user, not per IP
    assert lines_with(text, "stick-table", "http_req_rate(10s)")
    assert lines_with(text, "stick-table", "http_req_rate(60s)")
    too_large = lines_with(text, "http-request return status 413")
    assert any("req.hdr_val(content-length) gt 5000" in line for line in too_large)
    assert any("req.body_size gt 5000" in line for line in too_large)
    assert lines_with(text, "wait-for-body", "at-least 5001")


def test_buffer_holds_a_body_over_the_limit(cfg: GatewayConfig) -> None:
    for limit in (5000, 65536, 300_000):
        text = render_config(replace(cfg, max_body_bytes=limit))
        (line,) = lines_with(text, "tune.bufsize")
        assert int(line.split()[-1]) >= max(131072, limit + 16384), line


def test_every_problem_answer_is_valid_problem_json(cfg: GatewayConfig) -> None:
    text = render_config(cfg)
    answers = [
        line
        for line in text.splitlines()
        if re.search(r"^\s*(http-request return|http-error) ", line) and "problem+json" in line
    ]
    assert len(answers) >= 10
    statuses = set()
    for line in answers:
        status = int(re.search(r"status (\d+)", line)[1])
        raw = re.search(r"(?:lf-)?string '([^']*)'", line)[1]
        body = json.loads(re.sub(r"%\[[^\]]*\]", "0", raw))  # lf-string fetches -> numbers
        assert body["status"] == status and body["title"] and body["detail"], line
        assert body["type"].startswith("urn:tinysaga:problem:") or body["type"] == "about:blank", line
        statuses.add(status)
    assert {401, 404, 413, 429, 502, 503, 504} <= statuses
    (unavailable,) = [line for line in answers if line.strip().startswith("http-error status 503")]
    assert '"detail":"service unavailable"' in unavailable
    # every answer of the gateway itself names its content type
    for line in lines_with(text, "http-request return"):
        assert "content-type application/problem+json" in line or "content-type application/json" in line, line


def test_public_routes_and_internal_routes(cfg: GatewayConfig) -> None:
    text = render_config(cfg)
    (anonymous,) = lines_with(text, "acl auth_anonymous")
    assert "/api/auth/register" in anonymous and "/api/auth/token" in anonymous
    assert lines_with(text, "acl catalogue", "^/api/products(/|$)")
    (internal,) = lines_with(text, "acl internal_route")
    assert "internal" in internal and "health" in internal


# ---- bad input is refused before HAProxy sees it ---------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("internal_secret", "has space"),
        ("internal_secret", "quote'"),
        ("internal_secret", "per%cent"),
        ("internal_secret", ""),
        ("issuer", "a b"),
        ("issuer", "x#y"),
        ("public_key_path", "/tmp/with space.pem"),
        ("public_key_path", '/tmp/q".pem'),
    ],
)
def test_unsafe_values_are_refused(cfg: GatewayConfig, field: str, value: str) -> None:
    with pytest.raises(ValueError):
        render_config(replace(cfg, **{field: value}))


def test_backends_must_be_the_six_services_each_with_a_server(cfg: GatewayConfig) -> None:
    missing = {k: v for k, v in cfg.backends.items() if k != "web"}
    with pytest.raises(ValueError, match="backends"):
        render_config(replace(cfg, backends=missing))
    with pytest.raises(ValueError, match="backends"):
        render_config(replace(cfg, backends={**cfg.backends, "payment": [("127.0.0.1", 1)]}))
    with pytest.raises(ValueError, match="no server"):
        render_config(replace(cfg, backends={**cfg.backends, "order": []}))
    with pytest.raises(ValueError):
        render_config(replace(cfg, backends={**cfg.backends, "order": [("127.0.0.1 x", 1)]}))
    with pytest.raises(ValueError):
        render_config(replace(cfg, backends={**cfg.backends, "order": [("127.0.0.1", 70000)]}))


@pytest.mark.parametrize(
    "field", ["port", "rate_user_per_10s", "rate_ip_per_10s", "rate_auth_per_min", "max_body_bytes", "maxconn"]
)
def test_numbers_must_be_positive(cfg: GatewayConfig, field: str) -> None:
    with pytest.raises(ValueError):
        render_config(replace(cfg, **{field: 0}))


@pytest.mark.parametrize(
    "path",
    [
        "/api/admin/sagas/stuck",
        "/api/admin/dead-letters/replay",
        "/api/admin/orders/6f1c2a1e-0000-4000-8000-000000000000/refund-retry",
        "/api/admin/orders/6f1c2a1e-0000-4000-8000-000000000000/saga",
        "/api/orders/6f1c2a1e-0000-4000-8000-000000000000/saga",
        "/api/saga/definition",
    ],
)
def test_the_operators_routes_go_to_order(cfg: GatewayConfig, path: str) -> None:
    import re

    text = render_config(cfg)
    (to_order,) = lines_with(text, "acl to_order")
    (internal,) = lines_with(text, "acl internal_route")
    assert re.search(to_order.split(" -m reg ")[1].strip(), path)
    assert not re.search(internal.split(" -m reg ")[1].strip(), path)
    assert re.search(internal.split(" -m reg ")[1].strip(), "/metrics")  # never routed: internal only


def test_the_operations_figures_go_to_web_and_nothing_else_of_admin_does(cfg: GatewayConfig) -> None:
    import re

    text = render_config(cfg)
    (to_web,) = lines_with(text, "acl to_web ")
    pattern = to_web.split(" -m reg ")[1].strip()
    assert re.search(pattern, "/api/admin/operations")
    for other in ("/api/admin/operations/x", "/api/admin/orders", "/api/admin/sagas/summary", "/api/operations"):
        assert not re.search(pattern, other), other
    assert "use_backend web if api_docs || to_web" in text
    (not_found,) = [line for line in lines_with(text, "if is_api !to_auth")]
    assert "!to_web" in not_found
