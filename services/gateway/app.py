"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from redis import Redis
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from common.blobstore import blob_store_from_settings
from common.celery_app import make_celery
from common.collector import collector_frozen
from common.detector.config import model_id_of
from common.netguard import policy_for
from common.pipeline import ChainSender
from common.settings import Settings, get_settings
from services.gateway.authcache import PrincipalCache
from services.gateway.dashboard import STATIC_DIR, STATIC_PATH
from services.gateway.edge import NUL_MESSAGE, BodyLimits, EdgeMiddleware
from services.gateway.ratelimit import TokenBucket
from services.gateway.routes import dashboard, deliveries, health, jobs, reviews
from services.gateway.state import GatewayState
from services.gateway.warmup import warm_up

log = logging.getLogger("aigi.gateway")

DESCRIPTION = """
Detect AI-generated images and explain why.

Submit an image (multipart upload or JSON `image_url`) to `POST /v1/jobs`; the answer
(202) carries the job id and its status URL. Poll `GET /v1/jobs/{id}` (add `?wait=N`
to hold the request until the verdict is known) or receive a signed webhook.
Every `/v1` route needs `Authorization: Bearer <API key>`.
"""


def build_state(settings: Settings) -> GatewayState:
    redis = Redis.from_url(
        settings.redis_url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=10
    )
    return GatewayState(
        settings=settings,
        sender=ChainSender(make_celery(settings), redis),
        redis=redis,
        blobs=blob_store_from_settings(settings),
        url_policy=policy_for(settings.allowed_fetch_hosts),
        rate_limiter=TokenBucket(redis, settings.rate_limit_per_minute, settings.rate_limit_burst),
        model_id=model_id_of(settings.model_path),
        principals=PrincipalCache(settings.auth_cache_seconds),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await warm_up(app)
        with collector_frozen() as frozen:  # no full collection over start-up objects
            log.info("start-up objects frozen", extra={"gc_frozen_objects": frozen})
            yield
        app.state.gateway.redis.close()

    app = FastAPI(title="aigi", version="1.0.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.gateway = build_state(settings)

    @app.exception_handler(OperationalError)
    async def database_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.error("database unavailable: %s", exc.orig)
        return JSONResponse(
            {"detail": "the database is unavailable; retry shortly"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(PoolTimeout)
    async def overloaded(_: Request, exc: PoolTimeout) -> JSONResponse:
        log.error("no database connection free: %s", exc)
        return JSONResponse(
            {"detail": "the service is overloaded; retry shortly"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(DataError)
    async def refused_value(_: Request, exc: DataError) -> JSONResponse:
        # The routes check free text where they read it; this is the net under them.
        log.warning("value refused by the database: %s", exc.orig)
        if "NUL" in str(exc.orig):
            return JSONResponse({"detail": f"text {NUL_MESSAGE}"}, status_code=422)
        return JSONResponse(
            {"detail": "a value is malformed or out of range; check the request's fields"},
            status_code=422,
        )

    app.add_middleware(
        EdgeMiddleware,
        limits=BodyLimits.for_uploads(
            settings.max_upload_bytes, settings.body_read_timeout_seconds
        ),
    )
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(deliveries.router)
    app.include_router(reviews.router)
    app.include_router(dashboard.router)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="dashboard-static")
    return app
