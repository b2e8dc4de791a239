"""Public routes of the auth service: register, token, me, logout."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tinysaga.auth.accounts import authenticate, create_account
from tinysaga.auth.domain import EMAIL_RE, MIN_PASSWORD, PHONE_RE, issue_token
from tinysaga.auth.repository import AccountExists
from tinysaga.platform.service import runtime
from tinysaga.platform.web import JSON, Identity, Problem, current_user

if TYPE_CHECKING:
    from tinysaga.auth.bootstrap import AuthDeps

router = APIRouter()


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


def deps(request: Request) -> AuthDeps:
    """The service's dependencies (built by its bootstrap)."""
    return runtime(request).deps


@router.post("/api/auth/register", status_code=201, response_model=RegisterOut)
async def register(body: RegisterIn, request: Request) -> JSON:
    try:
        user_id = await create_account(deps(request).accounts, body.email, body.password, body.name, body.phone)
    except AccountExists as e:
        raise Problem(409, "Conflict", "an account with this email already exists") from e
    return JSON({"userId": str(user_id)}, status_code=201)


@router.post("/api/auth/token", response_model=TokenOut)
async def token(body: TokenIn, request: Request) -> Response:
    d = deps(request)
    account = await authenticate(d.accounts, body.email.strip(), body.password)
    if account is None:
        raise Problem(401, "Unauthorized", "wrong email or password")
    tok = issue_token(account, d.private_key, d.issuer, d.token_ttl)
    resp = JSON({"accessToken": tok, "tokenType": "Bearer", "expiresIn": d.token_ttl})
    resp.set_cookie("access_token", tok, max_age=d.token_ttl, httponly=True, samesite="strict", path="/")
    return resp


@router.get("/api/auth/me")
async def me(request: Request, user: Identity = Depends(current_user)) -> dict[str, object]:
    """Who the token belongs to (the storefront shows it)."""
    row = await deps(request).accounts.by_id(uuid.UUID(user.user_id))
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
