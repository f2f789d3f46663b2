"""Engines and sessions. ``pool_pre_ping`` lets a process survive a Postgres restart."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_factories: dict[str, sessionmaker[Session]] = {}


def engine_for(url: str) -> Engine:
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_engine(
                url,
                pool_pre_ping=True,
                # Above the gateway's 40 threadpool threads, so no request waits for
                # a connection; idle overflow connections are closed again.
                pool_size=20,
                max_overflow=30,
                pool_timeout=5,
                connect_args={"connect_timeout": 5},
            )
            _engines[url] = engine
        return engine


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
