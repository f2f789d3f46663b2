"""One typed settings class, read from ``AIGI_*`` environment variables (or ``.env``).

Validated once at start: a bad value stops the process with a message naming the
variable. Outside development mode, default secrets are refused.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET = "change-me-in-production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AIGI_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    environment: Literal["development", "test", "production"] = "development"
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET)

    # Infrastructure
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    redis_url: str = "redis://127.0.0.1:6379/0"
    blob_store: Literal["local", "s3"] = "local"
    blob_dir: Path = Path("var/blobs")
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_prefix: str = "aigi/"
    # Where uploads are kept: with the job row in Postgres (one write on the request
    # path, atomic with the job), or in the blob store above (originals out of the
    # database, e.g. S3, at the cost of a blob write per new image). Heatmaps and
    # overlays always go to the blob store; readers find an image in either place.
    image_store: Literal["postgres", "blob_store"] = "postgres"

    # Detector
    model_path: Path | None = Field(
        default=None, description="checkpoint folder; default: the shipped detector"
    )
    model_device: str = "cpu"
    model_batch_size: int = Field(default=16, ge=1, le=1024)
    torch_threads: int = Field(default=1, ge=1, le=256)

    # Gateway limits
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(default=50_000_000, ge=1)
    max_wait_seconds: float = Field(default=30.0, ge=0, le=30)
    body_read_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="longest wait for the next piece of a request body before 408",
    )
    public_base_url: str = "http://127.0.0.1:8000"

    # Queues and reliability. A killed worker's message comes back after the visibility
    # timeout of its stage; it must stay above the stage's hard time limit.
    task_time_limit_seconds: int = Field(default=45, ge=1)
    visibility_timeout_seconds: int = Field(default=60, ge=2)
    explain_time_limit_seconds: int = Field(default=150, ge=1)
    explain_visibility_timeout_seconds: int = Field(default=180, ge=2)
    unacked_restore_interval_seconds: float = Field(default=5.0, gt=0)
    stage_deadline_seconds: float = Field(default=300.0, gt=0)
    reconcile_interval_seconds: float = Field(default=15.0, gt=0)
    max_reconcile_attempts: int = Field(default=5, ge=1)
    worker_stage: Literal["classify", "gradcam", "explain", "notify"] | None = Field(
        default=None,
        description="the one stage this worker process runs (its time limits apply); "
        "set by `aigi worker <stage>`, unset = a worker of every stage",
    )

    # Grad-CAM and ROIs
    roi_top_k: int = Field(default=5, ge=1, le=50)
    roi_threshold: float = Field(default=0.5, gt=0, lt=1)

    # Explainer (LLM)
    llm_url: str | None = Field(
        default=None, description="base URL of TGI / vLLM / llama.cpp; unset = evidence only"
    )
    llm_model: str = "mistralai/Mistral-7B-Instruct-v0.3"
    llm_api_key: SecretStr | None = None
    llm_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="one LLM call; with AIGI_LLM_URL set it must fit in the explain "
        "task's LLM budget (llm_budget_seconds), or the settings are refused",
    )
    llm_max_tokens: int = Field(default=1024, ge=16)
    llm_schema_style: Literal["auto", "tgi", "openai", "none"] = "auto"
    llm_breaker_failures: int = Field(default=3, ge=1)
    llm_breaker_reset_seconds: float = Field(default=60.0, gt=0)

    # Webhooks
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_max_attempts: int = Field(default=6, ge=1, le=20)
    webhook_backoff_base_seconds: float = Field(default=2.0, gt=0)
    webhook_events: str = "verdict,done"

    # Edge
    rate_limit_per_minute: int = Field(default=600, ge=1)
    rate_limit_burst: int = Field(default=100, ge=1)
    url_fetch_allow_hosts: str = ""
    url_fetch_timeout_seconds: float = Field(default=10.0, gt=0)
    idempotency_ttl_hours: int = Field(default=24, ge=1)
    gateway_warm_connections: int = Field(
        default=10,
        ge=0,
        le=20,  # the pool keeps at most 20 idle connections (common/db/session.py)
        description="Postgres connections each gateway process opens at start, before "
        "it serves requests (0 = open them on demand)",
    )
    auth_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="how long a gateway process trusts a key it has looked up; a revoked "
        "key is refused by every process within this time (0 = look up on every request)",
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str) -> str:
        if not value.startswith(("postgresql", "postgres://")):
            raise ValueError(
                "AIGI_DATABASE_URL must be a PostgreSQL URL (postgresql+psycopg://...)"
            )
        if value.startswith("postgres://"):
            value = "postgresql+psycopg://" + value[len("postgres://") :]
        elif value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value[len("postgresql://") :]
        return value

    @model_validator(mode="after")
    def _secrets_outside_development(self) -> Settings:
        if self.environment == "production" and (
            self.secret_key.get_secret_value() == DEFAULT_SECRET
            or len(self.secret_key.get_secret_value()) < 32
        ):
            raise ValueError(
                "AIGI_SECRET_KEY is the default or shorter than 32 characters; set a random "
                "secret (python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        if self.visibility_timeout_seconds <= self.task_time_limit_seconds:
            raise ValueError(
                "AIGI_VISIBILITY_TIMEOUT_SECONDS must exceed "
                "AIGI_TASK_TIME_LIMIT_SECONDS, or running tasks are redelivered"
            )
        if self.explain_visibility_timeout_seconds <= self.explain_time_limit_seconds:
            raise ValueError(
                "AIGI_EXPLAIN_VISIBILITY_TIMEOUT_SECONDS must exceed "
                "AIGI_EXPLAIN_TIME_LIMIT_SECONDS"
            )
        if self.llm_url and self.llm_timeout_seconds > self.llm_budget_seconds():
            raise ValueError(
                f"AIGI_LLM_TIMEOUT_SECONDS={self.llm_timeout_seconds:g} cannot fit in the "
                f"explain stage: AIGI_EXPLAIN_TIME_LIMIT_SECONDS="
                f"{self.explain_time_limit_seconds} leaves {self.llm_budget_seconds():.1f}s "
                "of LLM time per job (the soft limit, 5 s before the hard one, less a margin "
                "for the database). Lower the LLM timeout or raise the explain limit to at "
                f"least {explain_limit_for(self.llm_timeout_seconds)} (and "
                "AIGI_EXPLAIN_VISIBILITY_TIMEOUT_SECONDS above it)"
            )
        if self.blob_store == "s3" and not self.s3_bucket:
            raise ValueError("AIGI_BLOB_STORE=s3 needs AIGI_S3_BUCKET")
        return self

    def time_limit(self, stage: str | None) -> int:
        """Hard time limit of one task of ``stage`` (the LLM stage gets longer)."""
        return (
            self.explain_time_limit_seconds
            if stage == "explain"
            else (self.task_time_limit_seconds)
        )

    def llm_budget_seconds(self) -> float:
        """LLM seconds one explain task may spend: its soft time limit (hard - 5 s, see
        ``common/celery_app.py``) less a margin (5 %, at least 1 s) for reading the job
        and storing the result. One LLM call (``llm_timeout_seconds``) must fit in it."""
        soft = max(1.0, self.explain_time_limit_seconds - 5.0)
        return soft - max(1.0, 0.05 * soft)

    def visibility_timeout(self, stage: str | None) -> int:
        if stage == "explain":
            return self.explain_visibility_timeout_seconds
        if stage is None:  # a producer: restores nothing, but keep the longest
            return max(self.visibility_timeout_seconds, self.explain_visibility_timeout_seconds)
        return self.visibility_timeout_seconds

    @property
    def allowed_fetch_hosts(self) -> frozenset[str]:
        return frozenset(
            h.strip().lower() for h in self.url_fetch_allow_hosts.split(",") if h.strip()
        )

    @property
    def webhook_event_set(self) -> frozenset[str]:
        return frozenset(e.strip() for e in self.webhook_events.split(",") if e.strip())


def explain_limit_for(llm_timeout_seconds: float) -> int:
    """The smallest AIGI_EXPLAIN_TIME_LIMIT_SECONDS whose LLM budget holds one call."""
    soft = max(llm_timeout_seconds + 1.0, llm_timeout_seconds / 0.95)
    return math.ceil(soft) + 5


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
