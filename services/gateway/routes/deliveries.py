"""Webhook deliveries of a job, and re-sending a failed one."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy import select

from common.db.models import DeliveryStatus, WebhookDelivery
from common.queues import DELIVER_WEBHOOK, NOTIFY
from services.gateway.deps import PrincipalDep, SessionDep, StateDep
from services.gateway.routes.jobs import ERROR_RESPONSES, ErrorOut, job_or_404

log = logging.getLogger("aigi.gateway")

router = APIRouter(prefix="/v1/jobs", tags=["webhooks"])


class AttemptOut(BaseModel):
    attempted_at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None


class DeliveryOut(BaseModel):
    id: uuid.UUID
    event: str
    url: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    attempt_log: list[AttemptOut]


def _out(delivery: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        event=delivery.event,
        url=delivery.url,
        status=delivery.status,
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        created_at=delivery.created_at,
        attempt_log=[
            AttemptOut(
                attempted_at=a.attempted_at,
                status_code=a.status_code,
                latency_ms=a.latency_ms,
                error=a.error,
            )
            for a in delivery.attempt_log
        ],
    )


@router.get(
    "/{job_id}/deliveries",
    response_model=list[DeliveryOut],
    responses=ERROR_RESPONSES,
    summary="Webhook deliveries of a job, with every attempt",
)
def read_deliveries(
    job_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> list[DeliveryOut]:
    job = job_or_404(session, principal, job_id)
    rows = session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.job_id == job.id)
        .order_by(WebhookDelivery.created_at)
    ).all()
    return [_out(row) for row in rows]


@router.post(
    "/{job_id}/deliveries/{delivery_id}/resend",
    response_model=DeliveryOut,
    status_code=202,
    responses={
        409: {"model": ErrorOut, "description": "the delivery is not failed"},
        **ERROR_RESPONSES,
    },
    summary="Re-send a failed delivery (409 for a pending or succeeded one)",
)
def resend_delivery(
    job_id: uuid.UUID,
    delivery_id: uuid.UUID,
    session: SessionDep,
    state: StateDep,
    principal: PrincipalDep,
) -> DeliveryOut:
    job = job_or_404(session, principal, job_id)
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.job_id != job.id:
        raise HTTPException(404, f"delivery {delivery_id} not found")
    if delivery.status == DeliveryStatus.PENDING:
        raise HTTPException(409, "this delivery is still being attempted")
    if delivery.status == DeliveryStatus.SUCCEEDED:
        # Only a failed delivery is re-sent: the receiver acknowledged this one (2xx); a
        # receiver that lost it reads the job with GET /v1/jobs/{id}.
        raise HTTPException(409, "this delivery succeeded; only a failed one can be re-sent")
    delivery.status = DeliveryStatus.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = datetime.now(UTC)
    session.commit()
    try:
        state.sender.send(DELIVER_WEBHOOK, NOTIFY, (str(delivery.id),))
    except (RedisError, OSError) as exc:  # due now: the scheduler sends it once Redis is back
        log.error(
            "broker unavailable; delivery left for the scheduler",
            extra={"delivery_id": str(delivery.id), "error": str(exc)},
        )
    return _out(delivery)
