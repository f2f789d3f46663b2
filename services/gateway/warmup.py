"""Open what the first requests would otherwise open, before the gateway serves them.

A cold gateway process pays on its first submissions for what it then keeps: a new
Postgres connection per concurrent request (a backend forked and authenticated on the
server), the broker connection, Pillow's format plugins, and FastAPI's per-route
models, which it builds for every route of a router when the first request is matched
against that router. Under a sudden burst of submissions those first requests
queued behind each other and the backlog took seconds to drain (docs/benchmarks.md).
uvicorn runs the lifespan before it accepts connections, so warming there costs
start-up time, not requests.

Best effort: a database or broker that is down at start is not a reason to refuse to
start (requests answer 503 until it is back), so every failure is logged and skipped.
"""

from __future__ import annotations

import io
import logging
from contextlib import ExitStack

import httpx
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from PIL import Image
from sqlalchemy.orm import Session, configure_mappers

from common.db.session import engine_for
from common.images import inspect_image
from common.pipeline import task_message
from common.tenants import authenticate
from services.gateway.state import GatewayState

log = logging.getLogger("aigi.gateway")


def warm_database(url: str, connections: int) -> int:
    """Open ``connections`` pooled connections at once and give them back to the pool (it
    keeps up to its ``pool_size``), compiling the key lookup every request runs on the
    first; returns how many opened."""
    engine = engine_for(url)
    opened = 0
    with ExitStack() as held:
        try:
            while opened < connections:
                connection = held.enter_context(engine.connect())
                if opened == 0:
                    with Session(bind=connection) as session:
                        authenticate(session, "")  # matches no key
                opened += 1
        except Exception as exc:
            log.warning("database warm-up stopped: %s", exc)
    return opened


def warm_broker(state: GatewayState) -> None:
    try:
        task_message(state.sender.app, "warm-up", "warm-up", ())  # Celery's lazy set-up
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


async def _warm_routes(app: FastAPI) -> None:
    """One in-process request that no route matches (no lifespan, no socket)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://warm-up") as client:
        response = await client.get(UNROUTED_PATH)
    if response.status_code != 404:
        log.warning("route warm-up answered %s, expected 404", response.status_code)


def _warm_blocking(state: GatewayState) -> int:
    configure_mappers()  # else the first query of the process pays for it
    connections = state.settings.gateway_warm_connections
    opened = warm_database(state.settings.database_url, connections) if connections else 0
    warm_broker(state)
    warm_image_decoder()
    return opened


async def warm_up(app: FastAPI) -> None:
    """Everything above, for the app's gateway state (from its lifespan)."""
    opened = await run_in_threadpool(_warm_blocking, app.state.gateway)
    await _warm_routes(app)
    log.info("gateway warmed up", extra={"database_connections": opened})
