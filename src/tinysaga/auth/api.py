"""Public routes of the auth service: register and token."""

from __future__ import annotations

import uuid

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tinysaga.auth.domain import EMAIL_RE, MIN_PASSWORD, PHONE_RE, Account, issue_token
from tinysaga.contracts.events import USER_REGISTERED, new_event
from tinysaga.platform.db import add_to_outbox
from tinysaga.platform.service import Runtime
from tinysaga.platform.service import runtime as _rt
from tinysaga.platform.web import JSON, Identity, Problem, current_user

router = APIRouter()
hasher = PasswordHasher()
# Verified against when the email is unknown, so both failures cost the same time.
_DUMMY_HASH = hasher.hash("not-a-real-password")


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    email: str = Field(max_length=254)
    password: str = Field(min_length=MIN_PASSWORD, max_length=128)
    name: str = Field(min_length=1, max_length=100)
    phone: str | None = Field(None, max_length=20)

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        v = v.strip()
        if not EMAIL_RE.match(v):
            raise ValueError("not a valid email address")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("name must not be blank")
        return v.strip()

    @field_validator("phone")
    @classmethod
    def _phone(cls, v: str | None) -> str | None:
        if v is not None and not PHONE_RE.match(v):
            raise ValueError("not a valid phone number")
        return v


class RegisterOut(BaseModel):
    userId: str


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    email: str = Field(max_length=254)
    password: str = Field(max_length=128)


class TokenOut(BaseModel):
    accessToken: str
    tokenType: str = "Bearer"
    expiresIn: int


async def create_account(
    rt: Runtime, email: str, password: str, name: str, phone: str | None, role: str = "user"
) -> uuid.UUID:
    """Insert the account and its USER_REGISTERED event (the wallet service opens the wallet)."""
    user_id = uuid.uuid4()
    async with rt.pool.acquire() as conn, conn.transaction():
        try:
            await conn.execute(
                "INSERT INTO users(user_id, email, password_hash, name, phone, role) VALUES ($1, $2, $3, $4, $5, $6)",
                user_id,
                email,
                hasher.hash(password),
                name,
                phone,
                role,
            )
        except asyncpg.UniqueViolationError as e:
            raise Problem(409, "Conflict", "an account with this email already exists") from e
        await add_to_outbox(
            conn,
            rt.settings.user_topic,
            new_event(
                USER_REGISTERED,
                correlation_id=str(user_id),
                userId=str(user_id),
                email=email,
                name=name,
                phone=phone,
            ),
        )
    return user_id


@router.post("/api/auth/register", status_code=201, response_model=RegisterOut)
async def register(body: RegisterIn, request: Request) -> JSON:
    user_id = await create_account(_rt(request), body.email, body.password, body.name, body.phone)
    return JSON({"userId": str(user_id)}, status_code=201)


@router.post("/api/auth/token", response_model=TokenOut)
async def token(body: TokenIn, request: Request) -> Response:
    rt = _rt(request)
    row = await rt.pool.fetchrow("SELECT * FROM users WHERE lower(email) = lower($1)", body.email.strip())
    try:
        hasher.verify(row["password_hash"] if row else _DUMMY_HASH, body.password)
        ok = row is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:
        raise Problem(401, "Unauthorized", "wrong email or password")
    account = Account(row["user_id"], row["email"], row["password_hash"], row["name"], row["phone"], row["role"])
    ttl = rt.settings.token_ttl_seconds
    tok = issue_token(account, rt.state["private_key"], rt.settings.jwt_issuer, ttl)
    resp = JSON({"accessToken": tok, "tokenType": "Bearer", "expiresIn": ttl})
    resp.set_cookie("access_token", tok, max_age=ttl, httponly=True, samesite="strict", path="/")
    return resp


async def ensure_admin(rt: Runtime) -> None:
    """The admin account from settings exists, with the configured password and the admin role."""
    s = rt.settings
    password = s.effective_admin_password
    row = await rt.pool.fetchrow("SELECT user_id, password_hash FROM users WHERE lower(email)=lower($1)", s.admin_email)
    if row is None:
        try:
            await create_account(rt, s.admin_email, password, "Administrator", None, role="admin")
        except Problem:
            pass  # another replica created it first
        return
    try:
        hasher.verify(row["password_hash"], password)
    except (VerificationError, InvalidHashError):
        await rt.pool.execute(
            "UPDATE users SET password_hash=$2, role='admin' WHERE user_id=$1", row["user_id"], hasher.hash(password)
        )
    await rt.pool.execute("UPDATE users SET role='admin' WHERE user_id=$1", row["user_id"])


@router.get("/api/auth/me")
async def me(request: Request, user: Identity = Depends(current_user)) -> dict[str, object]:
    """Who the token belongs to (the storefront shows it)."""
    row = await _rt(request).pool.fetchrow("SELECT * FROM users WHERE user_id=$1", uuid.UUID(user.user_id))
    if row is None:
        raise Problem(404, "Not Found", "no such account")
    return {
        "userId": str(row["user_id"]),
        "email": row["email"],
        "name": row["name"],
        "phone": row["phone"],
        "role": row["role"],
    }


@router.post("/api/auth/logout", status_code=204)
async def logout() -> Response:
    """Sign out of the browser: the HttpOnly cookie can only be cleared by the server."""
    resp = Response(status_code=204)
    resp.delete_cookie("access_token", path="/", httponly=True, samesite="strict")
    return resp
