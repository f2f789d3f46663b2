"""/v1/jobs: submit, poll, list, images, heatmaps, deliveries and reviews."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import and_, or_
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from common.db.models import Job, JobStatus
from common.db.session import session_factory
from common.jobview import JobOut, job_view
from common.tenants import Principal
from common.vocabulary import LabelName, ReviewState, StatusName, TierName
from services.gateway.deps import CallerDep, PrincipalDep, SessionDep, StateDep, rate_limit
from services.gateway.edge import NoNul, refuse_nul
from services.gateway.intake import IntakeError, JobIntake, JobOptions, Submission
from services.gateway.job_queries import JobFilter, get_job, select_jobs
from services.gateway.media import blob_response, original_response
from services.gateway.state import GatewayState

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

WaitQuery = Annotated[
    float,
    Query(
        ge=0,
        le=30,
        description="hold the request until the verdict is known "
        "or this many seconds (at most 30) have passed",
    ),
]


class JobCreate(BaseModel):
    image_url: Annotated[str, NoNul] = Field(
        description="http(s) URL of the image to analyse", max_length=2048
    )
    explain: bool = True
    callback_url: Annotated[str, NoNul] | None = Field(default=None, max_length=2048)
    fresh: bool = Field(default=False, description="ignore a cached result for the same image")


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = None


class ErrorOut(BaseModel):
    detail: str


_MULTIPART_SCHEMA = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "the image"},
        "explain": {"type": "boolean", "default": True},
        "callback_url": {"type": "string", "maxLength": 2048},
        "fresh": {"type": "boolean", "default": False},
    },
}
_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
            "application/json": {"schema": JobCreate.model_json_schema()},
        },
    }
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut},
    408: {"model": ErrorOut, "description": "the request body stalled"},
    404: {"model": ErrorOut},
    413: {"model": ErrorOut},
    422: {"model": ErrorOut},
    429: {"model": ErrorOut},
    503: {"model": ErrorOut},
}


def _bool(value: Any, name: str, default: bool) -> bool:
    if value is None or value == "":
        return default
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise HTTPException(422, f"{name} must be true or false")


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"upload is over the {limit}-byte limit")
    return data


async def _parse_submission(request: Request, limit: int) -> tuple[Submission, JobOptions]:
    """The submission in the body. Its size and read time are bounded while it streams
    (services/gateway/edge.py): over the limit it is never read whole."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_fields=10)
        except HTTPException:  # the body is too large or stalled (413, 408)
            raise
        except Exception as exc:  # malformed multipart
            raise HTTPException(422, f"malformed multipart body: {exc}") from exc
        try:
            upload = form.get("file")
            url = form.get("image_url")
            for name in ("image_url", "callback_url"):
                field = form.get(name)
                refuse_nul(field if isinstance(field, str) else None, name)
            options = JobOptions(
                explain=_bool(form.get("explain"), "explain", True),
                callback_url=str(form.get("callback_url")) if form.get("callback_url") else None,
                fresh=_bool(form.get("fresh"), "fresh", False),
            )
            if isinstance(upload, UploadFile):
                data = await _read_limited(upload, limit)
                return Submission(data=data, filename=upload.filename), options
            if isinstance(url, str) and url:
                return Submission(image_url=url), options
        finally:
            await form.close()
        raise HTTPException(
            422, "send the image as a multipart field named 'file' (or JSON {\"image_url\": ...})"
        )
    if content_type.startswith("application/json"):
        body = await request.body()  # at most 64 KiB (the edge's limit for it)
        try:
            payload = JobCreate.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise HTTPException(422, f"invalid JSON body: {where}: {first['msg']}") from exc
        return Submission(image_url=payload.image_url), JobOptions(
            payload.explain, payload.callback_url, payload.fresh
        )
    raise HTTPException(
        415 if content_type else 422,
        "send multipart/form-data with a 'file' field, or application/json with an 'image_url'",
    )


def job_or_404(session: Session, principal: Principal, job_id: uuid.UUID) -> Job:
    """The caller's job, or 404 (another tenant's job answers as if it did not exist)."""
    job = get_job(session, principal.tenant_id, job_id)
    if job is None:
        raise HTTPException(404, f"job {job_id} not found")
    return job


def _snapshot(state: GatewayState, principal: Principal, job_id: uuid.UUID) -> JobOut:
    with session_factory(state.settings.database_url)() as session:
        return job_view(job_or_404(session, principal, job_id), state.settings.public_base_url)


async def _wait_for_verdict(
    state: GatewayState, principal: Principal, job_id: uuid.UUID, wait: float
) -> JobOut:
    """Poll Postgres (asynchronously: no worker thread is held while sleeping)."""
    deadline = time.monotonic() + min(wait, state.settings.max_wait_seconds)
    delay = 0.05
    while True:
        view = await run_in_threadpool(_snapshot, state, principal, job_id)
        if view.verdict is not None or view.status in JobStatus.FINAL:
            return view
        left = deadline - time.monotonic()
        if left <= 0:
            return view
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 1.5, 0.5)


