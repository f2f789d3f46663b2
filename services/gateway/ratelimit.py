"""Per-key token bucket in Redis (atomic in a Lua script)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from redis import Redis

_SCRIPT = """
local key = KEYS[1]
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', key, 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then tokens = capacity; ts = now end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= 1 then tokens = tokens - 1; allowed = 1 end
redis.call('HSET', key, 'tokens', tokens, 'ts', now)
redis.call('EXPIRE', key, math.ceil(capacity / rate) + 1)
return {allowed, tostring(tokens)}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int
    remaining: int


class TokenBucket:
    def __init__(self, redis: Redis, per_minute: int, burst: int) -> None:
        self.redis = redis
        self.rate = per_minute / 60.0
        self.capacity = burst
        self._script = redis.register_script(_SCRIPT)

    def take(self, key: str) -> Decision:
        allowed, tokens = self._script(
            keys=[f"aigi:rl:{key}"], args=[self.capacity, self.rate, time.time()]
        )
        left = float(tokens)
        retry = 0 if allowed else max(1, math.ceil((1 - left) / self.rate))
        return Decision(bool(allowed), retry, int(left))
