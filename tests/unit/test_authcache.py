"""The gateway's per-process memory of authenticated keys."""

from __future__ import annotations

import uuid

from common.tenants import Principal
from services.gateway.authcache import PrincipalCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingLoader:
    def __init__(self, result: Principal | None) -> None:
        self.result = result
        self.calls = 0

    def __call__(self) -> Principal | None:
        self.calls += 1
        return self.result


def lookup(cache: PrincipalCache, key: str, load: CountingLoader) -> Principal | None:
    """What the gateway does per request (``services.gateway.deps.get_caller``)."""
    found = cache.cached(key)
    if found is None:
        found = load()
        cache.remember(key, found)
    return found


def principal() -> Principal:
    return Principal(uuid.uuid4(), "tenant", uuid.uuid4(), "key")


def test_a_found_key_is_remembered_until_the_ttl_passes() -> None:
    clock = FakeClock()
    cache = PrincipalCache(ttl=5.0, clock=clock)
    load = CountingLoader(principal())
    assert lookup(cache, "aigi_a", load) == load.result
    clock.now += 4.9
    assert lookup(cache, "aigi_a", load) == load.result
    assert load.calls == 1
    clock.now += 0.2  # past the TTL: looked up again (a revocation shows here)
    load.result = None
    assert lookup(cache, "aigi_a", load) is None
    assert load.calls == 2


def test_unknown_keys_are_never_remembered() -> None:
    cache = PrincipalCache(ttl=60.0, clock=FakeClock())
    load = CountingLoader(None)
    for _ in range(3):
        assert lookup(cache, "aigi_guess", load) is None
    assert load.calls == 3
    load.result = principal()  # the key is created: it works at once
    assert lookup(cache, "aigi_guess", load) == load.result


def test_zero_ttl_looks_up_every_time() -> None:
    cache = PrincipalCache(ttl=0, clock=FakeClock())
    load = CountingLoader(principal())
    lookup(cache, "aigi_a", load)
    lookup(cache, "aigi_a", load)
    assert load.calls == 2


def test_the_oldest_entries_go_first_beyond_the_size_limit() -> None:
    cache = PrincipalCache(ttl=60.0, max_entries=2, clock=FakeClock())
    loads = {name: CountingLoader(principal()) for name in ("a", "b", "c")}
    for name in ("a", "b", "c"):
        lookup(cache, name, loads[name])
    lookup(cache, "c", loads["c"])
    lookup(cache, "b", loads["b"])
    lookup(cache, "a", loads["a"])  # evicted by c: loaded again
    assert [loads[n].calls for n in ("a", "b", "c")] == [2, 1, 1]