def _job_response(view: JobOut) -> JSONResponse:
    """202 while the verdict is pending; 200 once it is in the answer (``?wait``)."""
    code = 200 if (view.verdict is not None or view.status == "failed") else 202
    return JSONResponse(
        view.model_dump(mode="json"), status_code=code, headers={"Location": view.status_url}
    )


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    responses={
        200: {"model": JobOut, "description": "verdict known (with ?wait)"},
        **ERROR_RESPONSES,
    },
    openapi_extra=_CREATE_BODY,
    summary="Submit an image (upload or URL)",
)
async def create_job(
    request: Request,
    state: StateDep,
    principal: CallerDep,
    wait: WaitQuery = 0,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JSONResponse:
    """Answers 202 with the job at once; 200 when ``?wait`` saw the verdict arrive."""
    refuse_nul(idempotency_key, "Idempotency-Key")
    # The caller is authenticated (CallerDep) and rate limited before a byte of the body
    # is read: a refused caller costs no body, however large it claims to be.
    await run_in_threadpool(rate_limit, state, principal)
    submission, options = await _parse_submission(request, state.settings.max_upload_bytes)

    def accept() -> JobOut:
        with session_factory(state.settings.database_url)() as session:
            intake = JobIntake(
                session, state.blobs, state.sender, state.settings, state.url_policy, state.model_id
            )
            accepted = intake.submit(principal, submission, options, idempotency_key)
            if accepted.image is not None:  # just written: no stage has run yet
                return job_view(
                    accepted.job, state.settings.public_base_url, image=accepted.image, stages=[]
                )
            return job_view(accepted.job, state.settings.public_base_url)

    try:
        view = await run_in_threadpool(accept)
    except IntakeError as exc:
        raise HTTPException(exc.status_code, str(exc)) from exc
    if wait > 0:
        view = await _wait_for_verdict(state, principal, view.id, wait)
    return _job_response(view)


@router.get("/{job_id}", response_model=JobOut, responses=ERROR_RESPONSES, summary="Read a job")
async def read_job(
    job_id: uuid.UUID, state: StateDep, principal: PrincipalDep, wait: WaitQuery = 0
) -> JobOut:
    if wait > 0:
        return await _wait_for_verdict(state, principal, job_id, wait)
    return await run_in_threadpool(_snapshot, state, principal, job_id)


def _encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, job_id = raw.split("|")
        return datetime.fromisoformat(created), uuid.UUID(job_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(422, "invalid cursor; use next_cursor from the previous page") from exc


@router.get("", response_model=JobPage, responses=ERROR_RESPONSES, summary="List jobs")
def read_jobs(
    session: SessionDep,
    state: StateDep,
    principal: PrincipalDep,
    status_: Annotated[StatusName | None, Query(alias="status")] = None,
    label: Annotated[LabelName | None, Query()] = None,
    tier: Annotated[TierName | None, Query()] = None,
    review: Annotated[ReviewState | None, Query()] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JobPage:
    job_filter = JobFilter(
        status=status_,
        label=label,
        tier=tier,
        review=review,
        created_after=created_after,
        created_before=created_before,
    )
    query = select_jobs(principal.tenant_id, job_filter)
    if cursor:
        created, last_id = _decode_cursor(cursor)
        query = query.where(
            or_(Job.created_at < created, and_(Job.created_at == created, Job.id < last_id))
        )
    rows = session.scalars(
        query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    ).all()
    items = [job_view(job, state.settings.public_base_url) for job in rows[:limit]]
    next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return JobPage(items=items, next_cursor=next_cursor)


_PNG = {200: {"content": {"image/png": {}}, "description": "PNG image"}, **ERROR_RESPONSES}


@router.get(
    "/{job_id}/heatmap.png", response_class=Response, responses=_PNG, summary="The Grad-CAM heatmap"
)
def read_heatmap(
    job_id: uuid.UUID, session: SessionDep, state: StateDep, principal: PrincipalDep
) -> Response:
    return blob_response(state, job_or_404(session, principal, job_id).heatmap_key, "heatmap")


@router.get(
    "/{job_id}/overlay.png",
    response_class=Response,
    responses=_PNG,
    summary="The heatmap over the image",
)
def read_overlay(
    job_id: uuid.UUID, session: SessionDep, state: StateDep, principal: PrincipalDep
) -> Response:
    return blob_response(state, job_or_404(session, principal, job_id).overlay_key, "overlay")


@router.get(
    "/{job_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/*": {}}}, **ERROR_RESPONSES},
    summary="The submitted image",
)
def read_image(
    job_id: uuid.UUID, session: SessionDep, state: StateDep, principal: PrincipalDep
) -> Response:
    return original_response(session, state, job_or_404(session, principal, job_id))
