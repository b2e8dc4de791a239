"""Payment's routes: none of its own (it is a consumer; the health endpoints come with every
service)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
