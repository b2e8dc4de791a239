"""The gateway: HAProxy 2.6's configuration, rendered from `deploy/haproxy/haproxy.cfg.tmpl`.

HAProxy itself verifies the access token (RS256 signature against the auth service's public key,
`alg`, `iss`, `exp`), deletes any identity header a client sent and sets the verified ones plus the
internal secret, applies the rate limits in stick tables, limits body sizes, answers every error
it produces as `application/problem+json`, and balances the replicas with health checks and
retries. No Python runs in the request path: this module only writes and checks the file.

The template is filled with `string.Template` (HAProxy configs are full of braces); a literal
dollar in the template is written `$$`. The parts that are lists (the backends with their servers)
or that must be valid JSON (the problem bodies) are generated here."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from string import Template

REPO_ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = REPO_ROOT / "deploy" / "haproxy" / "haproxy.cfg.tmpl"

# The backends the template routes to; `GatewayConfig.backends` must name exactly these.
SERVICES = ("auth", "order", "wallet", "inventory", "notification", "web")

# Characters that are inert everywhere a value lands in the config (ACL patterns, log-format
# strings of set-header, quoted converter arguments): no space, quote, `%`, `#`, `\`, `$`, `,`, `)`.
_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=:@-]+$")
_SAFE_HOST = re.compile(r"^[A-Za-z0-9.:-]+$")


@dataclass(frozen=True)
class GatewayConfig:
    port: int  # public port, bound on 127.0.0.1
    public_key_path: str  # PEM RSA public key (RS256) of the auth service
    issuer: str  # the expected "iss" claim
    internal_secret: str  # X-Internal-Secret added to every request forwarded to a backend
    backends: dict[str, list[tuple[str, int]]]  # SERVICES -> [(host, port), ...]
    rate_user_per_10s: int = 100  # authenticated /api requests per user (JWT sub) per 10 s
    rate_ip_per_10s: int = 2000  # requests without a verified user, per client IP per 10 s
    rate_auth_per_min: int = 60  # POST /api/auth/register and /api/auth/token per client IP per minute
    max_body_bytes: int = 65536
    maxconn: int = 2000
    stats_port: int | None = 8180  # HAProxy's stats page (CSV at /stats;csv) on 127.0.0.1; None: none
    # Off one machine (deploy/k8s): the public address to bind; the internal secret read by HAProxy
    # from this environment variable when it starts (then `internal_secret` must be empty, and the
    # rendered config holds no secret); and, when > 0, each backend's one (host, port) is a DNS name
    # with one address per replica (a headless Service), resolved at run time into up to this many
    # servers.
    bind_host: str = "127.0.0.1"
    internal_secret_env: str | None = None
    discover_servers: int = 0


def haproxy_binary() -> str:
    """The haproxy program (a hard requirement of the project: Debian's `haproxy` package)."""
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None
    )
    if not found:
        raise RuntimeError("haproxy is not installed: run `sudo apt-get install -y haproxy` (HAProxy 2.6 or newer)")
    return found


# ---- pieces generated in Python ----------------------------------------------------------------------


