"""Dashboard sessions: a signed cookie naming the API key, and CSRF tokens tied to it.

The cookie holds only the API key id, its tenant id, a random nonce and the time of
login, signed with HMAC-SHA256 under a key derived from ``Settings.secret_key``. The
key itself is never stored; every request re-reads the key row, so revoking the key
ends its dashboard sessions at once.

CSRF: every state-changing form carries ``csrf_token`` = HMAC(nonce of the session),
so a token is valid only with the cookie it was issued for. The login form (no
session yet) uses a double-submit cookie instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request, Response, status
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from common.db.models import ApiKey
from common.settings import Settings
from common.tenants import Principal
from services.gateway.deps import SessionDep, StateDep

COOKIE = "aigi_dashboard"
LOGIN_CSRF_COOKIE = "aigi_dashboard_login"
COOKIE_PATH = "/dashboard"
SESSION_MAX_AGE = 12 * 3600
#: Requests from the dashboard's own JavaScript send this header; they get 401, not a redirect.
FETCH_HEADER = "X-Requested-With"
FETCH_VALUE = "aigi-dashboard"


@dataclass(frozen=True)
class DashboardSession:
    principal: Principal
    nonce: str
    issued_at: int
    csrf_token: str

    @property
    def reviewer(self) -> str:
        return reviewer_name(self.principal)


def reviewer_name(principal: Principal) -> str:
    """Who reviewed: the API key's name and its tenant (as stored in ``reviews.reviewer``)."""
    return f"{principal.key_name} @ {principal.tenant_name}"[:200]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(settings: Settings, purpose: str) -> bytes:
    secret = settings.secret_key.get_secret_value().encode()
    return hmac.new(secret, f"aigi-dashboard:{purpose}".encode(), hashlib.sha256).digest()


def _mac(settings: Settings, purpose: str, message: str) -> str:
    return _b64(hmac.new(_key(settings, purpose), message.encode(), hashlib.sha256).digest())


def sign_session(settings: Settings, principal: Principal, now: float | None = None) -> str:
    payload = {
        "k": str(principal.key_id),
        "t": str(principal.tenant_id),
        "n": secrets.token_urlsafe(16),
        "i": int(now if now is not None else time.time()),
    }
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{body}.{_mac(settings, 'session', body)}"


@dataclass(frozen=True)
class SessionClaims:
    key_id: uuid.UUID
    tenant_id: uuid.UUID
    nonce: str
    issued_at: int


def read_session(settings: Settings, value: str, now: float | None = None) -> SessionClaims | None:
    """The claims of a well-signed, unexpired cookie; None otherwise."""
    body, _, mac = value.partition(".")
    if not body or not mac:
        return None
    if not hmac.compare_digest(mac, _mac(settings, "session", body)):
        return None
    try:
        payload = json.loads(_unb64(body))
        claims = SessionClaims(
            key_id=uuid.UUID(payload["k"]),
            tenant_id=uuid.UUID(payload["t"]),
            nonce=str(payload["n"]),
            issued_at=int(payload["i"]),
        )
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    age = (now if now is not None else time.time()) - claims.issued_at
    if age < -60 or age > SESSION_MAX_AGE:
        return None
    return claims


def csrf_token_for(settings: Settings, nonce: str) -> str:
    return _mac(settings, "csrf", nonce)


def check_csrf(dashboard: DashboardSession, token: str | None) -> None:
    if not token or not hmac.compare_digest(token, dashboard.csrf_token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid or missing CSRF token")


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=SESSION_MAX_AGE,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=is_https(request),
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE, path=COOKIE_PATH, httponly=True, samesite="lax", secure=is_https(request)
    )


def new_login_token() -> str:
    return secrets.token_urlsafe(24)


def set_login_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=3600,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


def check_login_token(request: Request, token: str | None) -> None:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not token or not expected or not hmac.compare_digest(token, expected):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "invalid or missing CSRF token; reload the login page"
        )


def safe_next(target: str | None) -> str:
    """Only same-site dashboard paths: never an open redirect."""
    if (
        target
        and target.isascii()
        and target.isprintable()  # no NUL, CR or LF: it becomes a Location header
        and target.startswith(COOKIE_PATH)
        and not target.startswith("//")
        and "\\" not in target
        and "://" not in target
    ):
        return target
    return COOKIE_PATH


def _not_logged_in(request: Request) -> HTTPException:
    if request.headers.get(FETCH_HEADER) == FETCH_VALUE:
        return HTTPException(status.HTTP_401_UNAUTHORIZED, "log in to the dashboard")
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return HTTPException(
        status.HTTP_303_SEE_OTHER,
        "log in to the dashboard",
        headers={"Location": f"{COOKIE_PATH}/login?next={quote(target, safe='')}"},
    )


def principal_for_claims(session: Session, claims: SessionClaims) -> Principal | None:
    """The key named by the cookie, if it still exists, is not revoked and is the tenant's."""
    row = session.get(ApiKey, claims.key_id)
    if row is None or row.revoked_at is not None or row.tenant_id != claims.tenant_id:
        return None
    return Principal(row.tenant_id, row.tenant.name, row.id, row.name)


def get_dashboard_session(
    request: Request, state: StateDep, session: SessionDep
) -> DashboardSession:
    value = request.cookies.get(COOKIE)
    claims = read_session(state.settings, value) if value else None
    if claims is None:
        raise _not_logged_in(request)
    try:
        principal = principal_for_claims(session, claims)
    except OperationalError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the database is unavailable; retry shortly"
        ) from exc
    if principal is None:
        raise _not_logged_in(request)
    request.state.principal = principal
    return DashboardSession(
        principal=principal,
        nonce=claims.nonce,
        issued_at=claims.issued_at,
        csrf_token=csrf_token_for(state.settings, claims.nonce),
    )


DashboardDep = Annotated[DashboardSession, Depends(get_dashboard_session)]
