"""Engines and sessions; a pooled connection idle for a while is pinged before use, so a
process survives a Postgres restart."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_factories: dict[str, sessionmaker[Session]] = {}


def engine_for(url: str) -> Engine:
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_engine(
                url,
                # Above the gateway's 40 threadpool threads, so no request waits for
                # a connection; idle overflow connections are closed again.
                pool_size=20,
                max_overflow=30,
                pool_timeout=5,
                connect_args={"connect_timeout": 5},
            )
            _ping_when_idle(engine)
            _engines[url] = engine
        return engine


#: A connection back in the pool for longer than this is pinged before it is reused.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """``pool_pre_ping`` for connections that sat idle, not for every checkout.

    ``pool_pre_ping`` costs a round trip per checkout: a visible share of the gateway's
    CPU on its submit path, one checkout per request (docs/benchmarks.md). A
    connection used within the last second is taken as alive; if Postgres went away in
    that second, the first statement fails with a disconnect error (the caller answers
    503), and SQLAlchemy then replaces every pooled connection, as after a failed ping.
    A failed ping here makes the pool open a new connection (SQLAlchemy's
    pessimistic-disconnect recipe).
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(
        dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return  # new, or in use a moment ago
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"pooled connection is dead: {exc}") from exc
        if not alive:
            raise DisconnectionError("pooled connection did not answer a ping")


def session_factory(url: str) -> sessionmaker[Session]:
    factory = _factories.get(url)
    if factory is None:
        factory = sessionmaker(engine_for(url), expire_on_commit=False)
        _factories[url] = factory
    return factory


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_after_fork() -> None:
    """Forget the parent's pooled connections in a forked child (never share sockets)."""
    for engine in _engines.values():
        engine.dispose(close=False)


def dispose_all() -> None:
    """Close every pooled connection (end of a test session, process shutdown)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
