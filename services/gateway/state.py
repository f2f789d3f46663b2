"""What the gateway builds once at start and shares between requests."""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from common.blobstore import BlobStore
from common.netguard import URLPolicy
from common.pipeline import ChainSender
from common.settings import Settings
from services.gateway.authcache import PrincipalCache
from services.gateway.ratelimit import TokenBucket


@dataclass
class GatewayState:
    settings: Settings
    sender: ChainSender  # over ``redis``
    redis: Redis
    blobs: BlobStore
    url_policy: URLPolicy
    rate_limiter: TokenBucket
    model_id: str
    principals: PrincipalCache
