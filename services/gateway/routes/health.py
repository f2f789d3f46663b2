"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from common.db.session import engine_for
from services.gateway.deps import StateDep
from services.gateway.metrics import render_metrics

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def read_health() -> dict[str, str]:
    return {"status": "ok"}


def _check(state: StateDep) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        with engine_for(state.settings.database_url).connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["postgres"] = "ok"
    except Exception as exc:
        checks["postgres"] = f"unreachable: {type(exc).__name__}"
    try:
        state.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    return checks


@router.get(
    "/readyz",
    summary="Postgres and Redis are reachable",
    responses={503: {"description": "a dependency is down"}},
)
async def read_ready(state: StateDep) -> JSONResponse:
    checks = await run_in_threadpool(_check, state)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def read_metrics(state: StateDep) -> Response:
    body, content_type = await run_in_threadpool(render_metrics, state)
    return Response(body, media_type=content_type)
