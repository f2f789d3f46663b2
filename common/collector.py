"""Keep a long-lived process's start-up objects out of Python's garbage collector.

A full (generation 2) collection traverses every tracked object, and a warm gateway
process holds a great many (FastAPI, SQLAlchemy, pydantic, Celery): each full
collection is a stall that every request in flight waits out, and the load
generator's own would count as the gateway's latency (the measured stalls are in
docs/benchmarks.md). Frozen objects (:func:`gc.freeze`) are never traversed, so later
full collections scan only what was made since.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_frozen() -> Iterator[int]:
    """Collect, then freeze every object still alive; yields how many were frozen and
    unfreezes on exit (they become collectable again)."""
    gc.collect()
    gc.freeze()
    try:
        yield gc.get_freeze_count()
    finally:
        gc.unfreeze()
