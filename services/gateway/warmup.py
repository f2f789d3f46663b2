"""Open what the first requests would otherwise open, before the gateway serves them.

A cold gateway process pays on its first submissions for what it then keeps: a new
Postgres connection per concurrent request (a backend forked and authenticated on the
server), the broker connection, Pillow's format plugins, and FastAPI's per-route
models, which it builds for every route of a router when the first request is matched
against that router (~130 ms on the first submission here). Under a sudden 200 req/s
those first requests queued behind each other and the backlog took seconds to drain
(p99 near 1 s at 200 req/s on 2 cores, against ~40 ms once warm: ``aigi bench
load``). uvicorn runs the lifespan before it accepts connections, so warming there
costs start-up time (~0.1 s), not requests.

Best effort: a database or broker that is down at start is not a reason to refuse to
start (requests answer 503 until it is back), so every failure is logged and skipped.
"""

from __future__ import annotations

import io
import logging
from contextlib import ExitStack

import httpx
from fastapi import FastAPI
from PIL import Image
from sqlalchemy import text
from sqlalchemy.orm import Session, configure_mappers

from common.db.session import engine_for
from common.images import inspect_image
from common.tenants import authenticate
from services.gateway.state import GatewayState

log = logging.getLogger("aigi.gateway")


def warm_database(url: str, connections: int) -> int:
    """Set up the ORM's mappers, compile the key lookup every request runs, open
    ``connections`` pooled connections at once and give them back to the pool (it keeps
    up to its ``pool_size``); returns how many opened."""
    configure_mappers()  # ~100 ms, else paid by the first query of the process
    engine = engine_for(url)
    opened = 0
    with ExitStack() as held:
        for _ in range(connections):
            try:
                connection = held.enter_context(engine.connect())
                if opened == 0:
                    with Session(bind=connection) as session:
                        authenticate(session, "")  # no key matches: compiles the query
                connection.execute(text("SELECT 1"))
            except Exception as exc:
                log.warning("database warm-up stopped: %s", exc)
                break
            opened += 1
    return opened


def warm_broker(state: GatewayState) -> None:
    try:
        with state.celery.producer_or_acquire() as producer:
            producer.connection.ensure_connection(max_retries=1)
        state.redis.ping()
    except Exception as exc:
        log.warning("broker warm-up failed: %s", exc)


def warm_image_decoder() -> None:
    """Load Pillow's plugins and decode once (the first decode of a process is slow)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    inspect_image(buffer.getvalue())


#: Matches no route, so routing walks (and builds) every router on the way to a 404.
UNROUTED_PATH = "/.warm-up"


async def warm_routes(app: FastAPI) -> None:
    """One in-process request that no route matches (no lifespan, no socket)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://warm-up") as client:
        response = await client.get(UNROUTED_PATH)
    if response.status_code != 404:
        log.warning("route warm-up answered %s, expected 404", response.status_code)


def warm_up(state: GatewayState) -> None:
    connections = state.settings.gateway_warm_connections
    opened = warm_database(state.settings.database_url, connections) if connections else 0
    warm_broker(state)
    warm_image_decoder()
    log.info("gateway warmed up", extra={"database_connections": opened})
