"""The moderators' dashboard: server-rendered pages under /dashboard.

Log in with an API key (the same keys as the API); the session cookie names the key,
which is re-checked on every request. Every page and image is scoped to the key's
tenant: another tenant's job answers 404, exactly as in the API.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from common.db.models import Job, JobStatus
from common.jobview import job_view
from common.reviews import DECISIONS, ReviewError, record_review
from common.tenants import authenticate
from services.gateway.dashboard.auth import (
    COOKIE_PATH,
    LOGIN_CSRF_COOKIE,
    DashboardDep,
    DashboardSession,
    check_csrf,
    check_login_token,
    clear_session_cookie,
    new_login_token,
    safe_next,
    set_login_cookie,
    set_session_cookie,
    sign_session,
)
from services.gateway.dashboard.charts import share_bar, stacked_bars
from services.gateway.dashboard.queries import (
    LABEL_NAMES,
    REVIEW_STATES,
    TIERS,
    WINDOWS,
    JobFilters,
    deliveries_of,
    list_jobs,
    overview,
    review_of,
)
from services.gateway.dashboard.templating import templates
from services.gateway.deps import SessionDep, StateDep
from services.gateway.edge import NUL_MESSAGE
from services.gateway.job_queries import get_job
from services.gateway.media import blob_response, original_response
from services.gateway.state import GatewayState

router = APIRouter(prefix=COOKIE_PATH, include_in_schema=False)

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def _page(
    request: Request,
    name: str,
    context: dict[str, Any],
    dashboard: DashboardSession | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    context = {
        "base": COOKIE_PATH,
        "principal": dashboard.principal if dashboard else None,
        "csrf_token": dashboard.csrf_token if dashboard else None,
        **context,
    }
    return templates.TemplateResponse(
        request, name, context, status_code=status_code, headers=SECURITY_HEADERS
    )


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER, headers=SECURITY_HEADERS)


# ---------------------------------------------------------------------------- login
def _login_page(
    request: Request, next_url: str, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or new_login_token()
    response = _page(
        request,
        "dashboard/login.html",
        {"login_token": token, "next": next_url, "error": error},
        status_code=status_code,
    )
    set_login_cookie(response, request, token)
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return _login_page(request, safe_next(next))


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    state: StateDep,
    session: SessionDep,
    api_key: Annotated[str, Form(max_length=500)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = COOKIE_PATH,
) -> Response:
    check_login_token(request, csrf_token)
    principal = authenticate(session, api_key.strip()) if api_key.strip() else None
    if principal is None:
        return _login_page(
            request, safe_next(next), "invalid or revoked API key", status.HTTP_401_UNAUTHORIZED
        )
    response = _redirect(safe_next(next))
    set_session_cookie(response, request, sign_session(state.settings, principal))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=COOKIE_PATH)
    return response


@router.post("/logout")
def logout(
    request: Request,
    dashboard: DashboardDep,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    check_csrf(dashboard, csrf_token)
    response = _redirect(f"{COOKIE_PATH}/login")
    clear_session_cookie(response, request)
    return response


# ---------------------------------------------------------------------------- overview
@router.get("", response_class=HTMLResponse)
def overview_page(
    request: Request,
    state: StateDep,
    session: SessionDep,
    dashboard: DashboardDep,
    window: str = "24h",
) -> HTMLResponse:
    chosen = WINDOWS.get(window, WINDOWS["24h"])
    data = overview(session, state.redis, dashboard.principal.tenant_id, chosen, datetime.now(UTC))
    charts = {
        "verdicts": stacked_bars(
            f"Jobs per verdict, {chosen.title}", data.buckets, chosen.unit, data.by_verdict
        ),
        "tiers": stacked_bars(
            f"Jobs per tier, {chosen.title}", data.buckets, chosen.unit, data.by_tier
        ),
        "sources": share_bar("Explanation source", data.explanation_sources),
    }
    return _page(
        request,
        "dashboard/overview.html",
        {"data": data, "charts": charts, "windows": WINDOWS, "nav": "overview"},
        dashboard,
    )


# ---------------------------------------------------------------------------- job list
def _list_context(
    request: Request, session: SessionDep, dashboard: DashboardSession
) -> dict[str, Any]:
    filters = JobFilters.parse(dict(request.query_params))
    listing = list_jobs(session, dashboard.principal.tenant_id, filters)
    filters.page = listing.page
    return {
        "filters": filters,
        "listing": listing,
        "statuses": JobStatus.ALL,
        "labels": LABEL_NAMES,
        "tiers": TIERS,
        "review_states": REVIEW_STATES,
        "nav": "jobs",
    }


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, session: SessionDep, dashboard: DashboardDep) -> HTMLResponse:
    return _page(
        request, "dashboard/jobs.html", _list_context(request, session, dashboard), dashboard
    )


@router.get("/jobs/rows", response_class=HTMLResponse)
def job_rows(request: Request, session: SessionDep, dashboard: DashboardDep) -> HTMLResponse:
    """The list's rows alone: what the page polls while a listed job is unfinished."""
    return _page(
        request, "dashboard/_job_rows.html", _list_context(request, session, dashboard), dashboard
    )


