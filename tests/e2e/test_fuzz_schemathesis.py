"""Property-based fuzzing of the public API through the gateway, with Schemathesis.

The schema is the gateway's merged OpenAPI document (`tinysaga.platform.openapi.gateway_openapi`):
every `/api/*` operation of every service, with the errors as they really are (problem+json). For
each operation Schemathesis generates requests that fit the schema (positive) and requests that do
not (negative), sends them through the gateway as a normal signed-in user, and checks every answer:

* no 5xx (`not_a_server_error`);
* the status code is documented (`status_code_conformance`);
* the Content-Type is the documented one (`content_type_conformance`);
* the body matches the documented schema (`response_schema_conformance`).

Every failure is collected (not just the first) and the test fails at the end with one listing of
them all, each with a curl command to replay it.

Left out or limited, on purpose:
* `GET /api/orders/{order_id}/events` is a Server-Sent Events stream (`text/event-stream`, stays open
  until the order ends): it is not a request/response operation to fuzz.
* `POST /api/auth/register` and `POST /api/auth/token` have a per-IP limit per minute at the gateway:
  they get fewer examples, sent from their own loopback addresses so that neither their budget nor
  the one of the user sign-ups of this test (and the rest of the suite) turns into 429s.
* The gateway allows a user 100 requests per 10 s: the calls are spread over several users, a fresh
  one every 80 calls, so 429 stays rare (the test fails if it is more than a few per cent).
* Admin routes answer 403 to the normal user: documented, so fine.

The run is deterministic (a fixed seed) so that it fails until a finding is fixed, not by luck.
Knobs (environment): TINYSAGA_FUZZ_EXAMPLES (per operation, default 30), TINYSAGA_FUZZ_SEED (a
number to replay a run, or `random` to explore; the seed is in the failure listing and the artifact
test-artifacts/fuzz-schemathesis.json, which also has every operation's status codes)."""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis.errors import Unsatisfiable
from requests.adapters import HTTPAdapter
from schemathesis import GenerationMode
from schemathesis.errors import FailureGroup

from tests.support import ApiUser, register
from tinysaga.platform.openapi import PUBLIC_SERVICES, gateway_openapi
from tinysaga.platform.settings import Settings

EXAMPLES = int(os.environ.get("TINYSAGA_FUZZ_EXAMPLES", "30"))
AUTH_EXAMPLES = 20  # sign-up and sign-in: rate limited per IP per minute
NEGATIVE_SHARE = 1 / 3  # of each operation's examples, generated to NOT fit the schema
MAX_429_SHARE = 0.05
REQUEST_TIMEOUT = 15

EVENT_STREAM = ("GET", "/api/orders/{order_id}/events")
RATE_LIMITED_AUTH = {
    ("POST", "/api/auth/register"): "127.0.0.91",
    ("POST", "/api/auth/token"): "127.0.0.92",
}

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]
SAMPLES_PER_FINDING = 3
DEFAULT_SEED = 20251125  # a fixed seed: the same cases every run; TINYSAGA_FUZZ_SEED=random explores

# Values that tend to break the layers below an API (PostgreSQL refuses NUL in text, URL-building
# code resolves dot segments, ...). Random text reaches them only by luck, so every string path,
# query and top-level body field of the schema is bound to this dictionary: Schemathesis puts one of
# them in that field in a share of the cases (only where the value fits the schema in positive
# cases; only where it does not in negative ones).
HOSTILE_STRINGS = ["\u0000", "a\u0000b", ".", "..", "a/b", "%", "%00", "\\", "\u2028"]
HOSTILE_PROBABILITY = 0.25


