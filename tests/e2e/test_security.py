"""Hostile input and abuse through the gateway: every case answers with the right problem+json,
nothing is written, and the invariants still hold afterwards."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from decimal import Decimal

import httpx
import pytest

from tests.e2e.test_foundation import assert_problem
from tests.support import ApiUser, check_invariants, register, run_sync, wait_at_rest
from tinysaga.platform.settings import Settings


def from_ip(ip: str) -> httpx.Client:
    """A client whose connections come from another loopback address (the per-IP limits see it)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=ip), timeout=30)


# ---- malformed and invalid input --------------------------------------------------------------------


def test_malformed_json_is_400(user: ApiUser) -> None:
    for path in ("/api/orders", "/api/wallet/deposits"):
        r = user.http.post(
            user.base + path, content=b'{"productId": "x",', headers={**user.auth, "Content-Type": "application/json"}
        )
        assert_problem(r, 400)


def test_not_json_is_415(user: ApiUser) -> None:
    r = user.http.post(
        user.base + "/api/orders",
        content=b"productId=x",
        headers={**user.auth, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_problem(r, 415)


def test_body_over_64_kib_is_413_even_when_chunked(user: ApiUser) -> None:
    big = b'{"amount": 1, "pad": "' + b"x" * 70000 + b'"}'
    r = user.http.post(
        user.base + "/api/wallet/deposits", content=big, headers={**user.auth, "Content-Type": "application/json"}
    )
    assert_problem(r, 413)

    def chunks():
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    r = user.http.post(
        user.base + "/api/wallet/deposits", content=chunks(), headers={**user.auth, "Content-Type": "application/json"}
    )
    assert_problem(r, 413)
    assert user.balance() == 0


@pytest.mark.parametrize(
    "body, field",
    [
        ({"productId": "sku-keyboard", "productQuantity": 0, "paymentType": "WALLET"}, "productQuantity"),
        ({"productId": "sku-keyboard", "productQuantity": 101, "paymentType": "WALLET"}, "productQuantity"),
        ({"productId": "sku-keyboard", "productQuantity": 1.5, "paymentType": "WALLET"}, "productQuantity"),
        ({"productId": "sku-keyboard", "productQuantity": "2", "paymentType": "WALLET"}, "productQuantity"),
        ({"productId": "sku-keyboard", "productQuantity": 1, "paymentType": "BITCOIN"}, "paymentType"),
        ({"productId": "x" * 65, "productQuantity": 1, "paymentType": "WALLET"}, "productId"),
        ({"productQuantity": 1, "paymentType": "WALLET"}, "productId"),
        ([1, 2, 3], "body"),
    ],
)
def test_invalid_orders_are_422_field_by_field(rich_user: ApiUser, body, field: str) -> None:
    r = rich_user.post("/api/orders", body)
    problem = assert_problem(r, 422)
    assert field in {e["field"] for e in problem["errors"]}, problem
    assert rich_user.get("/api/orders").json() == []


@pytest.mark.parametrize("amount", [0, -1, 10000.01, 0.001, 1e308, "NaN", "Infinity", None, True, "12,50"])
def test_invalid_deposits_are_422(user: ApiUser, amount) -> None:
    problem = assert_problem(user.post("/api/wallet/deposits", {"amount": amount}), 422)
    assert "amount" in {e["field"] for e in problem["errors"]}
    assert user.balance() == 0


def test_registration_validation(gateway: str) -> None:
    c = httpx.Client(base_url=gateway)
    cases = [
        ({"email": "a@b", "password": "longenough", "name": "A"}, "email"),
        ({"email": "ok@example.com", "password": "short", "name": "A"}, "password"),
        ({"email": "ok@example.com", "password": "longenough", "name": "A" * 101}, "name"),
        ({"email": "ok@example.com", "password": "longenough", "name": "   "}, "name"),
        ({"email": "ok@example.com", "password": "longenough", "name": "A", "phone": "call me"}, "phone"),
    ]
    for body, field in cases:
        problem = assert_problem(c.post("/api/auth/register", json=body), 422)
        assert field in {e["field"] for e in problem["errors"]}, (body, problem)


def test_unknown_ids_are_404(user: ApiUser, admin: ApiUser) -> None:
    assert_problem(user.get("/api/orders/00000000-0000-0000-0000-000000000000"), 404)
    assert_problem(user.get("/api/orders/%2e%2e%2f%2e%2e%2fetc%2fpasswd"), 404)
    assert_problem(user.get("/api/no-such-route"), 404)
    assert_problem(admin.put("/api/admin/products/no-such/stock", {"availableCount": 1}), 404)
    assert_problem(user.get("/api/checkout/quote", params={"productId": "nope", "quantity": 1}), 404)


def test_bad_query_parameters_are_422(user: ApiUser) -> None:
    assert_problem(user.get("/api/orders", params={"limit": 0}), 422)
    assert_problem(user.get("/api/orders", params={"limit": "many"}), 422)
    assert_problem(user.get("/api/orders", params={"cursor": "garbage!"}), 422)
    assert_problem(user.get("/api/checkout/quote", params={"productId": "sku-keyboard", "quantity": 0}), 422)


# ---- identity and ownership -----------------------------------------------------------------------


def test_nobody_reads_or_acts_on_another_users_things(gateway: str, product) -> None:
    a, b = register(gateway, tag="owner"), register(gateway, tag="other")
    a.deposit(20)
    oid = a.place(product(stock=2, price="5.00"))
    a.wait_terminal(oid)
    for path in (f"/api/orders/{oid}", f"/api/orders/{oid}/history", f"/api/orders/{oid}/events"):
        assert_problem(b.get(path), 404)
    assert b.get("/api/orders").json() == []
    assert b.get("/api/notifications").json() == []
    assert b.get("/api/wallet/transactions").json() == []
    assert b.get("/api/wallet").json()["balance"] == 0
    assert_problem(b.get("/api/admin/sagas"), 403)
    assert_problem(b.get("/api/admin/dead-letters"), 403)


def test_passwords_are_never_logged(gateway: str, settings: Settings) -> None:
    secret = "Sup3r-Secret-Passw0rd-xyzzy"
    u = register(gateway, password=secret)
    httpx.post(gateway + "/api/auth/token", json={"email": u.email, "password": secret + "wrong"})
    for log in settings.logs_dir.glob("*.log"):
        assert secret not in log.read_text(errors="replace"), f"password found in {log.name}"


# ---- idempotency -----------------------------------------------------------------------------------


def test_deposit_idempotency_key(user: ApiUser, gateway: str) -> None:
    key = {"Idempotency-Key": "top-up-1"}
    r1 = user.post("/api/wallet/deposits", {"amount": 10}, headers=key)
    r2 = user.post("/api/wallet/deposits", {"amount": 10}, headers=key)
    assert r1.status_code == r2.status_code == 201
    assert r1.json()["transactionId"] == r2.json()["transactionId"]
    assert_problem(user.post("/api/wallet/deposits", {"amount": 11}, headers=key), 422)
    assert user.balance() == Decimal("10.00")
    other = register(gateway)
    assert other.post("/api/wallet/deposits", {"amount": 3}, headers=key).status_code == 201
    assert other.balance() == Decimal("3.00")


# ---- rate limits ------------------------------------------------------------------------------------


def test_one_users_burst_is_limited_and_never_limits_another(gateway: str, settings: Settings) -> None:
    a, b = register(gateway, tag="burst"), register(gateway, tag="calm")
    b_codes: list[int] = []
    stop = threading.Event()

    def calm() -> None:
        # a calm user: well under its own limit (at most 60 requests, 20 a second), whatever A does
        while not stop.is_set() and len(b_codes) < 60:
            b_codes.append(b.get("/api/wallet").status_code)
            time.sleep(0.05)

    t = threading.Thread(target=calm)
    t.start()
    try:
        burst = a.burst("/api/wallet", 200)
    finally:
        stop.set()
        t.join()
    codes = [r.status_code for r in burst]
    limited = [r for r in burst if r.status_code == 429]
    assert all(r.headers["content-type"].startswith("application/problem+json") for r in limited)
    retry_after = [r.headers.get("retry-after", "") for r in limited]
    assert 429 in codes and codes.count(200) <= settings.rate_user_per_10s + 8
    assert retry_after and all(v.isdigit() and int(v) > 0 for v in retry_after)
    assert b_codes and set(b_codes) == {200}


def test_login_and_register_are_limited_per_client_ip(gateway: str, settings: Settings) -> None:
    limit = settings.rate_auth_per_min
    limited = from_ip("127.0.0.77")
    codes = []
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(
                lambda _: limited.post(gateway + "/api/auth/register", json={"email": "x"}).status_code,
                range(limit + 10),
            )
        )
    assert codes.count(429) >= 10 - 2
    r = limited.post(gateway + "/api/auth/token", json={"email": "a@example.com", "password": "whatever1"})
    assert_problem(r, 429)
    assert int(r.headers["retry-after"]) >= 1
    # another address is not affected
    other = from_ip("127.0.0.78").post(
        gateway + "/api/auth/token", json={"email": "a@example.com", "password": "whatever1"}
    )
    assert other.status_code == 401


def test_a_flood_from_one_user_does_not_stop_anothers_saga(gateway: str, product, settings: Settings) -> None:
    flooder, shopper = register(gateway, tag="flood"), register(gateway, tag="shopper")
    shopper.deposit(10)
    pid = product(stock=2, price="4.00")
    stop = threading.Event()
    seen: list[int] = []

    def flood() -> None:
        with httpx.Client(timeout=10, limits=httpx.Limits(max_connections=16)) as c:
            n = 0
            while not stop.is_set() and n < 3000:  # bounded
                seen.append(c.get(gateway + "/api/orders", headers=flooder.auth).status_code)
                n += 1

    threads = [threading.Thread(target=flood) for _ in range(8)]  # in flight at once: a slow host still floods
    for t in threads:
        t.start()
    try:
        import time

        deadline = time.monotonic() + 60
        while 429 not in seen:  # the flood is on and already being limited
            assert time.monotonic() < deadline, "the flood never reached the limit"
            time.sleep(0.05)
        oid = shopper.place(pid)
        final = shopper.wait_terminal(oid)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert final["orderStatus"] == "PLACED"
    assert 429 in seen
    run_sync(wait_at_rest(settings))
    run_sync(check_invariants(settings, [shopper.user_id, flooder.user_id]))
