"""Tenants and API keys. Keys are shown once and stored as a SHA-256 hash.

Keys are 32 random bytes (``aigi_<prefix>_<secret>``), so a fast hash is enough: there
is nothing to brute-force that a slow hash would protect.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.db.models import ApiKey, Tenant
from common.webhooks import new_secret

KEY_PREFIX = "aigi_"


class TenantError(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant and the key used."""

    tenant_id: uuid.UUID
    tenant_name: str
    key_id: uuid.UUID
    key_name: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_tenant(session: Session, name: str, callback_url: str | None = None) -> Tenant:
    name = name.strip()
    if not name:
        raise TenantError("tenant name must not be empty")
    if session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
        raise TenantError(f"tenant {name!r} already exists")
    tenant = Tenant(name=name, webhook_secret=new_secret(), default_callback_url=callback_url)
    session.add(tenant)
    session.flush()
    return tenant


def get_tenant(session: Session, name_or_id: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name_or_id))
    if tenant is None:
        try:
            tenant = session.get(Tenant, uuid.UUID(name_or_id))
        except ValueError:
            tenant = None
    if tenant is None:
        raise TenantError(f"no tenant named {name_or_id!r}; create it with `aigi tenant create`")
    return tenant


def create_key(
    session: Session, tenant: Tenant, name: str = "default", key: str | None = None
) -> tuple[ApiKey, str]:
    """A new key for ``tenant``; returns the row and the plain key (shown once)."""
    prefix = secrets.token_hex(4)
    plain = key or f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    if key is not None:
        prefix = plain.split("_")[1][:16] if plain.startswith(KEY_PREFIX) else plain[:8]
    row = ApiKey(tenant_id=tenant.id, name=name, prefix=prefix, key_hash=hash_key(plain))
    session.add(row)
    session.flush()
    return row, plain


def revoke_key(session: Session, key_id_or_prefix: str) -> ApiKey:
    row = None
    try:
        row = session.get(ApiKey, uuid.UUID(key_id_or_prefix))
    except ValueError:
        row = session.scalar(select(ApiKey).where(ApiKey.prefix == key_id_or_prefix))
    if row is None:
        raise TenantError(f"no API key {key_id_or_prefix!r}")
    row.revoked_at = datetime.now(UTC)
    return row


def authenticate(session: Session, key: str) -> Principal | None:
    """The caller behind ``key``, or None (unknown or revoked). One indexed query: it
    runs on every request."""
    row = session.execute(
        select(ApiKey.tenant_id, Tenant.name, ApiKey.id, ApiKey.name)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    ).first()
    return Principal(row[0], row[1], row[2], row[3]) if row else None


def rotate_webhook_secret(session: Session, tenant: Tenant) -> str:
    """New secret; the old one keeps signing alongside until the next rotation."""
    tenant.previous_webhook_secret = tenant.webhook_secret
    tenant.webhook_secret = new_secret()
    return tenant.webhook_secret
