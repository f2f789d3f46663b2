"""A per-process circuit breaker, so an LLM outage does not hold the explain queue.

After ``failures`` consecutive failed jobs the breaker opens: for ``reset_seconds``
every job gets the evidence explanation at once, without calling the LLM. Then one
job is let through (half-open): success closes the breaker, failure opens it again.
Each worker process has its own breaker (state is not shared across processes: an
outage is noticed by each within ``failures`` jobs, which is cheap enough).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CircuitBreaker:
    def __init__(
        self,
        failures: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or reset_seconds <= 0:
            raise ValueError("failures must be >= 1 and reset_seconds > 0")
        self.failures = failures
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive

    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_seconds:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """May this job call the LLM? In half-open state, only one trial at a time."""
        with self._lock:
            state = self._state()
            if state == "closed":
                return True
            if state == "half-open" and not self._trial_running:
                self._trial_running = True
                return True
            return False

    def retry_in(self) -> float:
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self.reset_seconds - (self._clock() - self._opened_at))

    def record_success(self) -> None:
        with self._lock:
            self._consecutive = 0
            self._opened_at = None
            self._trial_running = False

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            if self._trial_running or self._consecutive >= self.failures:
                self._opened_at = self._clock()
            self._trial_running = False