# ---------------------------------------------------------------------------- job detail
def _not_found(request: Request, dashboard: DashboardSession, job_id: uuid.UUID) -> HTMLResponse:
    return _page(
        request,
        "dashboard/not_found.html",
        {"what": f"job {job_id}", "nav": "jobs"},
        dashboard,
        status_code=status.HTTP_404_NOT_FOUND,
    )


def _detail(
    request: Request,
    state: GatewayState,
    session: SessionDep,
    dashboard: DashboardSession,
    job_id: uuid.UUID,
    review_error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    job = get_job(session, dashboard.principal.tenant_id, job_id)
    if job is None:
        return _not_found(request, dashboard, job_id)
    view = job_view(job, state.settings.public_base_url)
    return _page(
        request,
        "dashboard/job.html",
        {
            "job": job,
            "view": view,
            "review": review_of(session, job.id),
            "deliveries": deliveries_of(session, job.id),
            "decisions": DECISIONS,
            "review_error": review_error,
            "saved": request.query_params.get("saved") == "1",
            "finished": job.status in JobStatus.FINAL,
            "nav": "jobs",
        },
        dashboard,
        status_code=status_code,
    )


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(
    job_id: uuid.UUID,
    request: Request,
    state: StateDep,
    session: SessionDep,
    dashboard: DashboardDep,
) -> HTMLResponse:
    return _detail(request, state, session, dashboard, job_id)


@router.post("/jobs/{job_id}/review", response_class=HTMLResponse)
def review_job(
    job_id: uuid.UUID,
    request: Request,
    state: StateDep,
    session: SessionDep,
    dashboard: DashboardDep,
    decision: Annotated[str, Form(max_length=20)] = "",
    note: Annotated[str, Form(max_length=2000)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    check_csrf(dashboard, csrf_token)
    job = get_job(session, dashboard.principal.tenant_id, job_id)
    if job is None:
        return _not_found(request, dashboard, job_id)
    if "\x00" in note:  # Postgres refuses it: a form error, not a 500
        return _detail(
            request,
            state,
            session,
            dashboard,
            job_id,
            review_error=f"the note {NUL_MESSAGE}",
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    try:
        record_review(session, job, decision, dashboard.reviewer, note.strip() or None)
    except ReviewError as exc:
        session.rollback()
        return _detail(
            request,
            state,
            session,
            dashboard,
            job_id,
            review_error=str(exc),
            status_code=status.HTTP_409_CONFLICT
            if decision in DECISIONS
            else status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    session.commit()
    return _redirect(f"{COOKIE_PATH}/jobs/{job_id}?saved=1#review")


# ---------------------------------------------------------------------------- images
def _job_or_404(session: SessionDep, dashboard: DashboardSession, job_id: uuid.UUID) -> Job:
    job = get_job(session, dashboard.principal.tenant_id, job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} not found")
    return job


@router.get("/jobs/{job_id}/image")
def job_image(
    job_id: uuid.UUID, state: StateDep, session: SessionDep, dashboard: DashboardDep
) -> Response:
    return original_response(session, state, _job_or_404(session, dashboard, job_id))


@router.get("/jobs/{job_id}/overlay.png")
def job_overlay(
    job_id: uuid.UUID, state: StateDep, session: SessionDep, dashboard: DashboardDep
) -> Response:
    return blob_response(state, _job_or_404(session, dashboard, job_id).overlay_key, "overlay")


@router.get("/jobs/{job_id}/heatmap.png")
def job_heatmap(
    job_id: uuid.UUID, state: StateDep, session: SessionDep, dashboard: DashboardDep
) -> Response:
    return blob_response(state, _job_or_404(session, dashboard, job_id).heatmap_key, "heatmap")
