"""The foundation through the gateway: identity, catalogue, wallet, the gateway's own checks."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import httpx
import jwt
import orjson

from tests.support import ApiUser, register, unique_email
from tinysaga.platform.settings import Settings

PROBLEM = "application/problem+json"


def assert_problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    body = r.json()
    assert body["status"] == status and body["title"] and "detail" in body and "type" in body
    assert "Traceback" not in r.text
    return body


def test_register_login_and_new_wallet_is_empty(gateway: str) -> None:
    u = register(gateway)
    assert uuid.UUID(u.user_id)
    w = u.get("/api/wallet").json()
    assert w == {"userId": u.user_id, "balance": 0, "currency": "USD"}


def test_token_sets_an_httponly_strict_cookie_that_authenticates(gateway: str) -> None:
    u = register(gateway)
    c = httpx.Client(base_url=gateway)
    r = c.post("/api/auth/token", json={"email": u.email, "password": u.password})
    assert r.status_code == 200
    body = r.json()
    assert body["tokenType"] == "Bearer" and body["expiresIn"] > 0 and body["accessToken"]
    cookie = r.headers["set-cookie"].lower()
    assert "access_token=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    # the cookie alone (no Authorization header) authenticates
    assert c.get("/api/wallet").json()["userId"] == u.user_id


def test_duplicate_email_is_409_and_bad_input_is_422(gateway: str) -> None:
    email = unique_email()
    ok = httpx.post(gateway + "/api/auth/register", json={"email": email, "password": "longenough", "name": "A"})
    assert ok.status_code == 201
    assert_problem(
        httpx.post(
            gateway + "/api/auth/register", json={"email": email.upper(), "password": "longenough", "name": "A"}
        ),
        409,
    )
    body = assert_problem(
        httpx.post(gateway + "/api/auth/register", json={"email": "not-an-email", "password": "short", "name": "A"}),
        422,
    )
    fields = {e["field"] for e in body["errors"]}
    assert {"email", "password"} <= fields


def test_wrong_password_and_unknown_email_get_the_same_answer(gateway: str) -> None:
    u = register(gateway)
    a = httpx.post(gateway + "/api/auth/token", json={"email": u.email, "password": "wrong-password"})
    b = httpx.post(gateway + "/api/auth/token", json={"email": unique_email(), "password": "wrong-password"})
    assert_problem(a, 401)
    assert_problem(b, 401)
    assert a.json() == b.json()


def test_catalogue_is_public_and_seeded(gateway: str) -> None:
    products = httpx.get(gateway + "/api/products").json()
    seeded = [p for p in products if p["productId"].startswith("sku-")]
    assert len(seeded) >= 12
    p = seeded[0]
    assert set(p) == {"productId", "name", "type", "price", "currency", "availableCount"}
    one = httpx.get(f"{gateway}/api/products/{p['productId']}")
    assert one.status_code == 200 and one.json()["productId"] == p["productId"]
    assert_problem(httpx.get(gateway + "/api/products/no-such-product"), 404)


def test_admin_manages_products_others_get_403(admin: ApiUser, user: ApiUser) -> None:
    pid = f"adm-{uuid.uuid4().hex[:8]}"
    r = admin.post(
        "/api/admin/products", {"productId": pid, "name": "Lamp", "type": "home", "price": 19.99, "availableCount": 4}
    )
    assert r.status_code == 201, r.text
    assert r.json()["price"] == 19.99
    assert admin.put(f"/api/admin/products/{pid}/stock", {"availableCount": 9}).json()["availableCount"] == 9
    assert_problem(
        admin.post(
            "/api/admin/products", {"productId": pid, "name": "Lamp", "type": "home", "price": 1, "availableCount": 1}
        ),
        409,
    )
    assert_problem(user.post("/api/admin/products", {"name": "X", "type": "t", "price": 1, "availableCount": 1}), 403)
    assert_problem(user.put(f"/api/admin/products/{pid}/stock", {"availableCount": 0}), 403)


def test_deposits_and_ledger(user: ApiUser) -> None:
    assert user.deposit("12.34") == Decimal("12.34")
    assert user.deposit(0.66) == Decimal("13.00")
    ledger = user.get("/api/wallet/transactions").json()
    assert [t["amount"] for t in ledger] == [0.66, 12.34]  # newest first
    assert all(t["transactionType"] == "DEPOSIT" and t["paymentStatus"] == "COMPLETED" for t in ledger)
    for bad in (0, -5, 10000.01, 1.234, "abc"):
        assert_problem(user.post("/api/wallet/deposits", {"amount": bad}), 422)
    assert user.balance() == Decimal("13.00")


def test_gateway_rejects_missing_expired_tampered_and_foreign_tokens(
    gateway: str, settings: Settings, user: ApiUser
) -> None:
    assert_problem(httpx.get(gateway + "/api/wallet"), 401)
    key = (settings.secrets_dir / "jwt_private.pem").read_text()
    now = int(time.time())
    claims = {"iss": settings.jwt_issuer, "sub": user.user_id, "role": "user", "iat": now - 7200, "exp": now - 3600}
    expired = jwt.encode(claims, key, algorithm="RS256")
    assert_problem(httpx.get(gateway + "/api/wallet", headers={"Authorization": f"Bearer {expired}"}), 401)
    wrong_iss = jwt.encode({**claims, "exp": now + 600, "iss": "someone-else"}, key, algorithm="RS256")
    assert_problem(httpx.get(gateway + "/api/wallet", headers={"Authorization": f"Bearer {wrong_iss}"}), 401)
    head, payload, sig = user.token.split(".")
    forged_payload = jwt.utils.base64url_encode(
        orjson.dumps({"iss": settings.jwt_issuer, "sub": user.user_id, "role": "admin", "exp": now + 600})
    ).decode()
    tampered = f"{head}.{forged_payload}.{sig}"
    assert_problem(httpx.get(gateway + "/api/wallet", headers={"Authorization": f"Bearer {tampered}"}), 401)
    none_alg = jwt.encode({**claims, "exp": now + 600}, None, algorithm="none")
    assert_problem(httpx.get(gateway + "/api/wallet", headers={"Authorization": f"Bearer {none_alg}"}), 401)
    assert_problem(httpx.get(gateway + "/api/wallet", headers={"Authorization": "Bearer not.a.jwt"}), 401)


def test_client_sent_identity_headers_are_ignored(gateway: str) -> None:
    a, b = register(gateway, tag="a"), register(gateway, tag="b")
    b.deposit(7)
    r = a.get("/api/wallet", headers={"X-User-Id": b.user_id, "X-User-Role": "admin"})
    assert r.json()["userId"] == a.user_id and r.json()["balance"] == 0
    assert a.post("/api/wallet/deposits", {"amount": 1, "userId": b.user_id}).status_code == 201
    assert b.balance() == Decimal("7.00")
    assert a.get("/api/admin/alerts", headers={"X-User-Role": "admin"}).status_code == 403


def test_internal_routes_are_not_reachable_from_outside(gateway: str, user: ApiUser, settings: Settings) -> None:
    for path in ("/internal/payments", "/internal/refunds"):
        r = user.post(path, {"orderId": "x", "userId": user.user_id, "amount": 1, "currency": "USD"})
        assert r.status_code == 404
    # a service port without the gateway's secret refuses, even on loopback
    r = httpx.post(
        f"http://127.0.0.1:{settings.port_of('wallet')}/internal/refunds", json={"orderId": "x", "userId": user.user_id}
    )
    assert_problem(r, 403)
    r = httpx.get(f"http://127.0.0.1:{settings.port_of('wallet')}/api/wallet", headers={"X-User-Id": user.user_id})
    assert_problem(r, 403)


def test_me_tells_who_the_token_belongs_to(user: ApiUser, admin: ApiUser) -> None:
    me = user.get("/api/auth/me").json()
    assert me["userId"] == user.user_id and me["email"] == user.email and me["role"] == "user"
    assert admin.get("/api/auth/me").json()["role"] == "admin"
    assert_problem(httpx.get(user.base + "/api/auth/me"), 401)
