"""Dashboard sessions: a signed cookie naming the API key, and CSRF tokens tied to it.

The cookie holds only the API key id, its tenant id and a random nonce, signed with the
time of login by itsdangerous (``URLSafeTimedSerializer``, HMAC-SHA256 under
``Settings.secret_key`` with a salt per purpose) and refused once it is older than
``SESSION_MAX_AGE``. The key itself is never stored; every request re-reads the key
row, so revoking the key ends its dashboard sessions at once.

CSRF: every state-changing form carries ``csrf_token`` = the signature of the session's
nonce (its own salt), so a token is valid only with the cookie it was issued for. The
login form (no session yet) uses a double-submit cookie instead.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request, Response, status
from itsdangerous import BadData, Signer, TimestampSigner, URLSafeTimedSerializer
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


_SALT_SESSION = "aigi-dashboard:session"
_SALT_CSRF = "aigi-dashboard:csrf"
#: Gateway replicas' clocks differ a little; a cookie signed up to this many seconds
#: "in the future" (by another replica) is still good.
CLOCK_SKEW_S = 60


class _ClockSigner(TimestampSigner):
    """itsdangerous' timestamp signer, reading the time it is given (tests pass one)."""

    def __init__(self, *args: Any, now: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.now = now

    def get_timestamp(self) -> int:
        return int(self.now if self.now is not None else time.time())


def _secret(settings: Settings) -> str:
    return settings.secret_key.get_secret_value()


def _session_serializer(settings: Settings, now: float) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        _secret(settings),
        salt=_SALT_SESSION,
        signer=_ClockSigner,
        signer_kwargs={"digest_method": hashlib.sha256, "now": now},
    )


def sign_session(settings: Settings, principal: Principal, now: float | None = None) -> str:
    """The cookie's value: ids and a fresh nonce, signed with the time of login."""
    payload = {
        "k": str(principal.key_id),
        "t": str(principal.tenant_id),
        "n": secrets.token_urlsafe(16),
    }
    return _session_serializer(settings, now if now is not None else time.time()).dumps(payload)


@dataclass(frozen=True)
class SessionClaims:
    key_id: uuid.UUID
    tenant_id: uuid.UUID
    nonce: str
    issued_at: int


def read_session(settings: Settings, value: str, now: float | None = None) -> SessionClaims | None:
    """The claims of a well-signed, unexpired cookie; None otherwise.

    itsdangerous refuses a signature from the future, so the age is taken from a clock
    read ``CLOCK_SKEW_S`` ahead, and ``max_age`` is longer by as much: a cookie is good
    from ``CLOCK_SKEW_S`` before its signing time until ``SESSION_MAX_AGE`` after it.
    """
    clock = (now if now is not None else time.time()) + CLOCK_SKEW_S
    try:
        payload, signed_at = _session_serializer(settings, clock).loads(
            value, max_age=SESSION_MAX_AGE + CLOCK_SKEW_S, return_timestamp=True
        )
        return SessionClaims(
            key_id=uuid.UUID(payload["k"]),
            tenant_id=uuid.UUID(payload["t"]),
            nonce=str(payload["n"]),
            issued_at=int(signed_at.timestamp()),
        )
    except (BadData, ValueError, KeyError, TypeError):  # BadData: forged, expired or garbled
        return None


def csrf_token_for(settings: Settings, nonce: str) -> str:
    """The session's CSRF token: its nonce's signature (a salt of its own)."""
    signer = Signer(_secret(settings), salt=_SALT_CSRF, digest_method=hashlib.sha256)
    return signer.get_signature(nonce).decode()


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
