"""A per-process memory of recently authenticated API keys.

Looking a key up costs a pool checkout and a query on every request, a sizeable share
of the gateway's CPU per submission (docs/benchmarks.md). Keys change rarely,
so each gateway process remembers a successful lookup for ``ttl`` seconds. The price
is the revocation delay: a key revoked elsewhere (``aigi key revoke``, another
process) is refused by this process at most ``ttl`` seconds later. Unknown and revoked
keys are never remembered, so a new key works at once and a guessed key always costs a
lookup. Entries are keyed by the key's SHA-256, never the key itself.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from common.tenants import Principal, hash_key


class PrincipalCache:
    def __init__(
        self,
        ttl: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, key: str) -> Principal | None:
        """The principal remembered for ``key`` and not expired, else None (no I/O)."""
        if self.ttl <= 0:
            return None
        digest = hash_key(key)
        with self._lock:
            entry = self._entries.get(digest)
        return entry[1] if entry is not None and entry[0] > self._clock() else None

    def remember(self, key: str, principal: Principal | None) -> None:
        """Store a lookup's result: a principal for ``ttl`` seconds; None forgets ``key``."""
        if self.ttl <= 0:
            return
        digest = hash_key(key)
        with self._lock:
            if principal is None:
                self._entries.pop(digest, None)
                return
            self._entries[digest] = (self._clock() + self.ttl, principal)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