def _problem_body(status: int, title: str, detail: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    body = json.dumps(
        {"type": f"urn:tinysaga:problem:{slug}", "title": title, "status": status, "detail": detail},
        separators=(",", ":"),
    )
    assert "'" not in body, "a problem body lands in a single-quoted HAProxy string"
    return body


def _problem_return(status: int, title: str, detail: str, *headers: tuple[str, str]) -> str:
    """The arguments of `http-request return` for a problem+json answer."""
    hdrs = "".join(f" hdr {name} {value}" for name, value in (*headers, ("Cache-Control", "no-store")))
    body = _problem_body(status, title, detail)
    return f"status {status} content-type application/problem+json string '{body}'{hdrs}"


# HAProxy's own error answers (bad request line, timeouts, no server, broken server) as problem+json.
ERRORS = {
    400: ("Bad Request", "the request could not be read"),
    403: ("Forbidden", "the request was refused"),
    405: ("Method Not Allowed", "this method is not allowed here"),
    408: ("Request Timeout", "the request took too long to arrive"),
    410: ("Gone", "this resource is gone"),
    413: ("Content Too Large", "the request is too large"),
    425: ("Too Early", "the request was sent too early"),
    429: ("Too Many Requests", "too many requests; retry later"),
    500: ("Internal Server Error", "the gateway failed to handle the request"),
    501: ("Not Implemented", "the gateway does not support this request"),
    502: ("Bad Gateway", "the service gave an invalid answer"),
    503: ("Service Unavailable", "service unavailable"),
    504: ("Gateway Timeout", "the service did not answer in time"),
}


def _http_errors() -> str:
    return "\n".join(
        f"    http-error status {status} content-type application/problem+json "
        f"string '{_problem_body(status, title, detail)}' hdr Cache-Control no-store"
        for status, (title, detail) in ERRORS.items()
    )


def _server_address(host: str, port: int) -> str:
    if not _SAFE_HOST.match(host):
        raise ValueError(f"unsafe backend host for the gateway config: {host!r}")
    if not (isinstance(port, int) and 0 < port < 65536):
        raise ValueError(f"invalid backend port: {port!r}")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _backends(cfg: GatewayConfig) -> str:
    out = []
    for name in SERVICES:
        lines = [
            f"backend {name}",
            "    balance roundrobin",
            "    option httpchk",
            "    http-check send meth GET uri /health/ready ver HTTP/1.1 hdr Host 127.0.0.1"
            f" hdr X-Internal-Secret {_secret_value(cfg)}",
            "    http-check expect status 200",
        ]
        check = (
            "check inter 10s fastinter 250ms downinter 1s fall 2 rise 1 observe layer4 error-limit 1 on-error fastinter"
        )
        if cfg.discover_servers:
            ((host, port),) = cfg.backends[name]
            lines.append(
                f"    server-template {name}- {cfg.discover_servers} {_server_address(host, port)} {check}"
                " resolvers dns resolve-prefer ipv4 init-addr none"
            )
        else:
            lines += [
                f"    server {name}-{i} {_server_address(host, port)} {check}"
                for i, (host, port) in enumerate(cfg.backends[name], 1)
            ]
        out.append("\n".join(lines))
    return "\n\n".join(out)


def _secret_value(cfg: GatewayConfig) -> str:
    """The secret as written in the config: itself, or HAProxy's reference to an environment variable
    (expanded when the config is read; only inside double quotes)."""
    return f'"${{{cfg.internal_secret_env}}}"' if cfg.internal_secret_env else cfg.internal_secret


def _resolvers(cfg: GatewayConfig) -> str:
    if not cfg.discover_servers:
        return "# (no DNS resolvers: every server is a fixed address)"
    return "\n".join(
        [
            "# The replicas behind each backend name, from the cluster's DNS (the pod's resolv.conf);",
            "# a replica that comes or goes is picked up within seconds, without a reload.",
            "resolvers dns",
            "    parse-resolv-conf",
            "    accepted_payload_size 8192",
            "    resolve_retries 3",
            "    timeout resolve 1s",
            "    timeout retry 1s",
            "    hold valid 10s",
            "    hold obsolete 30s",
        ]
    )


def _stats(cfg: GatewayConfig) -> str:
    if cfg.stats_port is None:
        return "# (no stats listener)"
    return "\n".join(
        [
            "# Internal: the state of every backend server (CSV at /stats;csv), for `status` and the tests.",
            "listen stats",
            f"    bind 127.0.0.1:{cfg.stats_port}",
            "    stats enable",
            "    stats uri /stats",
            "    stats refresh 5s",
        ]
    )


def _validate(cfg: GatewayConfig) -> None:
    checked = [("issuer", cfg.issuer), ("public_key_path", cfg.public_key_path)]
    if cfg.internal_secret_env is None:
        checked.append(("internal_secret", cfg.internal_secret))
    elif cfg.internal_secret or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", cfg.internal_secret_env):
        raise ValueError("with internal_secret_env, internal_secret is empty and the name an environment variable's")
    for label, value in checked:
        if not isinstance(value, str) or not _SAFE_TOKEN.match(value):
            raise ValueError(f"unsafe or empty {label} for the gateway config: {value!r}")
    if not _SAFE_HOST.match(cfg.bind_host):
        raise ValueError(f"unsafe bind_host for the gateway config: {cfg.bind_host!r}")
    if cfg.discover_servers and any(len(servers) != 1 for servers in cfg.backends.values()):
        raise ValueError("with discover_servers, every backend is one DNS name (host, port)")
    if set(cfg.backends) != set(SERVICES):
        raise ValueError(f"the gateway needs backends for exactly {sorted(SERVICES)}, got {sorted(cfg.backends)}")
    for name, servers in cfg.backends.items():
        if not servers:
            raise ValueError(f"backend {name!r} has no server")
    for label, value in (
        ("port", cfg.port),
        ("rate_user_per_10s", cfg.rate_user_per_10s),
        ("rate_ip_per_10s", cfg.rate_ip_per_10s),
        ("rate_auth_per_min", cfg.rate_auth_per_min),
        ("max_body_bytes", cfg.max_body_bytes),
        ("maxconn", cfg.maxconn),
        ("discover_servers", cfg.discover_servers or 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")


def render_config(cfg: GatewayConfig) -> str:
    """The text of haproxy.cfg for these settings (reads TEMPLATE)."""
    _validate(cfg)
    limit = cfg.max_body_bytes
    # A whole body of max_body_bytes + 1 must fit in one buffer (next to the headers and HAProxy's
    # rewrite reserve) so that `req.body_size` sees past the limit even for chunked bodies.
    bufsize = max(131072, -(-(limit + 32768) // 16384) * 16384)
    too_many = "Too Many Requests"
    return Template(TEMPLATE.read_text()).substitute(
        bind_host=cfg.bind_host,
        port=cfg.port,
        maxconn=cfg.maxconn,
        global_maxconn=cfg.maxconn + 100,
        bufsize=bufsize,
        public_key_path=os.path.abspath(cfg.public_key_path),
        issuer=cfg.issuer,
        internal_secret=_secret_value(cfg),
        rate_user_per_10s=cfg.rate_user_per_10s,
        rate_ip_per_10s=cfg.rate_ip_per_10s,
        rate_auth_per_min=cfg.rate_auth_per_min,
        max_body_bytes=limit,
        body_wait_bytes=limit + 1,
        http_errors=_http_errors(),
        backends=_backends(cfg),
        stats=_stats(cfg),
        resolvers=_resolvers(cfg),
        backend_empty_acls="\n".join(f"    acl some_backend_empty nbsrv({name}) lt 1" for name in SERVICES),
        backend_counts=",".join(f'"{name}":%[nbsrv({name})]' for name in SERVICES),
        problem_bad_path=_problem_return(404, "Not Found", "no such route"),
        problem_not_found=_problem_return(404, "Not Found", "no such route"),
        problem_too_large=_problem_return(413, "Content Too Large", f"request bodies are limited to {limit} bytes"),
        problem_unauthorized=_problem_return(
            401, "Unauthorized", "a valid access token is required", ("WWW-Authenticate", "Bearer")
        ),
        problem_rate_ip=_problem_return(
            429, too_many, "too many requests from this address; retry after 10 seconds", ("Retry-After", "10")
        ),
        problem_rate_auth=_problem_return(
            429,
            too_many,
            "too many sign-up or sign-in attempts from this address; retry after 60 seconds",
            ("Retry-After", "60"),
        ),
        problem_rate_user=_problem_return(
            429, too_many, "too many requests for this user; retry after 10 seconds", ("Retry-After", "10")
        ),
    )


def check_public_key(path: str) -> None:
    """The key `jwt_verify` will use must be a readable PEM RSA public key ("BEGIN PUBLIC KEY" or
    "BEGIN RSA PUBLIC KEY"; HAProxy 2.6 answers -5 for every token with a certificate there).

    HAProxy 2.6 loads it once, when it starts, and says nothing if it is missing or unreadable: it
    then rejects every token (401). `haproxy -c` does not notice either, hence this check. A new key
    takes a restart (or reload) of HAProxy."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"the gateway's token public key {path} cannot be read: {e}") from e
    try:
        key = load_pem_public_key(data)
    except ValueError as e:
        raise ValueError(f"the gateway's token public key {path} is not a PEM public key: {e}") from e
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"the gateway's token public key {path} is not an RSA key (RS256 needs one)")


def write_config(cfg: GatewayConfig, path: Path) -> Path:
    """Render and write the config (mode 0600: it holds the internal secret); returns `path`."""
    path = Path(path)
    text = render_config(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


_JWT_KEY = re.compile(r'jwt_verify\("RS256","([^"]+)"\)')


def check_config(path: Path) -> None:
    """`haproxy -c -f path`, and the token public key the config names (which `haproxy -c` does
    not look at, see `check_public_key`); RuntimeError with HAProxy's output or the key problem."""
    r = subprocess.run([haproxy_binary(), "-c", "-f", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"haproxy -c -f {path} failed:\n{(r.stdout + r.stderr).strip()}")
    for key_path in sorted(set(_JWT_KEY.findall(Path(path).read_text()))):
        try:
            check_public_key(key_path)
        except ValueError as e:
            raise RuntimeError(str(e)) from e


def server_states(stats_port: int) -> dict[str, str]:
    """{"order-1": "UP", ...} as the gateway's health checks see them (from the stats listener)."""
    import csv
    import io
    from urllib.request import urlopen

    with urlopen(f"http://127.0.0.1:{stats_port}/stats;csv", timeout=2) as r:
        rows = csv.reader(io.StringIO(r.read().decode().lstrip("# ")))
        header = next(rows)
        svname, status = header.index("svname"), header.index("status")
        return {
            row[svname]: row[status] for row in rows if len(row) > status and row[svname] not in ("FRONTEND", "BACKEND")
        }
