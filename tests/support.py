"""Test helpers: a client of the public API through the gateway, the stack's processes, a scratch
stack of its own for a test that needs other settings, and the invariants of SPEC section 4 checked
on the databases and Kafka by `tinysaga.ops.audit`."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
import httpx

from tinysaga.infra import supervisor
from tinysaga.ops import audit
from tinysaga.platform.secrets import superuser_dsn
from tinysaga.platform.settings import REPO_ROOT, Settings

# The saga has ended (SPEC section 4, 3); ON_THE_WAY and DELIVERED follow PLACED.
TERMINAL = {"PLACED", "FAILED", "CANCELED"}
AFTER_PLACED = {"ON_THE_WAY", "DELIVERED"}
AT_REST = TERMINAL | AFTER_PLACED  # anything else (INITIATED, PAYMENT_DONE, REFUND_INITIATED, CANCELING) is in flight
HOLDS_STOCK = {"PLACED", *AFTER_PLACED}  # the orders the stock is taken for


def run_sync(coro: Any) -> Any:
    """Run a coroutine to the end from sync test code, on a thread of its own, so that it works
    whatever event loop the thread already has (Playwright's sync API keeps one running)."""
    import asyncio
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def eventually(pred: Any, timeout: float = 30, what: str = "condition", every: float = 0.3) -> Any:
    """Poll `pred` (gently: the per-user rate limit applies) until it returns something true, and
    return that; for what follows the saga asynchronously, such as a user's notifications."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, f"{what} not met within {timeout} s"
        time.sleep(every)


def unique_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


@dataclass
class ApiUser:
    """A registered, signed-in user talking to the gateway."""

    base: str
    email: str
    password: str
    user_id: str = ""
    token: str = ""
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(self.base + path, headers={**self.auth, **kw.pop("headers", {})}, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.http.post(self.base + path, json=body, headers={**self.auth, **kw.pop("headers", {})}, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.http.put(self.base + path, json=body, headers={**self.auth, **kw.pop("headers", {})}, **kw)

    def cancel(self, order_id: str, **kw: Any) -> httpx.Response:
        return self.post(f"/api/orders/{order_id}/cancel", **kw)

    def burst(self, path: str, n: int, workers: int = 16) -> list[httpx.Response]:
        """n GETs of `path` with `workers` in flight at once. A rate limit counts requests in a
        sliding window; sent one after another, a slow or busy host can spread them past it."""
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda _: self.get(path), range(n)))

    def deposit(self, amount: float | int | str) -> Decimal:
        r = self.post("/api/wallet/deposits", {"amount": amount})
        assert r.status_code == 201, r.text
        return Decimal(str(r.json()["balance"]))

    def balance(self) -> Decimal:
        r = self.get("/api/wallet")
        assert r.status_code == 200, r.text
        return Decimal(str(r.json()["balance"]))

    def order(self, product_id: str, quantity: int = 1, **kw: Any) -> httpx.Response:
        return self.post(
            "/api/orders", {"productId": product_id, "productQuantity": quantity, "paymentType": "WALLET"}, **kw
        )

    def place(self, product_id: str, quantity: int = 1, patience: float = 30) -> str:
        """Order, and come back after Retry-After while the shop is overloaded (ADR 50, 52), as a
        client is told to, for at most `patience` seconds; the order id once accepted."""
        deadline = time.monotonic() + patience
        while is_overloaded(r := self.order(product_id, quantity)) and time.monotonic() < deadline:
            time.sleep(float(r.headers["retry-after"]))
        assert r.status_code == 202, r.text
        return r.json()["orderId"]

    def wait_terminal(self, order_id: str, timeout: float = 60) -> dict[str, Any]:
        """Follow the order's live stream (one request) until it ends in PLACED, FAILED or CANCELED."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                with self.http.stream(
                    "GET",
                    f"{self.base}/api/orders/{order_id}/events",
                    headers=self.auth,
                    timeout=httpx.Timeout(deadline - time.monotonic() + 1),
                ) as r:
                    assert r.status_code == 200, r.read()
                    for line in r.iter_lines():
                        if line.startswith("data:"):
                            last = json.loads(line[5:])
                            if last["orderStatus"] in TERMINAL:
                                return last
            except httpx.ReadTimeout:
                break
        raise AssertionError(f"order {order_id} did not end within {timeout}s; last seen {last}")

    def wait_until(self, order_id: str, pred: Any, timeout: float = 60) -> dict[str, Any]:
        """Poll the order (gently: the per-user rate limit applies) until pred(order) holds."""
        deadline = time.monotonic() + timeout
        o: dict[str, Any] = {}
        while time.monotonic() < deadline:
            o = self.get(f"/api/orders/{order_id}").json()
            if pred(o):
                return o
            time.sleep(0.3)
        raise AssertionError(f"order {order_id}: condition not met within {timeout}s; last {o}")


