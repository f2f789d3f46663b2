"""Webhook events for a job, and one delivery attempt at a time.

A delivery is a row in Postgres (``webhook_deliveries``): created once per job and
event, attempted by the ``aigi.deliver_webhook`` task on the notify queue, and
re-scheduled there with exponential backoff and jitter. The scheduler (``aigi
scheduler``) sends due retries; a receiver that is down delays only its own
deliveries, never the pipeline or other receivers.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from datetime import timedelta

from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert

from common.db.models import DeliveryAttempt, DeliveryStatus, Job, Tenant, WebhookDelivery
from common.jobview import job_view
from common.netguard import FetchError, SafeClient, UnsafeURLError, policy_for
from common.queues import DELIVER_WEBHOOK, NOTIFY
from common.webhooks import signed_headers
from services.runtime import StageRun, WorkerContext, load_job, now

log = logging.getLogger("aigi.notify")

RETRYABLE_4XX = frozenset({408, 409, 425, 429})
#: How long a claimed delivery may sit in the queue before the scheduler re-sends it.
CLAIM_SECONDS = 120


def callback_for(job: Job, tenant: Tenant) -> str | None:
    return job.callback_url or tenant.default_callback_url


def create_delivery(ctx: WorkerContext, job_id: str | uuid.UUID, event: str) -> uuid.UUID | None:
    """The delivery row for (job, event), created at most once. None if nothing to send."""
    if event not in ctx.settings.webhook_event_set:
        return None
    with ctx.session() as session:
        job = load_job(session, job_id)
        tenant = session.get(Tenant, job.tenant_id)
        assert tenant is not None
        url = callback_for(job, tenant)
        if not url:
            return None
        delivery_id = uuid.uuid4()
        inserted = session.execute(
            insert(WebhookDelivery)
            .values(
                id=delivery_id,
                job_id=job.id,
                tenant_id=job.tenant_id,
                event=event,
                url=url,
                status=DeliveryStatus.PENDING,
                next_attempt_at=now() + timedelta(seconds=CLAIM_SECONDS),
            )
            .on_conflict_do_nothing(constraint="uq_delivery_job_event")
            .returning(WebhookDelivery.id)
        ).scalar_one_or_none()
        return inserted


def schedule_event(ctx: WorkerContext, job_id: str | uuid.UUID, event: str, app: Celery) -> None:
    delivery_id = create_delivery(ctx, job_id, event)
    if delivery_id is not None:
        app.send_task(DELIVER_WEBHOOK, args=(str(delivery_id),), queue=NOTIFY)


def notify_job(ctx: WorkerContext, job_id: uuid.UUID, run: StageRun, app: Celery) -> None:
    """The chain's last stage: announce that the job is done."""
    schedule_event(ctx, job_id, "done", app)
    with ctx.session() as session:
        run.finish(session)


def backoff_seconds(attempt: int, base: float, cap: float = 3600.0) -> float:
    """Exponential backoff with full jitter: uniform in [base, base * 2^attempt]."""
    ceiling = min(cap, base * (2 ** max(0, attempt)))
    return random.uniform(base, max(base, ceiling))


def _payload(ctx: WorkerContext, delivery: WebhookDelivery, job: Job) -> bytes:
    view = job_view(job, ctx.settings.public_base_url)
    body = {
        "type": f"job.{delivery.event}",
        "timestamp": now().isoformat(),
        "data": json.loads(view.model_dump_json()),
    }
    return json.dumps(body, separators=(",", ":")).encode()


def deliver(ctx: WorkerContext, delivery_id: str, client: SafeClient | None = None) -> str:
    """One attempt for one delivery; returns the delivery's status afterwards."""
    with ctx.session() as session:
        delivery = session.get(WebhookDelivery, uuid.UUID(delivery_id))
        if delivery is None or delivery.status != DeliveryStatus.PENDING:
            return delivery.status if delivery else "missing"
        job = load_job(session, delivery.job_id)
        tenant = session.get(Tenant, delivery.tenant_id)
        assert tenant is not None
        body = _payload(ctx, delivery, job)
        keys = [tenant.webhook_secret]
        if tenant.previous_webhook_secret:
            keys.append(tenant.previous_webhook_secret)
        url, attempt = delivery.url, delivery.attempts + 1
    headers = signed_headers(keys, str(delivery.id), int(time.time()), body)
    headers["user-agent"] = "aigi-webhooks/1"
    own_client = client is None
    client = client or SafeClient(
        policy_for(ctx.settings.allowed_fetch_hosts), timeout=ctx.settings.webhook_timeout_seconds
    )
    started = time.perf_counter()
    status_code: int | None = None
    error: str | None = None
    refused = False
    try:
        result = client.request(
            "POST", url, content=body, headers=headers, max_bytes=64 * 1024, follow_redirects=False
        )
        status_code = result.status_code
    except UnsafeURLError as exc:  # never retried: a forbidden or malformed URL stays so
        error, refused = f"refused: {exc}", True
    except FetchError as exc:
        error = str(exc)
    except Exception as exc:  # an attempt is recorded, whatever happened
        # Without this, a task that crashes records nothing: the delivery stays pending
        # with 0 attempts and the scheduler re-sends it forever.
        log.exception("webhook attempt failed unexpectedly", extra={"delivery_id": delivery_id})
        error = f"unexpected error: {type(exc).__name__}: {exc}"
    finally:
        if own_client:
            client.close()
    latency = (time.perf_counter() - started) * 1000.0
    ok = status_code is not None and 200 <= status_code < 300
    retryable = (
        not ok
        and not refused
        and (status_code is None or status_code >= 500 or status_code in RETRYABLE_4XX)
    )
    if ok:
        status, next_at = DeliveryStatus.SUCCEEDED, None
    elif retryable and attempt < ctx.settings.webhook_max_attempts:
        status = DeliveryStatus.PENDING
        next_at = now() + timedelta(
            seconds=backoff_seconds(attempt - 1, ctx.settings.webhook_backoff_base_seconds)
        )
    else:
        status, next_at = DeliveryStatus.FAILED, None
    if status_code is not None and not ok and error is None:
        error = f"receiver answered HTTP {status_code}"
    with ctx.session() as session:
        session.add(
            DeliveryAttempt(
                delivery_id=uuid.UUID(delivery_id),
                status_code=status_code,
                latency_ms=latency,
                error=error,
            )
        )
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == uuid.UUID(delivery_id))
            .values(
                status=status,
                attempts=attempt,
                next_attempt_at=next_at,
                last_status_code=status_code,
                last_error=error,
            )
        )
    log.info(
        "webhook attempt",
        extra={
            "delivery_id": delivery_id,
            "status": status,
            "http_status": status_code,
            "attempt": attempt,
        },
    )
    return status


def due_deliveries(ctx: WorkerContext, limit: int = 500) -> list[uuid.UUID]:
    """Claim pending deliveries whose time has come (each claim lasts CLAIM_SECONDS)."""
    with ctx.session() as session:
        rows = session.scalars(
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.next_attempt_at <= now(),
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if rows:
            session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_(rows))
                .values(next_attempt_at=now() + timedelta(seconds=CLAIM_SECONDS))
            )
        return list(rows)
