"""Typed dependencies, in one place."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
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


async def get_caller(
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The caller, authenticated but not yet rate limited: remembered for
    ``auth_cache_seconds`` by this process (no I/O, so no thread), else looked up in a
    short-lived session (not one held for the whole request) in the threadpool."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = credentials.credentials
    principal = state.principals.cached(key)
    if principal is None:

        def load() -> Principal | None:
            with session_factory(state.settings.database_url)() as session:
                found = principal_from_key(session, key)
            state.principals.remember(key, found)
            return found

        principal = await run_in_threadpool(load)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.principal = principal
    return principal


#: For a route that calls :func:`rate_limit` itself, in a thread it needs anyway.
CallerDep = Annotated[Principal, Depends(get_caller)]


def rate_limit(state: GatewayState, principal: Principal) -> None:
    """Take one token from the caller's key's bucket, or answer 429 (blocking: Redis)."""
    try:
        decision = state.rate_limiter.take(str(principal.key_id))
    except RedisError:  # fail open: Postgres holds the job, the reconciler enqueues it
        log.warning("rate limiter unavailable (Redis down); request allowed")
        return
    if not decision.allowed:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit exceeded; retry in {decision.retry_after} s",
            headers={"Retry-After": str(decision.retry_after)},
        )


def get_principal(state: StateDep, caller: CallerDep) -> Principal:
    """The caller, rate limited (a plain ``def``: FastAPI runs it in its threadpool)."""
    rate_limit(state, caller)
    return caller


PrincipalDep = Annotated[Principal, Depends(get_principal)]
