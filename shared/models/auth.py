"""Tenants, roles and API keys."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from pydantic import BaseModel


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


class Principal(BaseModel):
    """Who is calling: the tenant an API key belongs to and its role."""

    tenant: str
    role: Role
    rate_limit_per_minute: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


class ApiKeyRecord(BaseModel):
    """An API key as stored: only its SHA-256 hash is kept (it is the document id)."""

    tenant: str
    role: Role
    prefix: str
    created_at: dt.datetime
    rate_limit_per_minute: int | None = None


class AuditRecord(BaseModel):
    """Who did what, when, from where."""

    tenant: str
    action: str
    target: str
    at: dt.datetime
    remote_addr: str
    user_agent: str