def register(
    base: str,
    *,
    tag: str = "user",
    password: str = "correct-horse-1",
    phone: str | None = "+15550123",
    http: httpx.Client | None = None,
) -> ApiUser:
    u = ApiUser(base, unique_email(tag), password, http=http or httpx.Client(timeout=30))
    body: dict[str, Any] = {"email": u.email, "password": password, "name": f"Test {tag}"}
    if phone:
        body["phone"] = phone
    r = u.http.post(base + "/api/auth/register", json=body)
    assert r.status_code == 201, r.text
    u.user_id = r.json()["userId"]
    return login(u)


def login(u: ApiUser) -> ApiUser:
    r = u.http.post(u.base + "/api/auth/token", json={"email": u.email, "password": u.password})
    assert r.status_code == 200, r.text
    u.token = r.json()["accessToken"]
    return u


# ---- the stack's processes ---------------------------------------------------------------------


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.s = settings

    def state(self) -> dict[str, Any]:
        return json.loads((self.s.run_dir / "state.json").read_text())["children"]

    def pid(self, name: str) -> int | None:
        return self.state()[name]["pid"]

    def kill9(self, name: str) -> int:
        pid = self.pid(name)
        assert pid, f"{name} is not running"
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_restarted(self, name: str, old_pid: int, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.pid(name)
            if pid and pid != old_pid and self.healthy(name) and self.gateway_sees(name):
                return pid
            time.sleep(0.2)
        raise AssertionError(f"{name} was not restarted healthy within {timeout}s")

    def healthy(self, name: str) -> bool:
        from tinysaga.cli import probe
        from tinysaga.infra.topology import processes

        spec = next(p for p in processes(self.s) if p.name == name)
        return probe(spec.health, self.pid(name))

    def hold(self, name: str) -> None:
        (self.s.run_dir / "hold").mkdir(parents=True, exist_ok=True)
        (self.s.run_dir / "hold" / name).touch()
        supervisor.nudge(self.s)
        deadline = time.monotonic() + 30
        while self.pid(name) is not None:
            assert time.monotonic() < deadline, f"{name} was not stopped"
            time.sleep(0.1)

    def release(self, name: str, wait: bool = True) -> None:
        (self.s.run_dir / "hold" / name).unlink(missing_ok=True)
        supervisor.nudge(self.s)
        deadline = time.monotonic() + 60
        while wait and not (self.pid(name) and self.healthy(name) and self.gateway_sees(name)):
            assert time.monotonic() < deadline, f"{name} did not come back"
            time.sleep(0.2)

    def gateway_sees(self, name: str) -> bool:
        """The gateway's health check has this server up again (not just the process)."""
        from tinysaga.infra.gateway import server_states

        server = name if name[-2:-1] == "-" else f"{name}-1"
        states = server_states(self.s.port_of("gateway-stats"))
        return server not in states or states[server].startswith("UP")


def is_overloaded(r: httpx.Response) -> bool:
    """Order's 503 for no more sagas fitting (ADR 50, 52): nothing was written, come back after
    Retry-After (the gateway's own 503, no server up, is another problem type)."""
    return r.status_code == 503 and r.json().get("type") == "urn:tinysaga:problem:overloaded"


@contextmanager
def scratch_stack(settings: Settings, name: str, port_offset: int, **env: str) -> Iterator[Settings]:
    """A whole stack of its own, as `./tiny-saga up` starts it with `env` on top (e.g. a setting the
    test stack does not have), for one test: its state beside the test stack's, its ports the test
    stack's plus `port_offset` (so that stacks of other clones, offset alike, do not clash), one
    Kafka node. Reset (stopped, its data deleted) afterwards. About a minute to come up."""
    ports = {
        "TINYSAGA_GATEWAY_PORT": settings.gateway_port,
        "TINYSAGA_KAFKA_PORT": settings.kafka_port,
        "TINYSAGA_KAFKA_CONTROLLER_PORT": settings.kafka_controller_port,
        "TINYSAGA_PG_PORT": settings.pg_port,
        "TINYSAGA_SERVICE_PORT_BASE": settings.service_port_base,
    }
    full = {
        **os.environ,
        **{k: str(v + port_offset) for k, v in ports.items()},
        "TINYSAGA_HOME": str(settings.home.parent / name),
        "TINYSAGA_CACHE": str(settings.cache),
        "TINYSAGA_KAFKA_NODES": "1",
        "PYTHONPATH": str(REPO_ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        **env,
    }
    cli = [sys.executable, "-m", "tinysaga.cli"]

    def run(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, command], env=full, capture_output=True, text=True, timeout=400, cwd=REPO_ROOT)

    try:
        up = run("up")
        assert up.returncode == 0, f"the scratch stack {name} did not come up:\n{up.stdout}\n{up.stderr}"
        yield Settings(**{k.removeprefix("TINYSAGA_").lower(): v for k, v in full.items() if k.startswith("TINYSAGA_")})
    finally:
        run("reset")


# ---- the invariants of SPEC section 4 -----------------------------------------------------------


async def fetch(settings: Settings, service: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(superuser_dsn(settings, f"tinysaga_{service}"))
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def rolled_back(settings: Settings, database: str, body: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
    """Run `body` on a connection to `database` (as the superuser) inside a transaction that is
    rolled back at the end, so the running stack never sees what it wrote; its result."""

    async def run() -> Any:
        conn = await asyncpg.connect(superuser_dsn(settings, database))
        try:
            tx = conn.transaction()
            await tx.start()
            try:
                return await body(conn)
            finally:
                await tx.rollback()
        finally:
            await conn.close()

    return run_sync(run())


async def wait_at_rest(settings: Settings, timeout: float = 120) -> None:
    """No saga in flight, nothing left in any outbox or unconsumed in Kafka, no payment pending
    (the same wait as `tiny-saga audit --wait` and `chaos`)."""
    left = await audit.wait_at_rest(settings, timeout)
    if any(left.values()):
        raise AssertionError(f"not at rest after {timeout}s: {left}{await _why_not_at_rest(settings, left)}")


async def _why_not_at_rest(settings: Settings, left: dict[str, int]) -> str:
    """For a failed wait: the consumer groups still behind, and the end of their services' logs
    (the stack, logs and all, is gone once the run ends)."""
    if left.get("consumer lag", 0) <= 0:
        return ""
    try:
        lag = {g: n for g, n in (await audit.consumer_lag(settings)).items() if n}
    except Exception as e:  # the broker itself may be why
        return f"\n(the groups' lag could not be read: {e!r})"
    out = [f"\nconsumer groups behind: {lag}"]
    for group in lag:
        for log in sorted(settings.logs_dir.glob(f"{group}*.log")):
            tail = log.read_text(errors="replace").splitlines()[-40:]
            out.append(f"--- the last {len(tail)} lines of {log.name}:\n" + "\n".join(tail))
    return "\n".join(out)


async def check_invariants(
    settings: Settings, user_ids: list[str] | None = None, product_ids: list[str] | None = None
) -> dict[str, int]:
    """Assert SPEC section 4 on the data at rest with `tiny-saga audit` (only these users' orders
    and wallets when given, and then the stock of `product_ids`, products no one else orders);
    returns counts for the report."""
    report = await audit.audit(settings, users=user_ids, products=product_ids)
    assert report.ok, report.render()
    by_status = report.orders_by_status
    return {
        "orders": sum(by_status.values()),
        "placed": sum(by_status.get(st, 0) for st in HOLDS_STOCK),
        "canceled": by_status.get("CANCELED", 0),
        "failed": by_status.get("FAILED", 0),
    }