class _FromAddress(HTTPAdapter):
    """Connections from another loopback address, so the gateway's per-IP limits count them apart."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def _session(address: str | None = None) -> requests.Session:
    s = requests.Session()
    if address:
        s.mount("http://", _FromAddress(address))
    return s


@dataclass
class Users:
    """Normal users, a fresh one every `per_user` calls, to stay under the per-user rate limit."""

    gateway: str
    per_user: int
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))
    current: ApiUser | None = None
    calls: int = 0
    made: int = 0

    def auth(self) -> dict[str, str]:
        if self.current is None or self.calls >= self.per_user:
            self.current = register(self.gateway, tag="fuzz", http=self.http)
            self.calls = 0
            self.made += 1
        self.calls += 1
        return self.current.auth


@dataclass
class Finding:
    operation: str
    kind: str
    samples: list[str] = field(default_factory=list)
    count: int = 0


@dataclass
class Run:
    findings: dict[tuple[str, str], Finding] = field(default_factory=dict)
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    unsatisfiable: list[str] = field(default_factory=list)
    calls: int = 0

    def record(self, operation: str, kind: str, sample: str) -> None:
        f = self.findings.setdefault((operation, kind), Finding(operation, kind))
        f.count += 1
        if len(f.samples) < SAMPLES_PER_FINDING and sample not in f.samples:
            f.samples.append(sample)


def _describe(case: schemathesis.Case, response: schemathesis.Response | None, text: str) -> str:
    lines = [text.strip()]
    if response is not None:
        body = response.text if len(response.text) <= 600 else response.text[:600] + " ..."
        ctype = response.headers.get("content-type", ["?"])
        lines.append(f"-> {response.status_code} {ctype[0] if isinstance(ctype, list) else ctype}: {body}")
    lines.append("request: " + case.as_curl_command())
    return "\n".join(lines)


def _fuzz_operation(
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    examples: int,
    *,
    gateway: str,
    users: Users,
    session: requests.Session,
    run: Run,
    seed: int,
) -> None:
    label = operation.label

    @hypothesis.seed(seed)
    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
        database=None,
        print_blob=False,
        verbosity=hypothesis.Verbosity.quiet,
    )
    # The Authorization header is fixed (the real token is put in at call time): otherwise Schemathesis
    # generates random bearer tokens, or drops the header in negative mode, and the gateway's 401
    # would be all those cases ever reach.
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode, headers={"Authorization": "Bearer <token>"}))
    def fuzz(case: schemathesis.Case) -> None:
        headers = users.auth()
        run.calls += 1
        try:
            response = case.call(base_url=gateway, session=session, headers=headers, timeout=REQUEST_TIMEOUT)
        except requests.RequestException as e:
            run.statuses[label]["error"] += 1
            run.record(label, f"transport error: {type(e).__name__}", _describe(case, None, str(e)))
            return
        run.statuses[label][response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            failures = sorted(group.exceptions, key=lambda f: f.title)
            kind = f"{response.status_code}: " + "; ".join(dict.fromkeys(f.title for f in failures))
            details = "\n".join(f"{f.title}: {f.message}" if f.message else f.title for f in failures)
            run.record(label, kind, _describe(case, response, f"[{mode.value}] {details}"))

    fuzz()


def _is_string(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "string" or any(_is_string(b) for b in schema.get("anyOf", []))


def _resolve(raw: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    return raw["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref.startswith("#/components/schemas/") else schema


def _config(raw: dict[str, Any]) -> schemathesis.Config:
    """Schemathesis settings, not discovered from the working directory: the hostile strings bound
    to every string input of the schema."""
    keys = set()
    for item in raw["paths"].values():
        for op in item.values():
            for p in op.get("parameters", []):
                if p["in"] in ("path", "query") and _is_string(p.get("schema", {})):
                    keys.add(f"{p['in']}.{p['name']}")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                for name, prop in _resolve(raw, body).get("properties", {}).items():
                    if _is_string(prop):
                        keys.add(f"body.{name}")
    binding = {"dictionary": "hostile", "probability": HOSTILE_PROBABILITY}
    return schemathesis.Config.from_dict(
        {
            "dictionaries": {"hostile": {"values": HOSTILE_STRINGS}},
            "parameters": {key: binding for key in sorted(keys)},
            # The listing shows the requests as sent: no secret is in them (the generated cases carry the
            # placeholder `Bearer <token>`; the real token is added at call time).
            "output": {"sanitization": {"enabled": False}},
        }
    )


def _is_excluded(method: str, path: str) -> bool:
    return (method, path) == EVENT_STREAM


def _has_inputs(operation: schemathesis.APIOperation) -> bool:
    """Something to generate invalid values for, besides the (fixed) Authorization header."""
    params = [p for p in operation.iter_parameters() if p.name.lower() != "authorization"]
    return bool(params) or bool(operation.body)


def _artifact(run: Run, seed: int, elapsed: float, users: Users) -> Path:
    folder = Path(os.environ.get("TINYSAGA_TEST_ARTIFACTS", "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fuzz-schemathesis.json"
    path.write_text(
        json.dumps(
            {
                "seed": seed,
                "seconds": round(elapsed, 1),
                "calls": run.calls,
                "users": users.made,
                "no_negative_cases": run.unsatisfiable,
                "statuses": {
                    op: {str(k): v for k, v in sorted(c.items(), key=str)} for op, c in sorted(run.statuses.items())
                },
                "findings": [
                    {"operation": f.operation, "kind": f.kind, "count": f.count, "samples": f.samples}
                    for f in run.findings.values()
                ],
            },
            indent=2,
        )
        + "\n"
    )
    return path


def test_fuzz_public_api_through_the_gateway(gateway: str, settings: Settings) -> None:
    raw = gateway_openapi(settings)
    schema = schemathesis.openapi.from_dict(raw, config=_config(raw))
    wanted = os.environ.get("TINYSAGA_FUZZ_SEED") or str(DEFAULT_SEED)
    seed = random.randrange(2**32) if wanted == "random" else int(wanted)
    per_user = max(10, int(settings.rate_user_per_10s * 0.8))
    users = Users(gateway, per_user=per_user)
    run = Run()
    normal = _session()
    auth_sessions = {key: _session(address) for key, address in RATE_LIMITED_AUTH.items()}
    started = time.monotonic()

    operations = []
    for result in schema.get_all_operations():
        try:
            operations.append(result.ok())
        except Exception as e:  # an operation Schemathesis could not read is a finding of its own
            run.record("schema", "invalid operation", str(e))
    fuzzed = [op for op in operations if not _is_excluded(op.method.upper(), op.path)]
    services = {tag for op in fuzzed for tag in (op.tags or [])}
    missing = set(PUBLIC_SERVICES) - services
    assert not missing, f"no operation of {sorted(missing)} is in the merged schema"

    for op in fuzzed:
        key = (op.method.upper(), op.path)
        total = AUTH_EXAMPLES if key in RATE_LIMITED_AUTH else EXAMPLES
        negative = round(total * NEGATIVE_SHARE) if _has_inputs(op) else 0
        session = auth_sessions.get(key, normal)
        for mode, n in ((GenerationMode.POSITIVE, total - negative), (GenerationMode.NEGATIVE, negative)):
            if n <= 0:
                continue
            try:
                _fuzz_operation(op, mode, n, gateway=gateway, users=users, session=session, run=run, seed=seed)
            except Unsatisfiable:
                # Nothing can be made invalid (e.g. only an unconstrained string in the path): the
                # positive cases cover the operation.
                run.unsatisfiable.append(f"{op.label} ({mode.value})")
            except Exception as e:  # generation itself broke: report it with the rest
                run.record(op.label, f"could not generate {mode.value} cases: {type(e).__name__}", str(e)[:2000])

    elapsed = time.monotonic() - started
    for client in (normal, *auth_sessions.values(), users.http):
        client.close()
    artifact = _artifact(run, seed, elapsed, users)
    limited = sum(c.get(429, 0) for c in run.statuses.values())
    summary = (
        f"{run.calls} calls to {len(fuzzed)} operations in {elapsed:.0f} s as {users.made} users "
        f"(seed {seed}; TINYSAGA_FUZZ_SEED={seed} replays it; details in {artifact})"
    )

    problems = []
    if run.calls and limited > MAX_429_SHARE * run.calls:
        problems.append(f"{limited} of {run.calls} answers were 429: the run is measuring the rate limiter")
    for f in sorted(run.findings.values(), key=lambda f: (f.operation, f.kind)):
        samples = "\n\n".join("    " + s.replace("\n", "\n    ") for s in f.samples)
        problems.append(f"{f.operation}: {f.kind} x{f.count}\n{samples}")
    if problems:
        listing = "\n\n".join(f"{i}. {p}" for i, p in enumerate(problems, 1))
        pytest.fail(f"API fuzzing found {len(problems)} problem(s); {summary}\n\n{listing}", pytrace=False)
    print(summary)
