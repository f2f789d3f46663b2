"""Keep a long-lived process's start-up objects out of Python's garbage collector.

A full (generation 2) collection traverses every tracked object. A warm gateway process
holds ~150k of them (FastAPI, SQLAlchemy, pydantic, Celery); a full collection over
them took 75–95 ms of CPU while serving ``aigi bench load`` (timed with
``gc.callbacks``), a stall every request in flight waited out. The load generator's
own collections took 135–205 ms, which would have counted as the gateway's latency.
Frozen objects (:func:`gc.freeze`) are never traversed, so later full collections scan
only what was made since.
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
