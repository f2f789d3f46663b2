"""Typed dependencies, in one place."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from common.db.session import session_factory
from common.settings import Settings
from common.tenants import Principal, authenticate
from services.gateway.state import GatewayState

log = logging.getLogger("aigi.gateway")
bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer aigi_...`")


# Non-blocking dependencies are ``async def``: FastAPI runs a plain ``def`` dependency
# in its threadpool, a thread hop per request for an attribute read.
async def get_state(request: Request) -> GatewayState:
    return request.app.state.gateway


StateDep = Annotated[GatewayState, Depends(get_state)]


async def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_session(state: StateDep) -> Iterator[Session]:
    session = session_factory(state.settings.database_url)()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def principal_from_key(session: Session, key: str) -> Principal | None:
    try:
        return authenticate(session, key)
    except OperationalError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the database is unavailable; retry shortly"
        ) from exc


def get_principal(
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The caller: remembered for ``auth_cache_seconds`` by this process, else looked up
    in a short-lived session (not one held for the whole request)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = credentials.credentials

    def load() -> Principal | None:
        with session_factory(state.settings.database_url)() as session:
            return principal_from_key(session, key)

    principal = state.principals.lookup(key, load)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        decision = state.rate_limiter.take(str(principal.key_id))
    except RedisError:  # fail open: Postgres holds the job, the reconciler enqueues it
        log.warning("rate limiter unavailable (Redis down); request allowed")
        decision = None
    if decision is not None and not decision.allowed:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit exceeded; retry in {decision.retry_after} s",
            headers={"Retry-After": str(decision.retry_after)},
        )
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
