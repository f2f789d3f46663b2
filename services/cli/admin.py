"""Administration: tenants, API keys, exporting reviewed images for retraining."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from services.cli.output import console, emit, fail

tenant_app = typer.Typer(help="Tenants (the platforms that call the API).", no_args_is_help=True)
key_app = typer.Typer(help="API keys (shown once, stored hashed).", no_args_is_help=True)


def _session():  # type: ignore[no-untyped-def]
    from common.db.session import session_scope
    from common.settings import get_settings

    return session_scope(get_settings().database_url)


def checked_callback(url: str | None) -> str | None:
    """``url`` when the webhook sender could deliver to it (the same guard as the API's
    ``callback_url``: http(s), a valid host name, no loopback or private address unless
    AIGI_URL_FETCH_ALLOW_HOSTS allows it); None for None or an empty string; else the
    command fails with the reason."""
    from common.netguard import UnsafeURLError, policy_for
    from common.settings import get_settings

    if not url:
        return None
    if len(url) > 2048:
        fail("the callback URL is longer than 2048 characters")
    try:
        policy_for(get_settings().allowed_fetch_hosts).check(url)
    except UnsafeURLError as exc:
        fail(f"callback URL refused: {exc}")
    return url


@tenant_app.command("create")
def tenant_create(
    name: str,
    callback_url: Annotated[str | None, typer.Option(help="default webhook URL")] = None,
) -> None:
    """Create a tenant; prints its webhook signing secret."""
    from common.tenants import TenantError, create_tenant

    callback_url = checked_callback(callback_url)
    try:
        with _session() as session:
            tenant = create_tenant(session, name, callback_url)
            emit(
                {"id": str(tenant.id), "name": tenant.name, "webhook_secret": tenant.webhook_secret}
            )
    except TenantError as exc:
        fail(str(exc))


@tenant_app.command("list")
def tenant_list() -> None:
    from sqlalchemy import select

    from common.db.models import Tenant

    with _session() as session:
        emit(
            [
                {"id": str(t.id), "name": t.name, "created_at": t.created_at}
                for t in session.scalars(select(Tenant).order_by(Tenant.created_at))
            ]
        )


@tenant_app.command("update")
def tenant_update(
    name: str,
    callback_url: Annotated[
        str, typer.Option(help="default webhook URL; an empty string removes it")
    ],
) -> None:
    """Change a tenant's default webhook URL."""
    from common.tenants import TenantError, get_tenant

    url = checked_callback(callback_url)
    try:
        with _session() as session:
            tenant = get_tenant(session, name)
            tenant.default_callback_url = url
            emit({"id": str(tenant.id), "name": tenant.name, "default_callback_url": url})
    except TenantError as exc:
        fail(str(exc))


@tenant_app.command("rotate-secret")
def tenant_rotate(name: str) -> None:
    """New webhook secret; the old one keeps signing alongside until the next rotation."""
    from common.tenants import TenantError, get_tenant, rotate_webhook_secret

    try:
        with _session() as session:
            secret = rotate_webhook_secret(session, get_tenant(session, name))
            emit({"name": name, "webhook_secret": secret})
    except TenantError as exc:
        fail(str(exc))


@key_app.command("create")
def key_create(tenant: str, name: Annotated[str, typer.Option(help="a label")] = "default") -> None:
    """Create an API key for TENANT; the key is shown once."""
    from common.tenants import TenantError, create_key, get_tenant

    try:
        with _session() as session:
            row, plain = create_key(session, get_tenant(session, tenant), name)
            emit({"id": str(row.id), "tenant": tenant, "name": name, "key": plain})
    except TenantError as exc:
        fail(str(exc))
    console.print("store the key now: it is not shown again")


@key_app.command("revoke")
def key_revoke(
    key_id: Annotated[str, typer.Argument(help="key id, or prefix as `aigi key list` shows it")],
) -> None:
    from common.tenants import KEY_PREFIX, TenantError, revoke_key

    try:
        with _session() as session:
            # `aigi_1a2b3c4d` (how a key starts) and `1a2b3c4d` (the stored prefix) alike
            row = revoke_key(session, key_id.strip().removeprefix(KEY_PREFIX))
            emit({"id": str(row.id), "revoked_at": row.revoked_at})
    except TenantError as exc:
        fail(str(exc))


@key_app.command("list")
def key_list(tenant: str) -> None:
    from sqlalchemy import select

    from common.db.models import ApiKey
    from common.tenants import TenantError, get_tenant

    try:
        with _session() as session:
            owner = get_tenant(session, tenant)
            emit(
                [
                    {
                        "id": str(k.id),
                        "name": k.name,
                        "prefix": k.prefix,
                        "created_at": k.created_at,
                        "revoked_at": k.revoked_at,
                    }
                    for k in session.scalars(select(ApiKey).where(ApiKey.tenant_id == owner.id))
                ]
            )
    except TenantError as exc:
        fail(str(exc))


def export_reviews(
    since: Annotated[datetime, typer.Option(help="reviews on or after this date")],
    out: Annotated[Path, typer.Option(help="folder to write REAL/ and FAKE/ into")],
    tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None,
) -> None:
    """Write reviewed images in the REAL/FAKE layout that `aigi train` reads."""
    from common.blobstore import blob_store_from_settings
    from common.reviews import export_reviewed
    from common.settings import get_settings

    with _session() as session:
        counts = export_reviewed(
            session, blob_store_from_settings(get_settings()), since, out, tenant
        )
    emit({"out": str(out), **counts})


def register(app: typer.Typer) -> None:
    app.command("export-reviews")(export_reviews)
