"""The dashboard in a real browser: Chromium against a real gateway, Postgres, Redis and
one real worker per queue. A moderator logs in, watches a job go from queued to done
without reloading, opens it, toggles the Grad-CAM overlay, reviews it and filters by
review state; another tenant sees none of it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.browser.conftest import ARTIFACTS
from tests.conftest import WorkerPool
from tests.helpers import image_bytes
from tests.integration.conftest import ApiUser

pytestmark = pytest.mark.browser

CLASSIFY_WORKER = "classify-main@test"


@contextmanager
def classify_paused(stack_env: dict[str, str]) -> Iterator[Any]:
    """Stop the session's classify worker from taking messages until resumed (or on exit),
    so the test can see a job sit in the queue and then finish."""
    from common.celery_app import make_celery
    from common.settings import Settings

    app = make_celery(
        Settings(redis_url=stack_env["AIGI_REDIS_URL"], database_url=stack_env["AIGI_DATABASE_URL"])
    )
    state = {"paused": False}

    def resume() -> None:
        if state["paused"]:
            replies = app.control.add_consumer(
                "classify", destination=[CLASSIFY_WORKER], reply=True, timeout=5
            )
            assert replies, "the classify worker did not answer add_consumer"
            state["paused"] = False

    replies = app.control.cancel_consumer(
        "classify", destination=[CLASSIFY_WORKER], reply=True, timeout=5
    )
    assert replies, "the classify worker did not answer cancel_consumer"
    state["paused"] = True
    try:
        yield resume
    finally:
        resume()
        app.close()


def _stuck(api: httpx.Client, stack_env: dict[str, str], job_id: str) -> str:
    from redis import Redis

    status = api.get(f"/v1/jobs/{job_id}").json().get("status")
    with Redis.from_url(stack_env["AIGI_REDIS_URL"]) as redis:
        depth = redis.llen("classify")
    return (
        f"job {job_id} did not finish (API status {status!r}, classify queue length {depth}); "
        "if another test session shares this Redis database, its start-up flush may have "
        "removed the message"
    )


def _save_failure(page: Any, errors: list[str]) -> None:
    """What the browser showed when the test failed: a screenshot, the HTML, the console."""
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page.screenshot(path=str(ARTIFACTS / "dashboard-failure.png"), full_page=True)
        (ARTIFACTS / "dashboard-failure.html").write_text(
            f"<!-- {page.url} -->\n<!-- console: {errors!r} -->\n{page.content()}"
        )
    except Exception as exc:  # the page may be gone; the original failure matters more
        print(f"could not save the failure artifacts: {exc}")


def _login(page: Any, base: str, key: str) -> None:
    page.goto(f"{base}/dashboard/login")
    page.fill("#api_key", key)
    page.click("button[type=submit]")


def test_dashboard_end_to_end(
    chromium: Any,
    gateway_url: str,
    pipeline_workers: WorkerPool,
    stack_env: dict[str, str],
    user: ApiUser,
    other_user: ApiUser,
) -> None:

    base = gateway_url
    with httpx.Client(base_url=base, headers=user.headers, timeout=30) as api:
        job_id = _moderate(chromium, base, api, stack_env, user)
    _check_isolation(chromium, base, job_id, other_user)


def _moderate(
    chromium: Any, base: str, api: httpx.Client, stack_env: dict[str, str], user: ApiUser
) -> str:
    from playwright.sync_api import expect

    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        # ---- a bad key is refused; the tenant's key logs in
        page.goto(f"{base}/dashboard")
        assert "/dashboard/login" in page.url
        _login(page, base, "aigi_wrong_key")
        expect(page.get_by_test_id("login-error")).to_have_text("invalid or revoked API key")
        errors.clear()  # the refused login answers 401, which Chromium logs
        _login(page, base, user.key)
        expect(page).to_have_url(f"{base}/dashboard")
        expect(page.locator("svg.chart")).to_have_count(3)
        expect(page.get_by_test_id("who")).to_contain_text(user.tenant_name)
        cookie = next(c for c in context.cookies() if c["name"] == "aigi_dashboard")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/dashboard"
        assert user.key not in cookie["value"]

        # ---- the list is open while a job is submitted; it appears and finishes live
        with classify_paused(stack_env) as resume:
            page.goto(f"{base}/dashboard/jobs")
            page.evaluate("window.__sameDocument = true")
            seed = uuid.uuid4().int % 2**32
            files = {"file": ("photo.png", image_bytes(size=(160, 120), seed=seed), "image/png")}
            created = api.post("/v1/jobs", files=files, data={"fresh": "true"})
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]
            row = page.locator(f'tr[data-job-id="{job_id}"]')
            expect(row).to_be_visible(timeout=20_000)  # the idle poll picks it up
            expect(row.get_by_test_id("status")).to_have_text("queued")
            expect(page.locator("#job-rows")).to_have_attribute("data-pending", "true")
            page.evaluate(
                """id => { window.__seen = [];
                   setInterval(() => {
                     const s = document.querySelector(
                       `tr[data-job-id="${id}"] [data-testid=status]`);
                     if (s && window.__seen[window.__seen.length - 1] !== s.textContent)
                       window.__seen.push(s.textContent);
                   }, 100); }""",
                job_id,
            )
            resume()
            try:
                expect(row.get_by_test_id("status")).to_have_text("done", timeout=90_000)
            except AssertionError as exc:
                raise AssertionError(_stuck(api, stack_env, job_id)) from exc
        assert page.evaluate("window.__sameDocument") is True, "updated without a reload"
        page.wait_for_function("() => window.__seen.at(-1) === 'done'", timeout=5_000)
        seen = page.evaluate("window.__seen")
        assert seen[0] == "queued" and seen[-1] == "done", seen
        expect(page.locator("#job-rows")).to_have_attribute("data-pending", "false")
        expect(row.locator(".verdict .label")).to_have_text(re.compile("^(REAL|FAKE)$"))
        # the thumbnail is the submitted image (each poll re-creates the row: wait for it)
        page.wait_for_function(
            """id => { const img = document.querySelector(`tr[data-job-id="${id}"] td.thumb img`);
                       return img && img.complete && img.naturalWidth === 160; }""",
            arg=job_id,
            timeout=10_000,
        )

        job = api.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "done" and job["evidence"]["overlay_url"]
        rois = job["evidence"]["rois"]

        # ---- the job page: image, overlay toggle, ROI boxes, tables
        row.locator("a.mono").click()
        expect(page).to_have_url(f"{base}/dashboard/jobs/{job_id}")
        expect(page.get_by_test_id("job-status")).to_have_text("done")
        overlay = page.locator("#overlay-image")
        expect(overlay).to_be_hidden()
        page.check("#overlay-toggle")
        expect(overlay).to_be_visible()
        page.wait_for_function(
            "() => { const img = document.getElementById('overlay-image');"
            " return img.complete && img.naturalWidth > 0; }",
            timeout=10_000,
        )
        page.uncheck("#overlay-toggle")
        expect(overlay).to_be_hidden()
        boxes = page.locator("#roi-layer g.roi rect")
        expect(boxes).to_have_count(len(rois))
        expect(page.locator("[data-testid=roi-table] tbody tr")).to_have_count(len(rois))
        image_box = page.locator("#job-image").bounding_box()
        assert image_box is not None
        for roi, rect in zip(rois, boxes.all(), strict=True):
            box = rect.bounding_box()
            assert box is not None
            x0, y0, x1, _ = roi["box_normalized"]
            # the drawn box sits where box_normalized says, on the displayed image
            assert abs(box["x"] - (image_box["x"] + x0 * image_box["width"])) < 3
            assert abs(box["y"] - (image_box["y"] + y0 * image_box["height"])) < 3
            assert abs(box["width"] - (x1 - x0) * image_box["width"]) < 4
        if rois:
            page.uncheck("#roi-toggle")
            expect(page.locator("#roi-layer")).to_be_hidden()
            page.check("#roi-toggle")
            expect(page.locator("#roi-layer")).to_be_visible()
        for stage in ("classify", "gradcam", "explain"):
            expect(page.locator(f'[data-testid=stages] tr[data-stage="{stage}"]')).to_be_visible()
        page.check("#overlay-toggle")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-job-detail.png"), full_page=True)

        # ---- review it
        page.check('input[name=decision][value="overturned"]')
        page.fill("#note", "looks like a camera photo to me")
        page.click("form.review-form button[type=submit]")
        expect(page.get_by_test_id("review-saved")).to_be_visible()
        current = page.get_by_test_id("current-review")
        expect(current).to_contain_text("overturned")
        expect(current).to_contain_text(f"default @ {user.tenant_name}")
        stored = api.get(f"/v1/jobs/{job_id}/review")
        assert stored.status_code == 200
        assert stored.json()["decision"] == "overturned"
        assert stored.json()["note"] == "looks like a camera photo to me"

        # ---- filter by review state
        page.goto(f"{base}/dashboard/jobs")
        for state, listed in (("overturned", True), ("unreviewed", False), ("confirmed", False)):
            page.select_option("select[name=review]", state)
            page.click("form.filters button[type=submit]")
            expect(page).to_have_url(re.compile(rf"review={state}"))
            expect(page.locator(f'tr[data-job-id="{job_id}"]')).to_have_count(1 if listed else 0)
        page.select_option("select[name=review]", "")
        page.click("form.filters button[type=submit]")
        expect(page.locator(f'tr[data-job-id="{job_id}"]')).to_have_count(1)
        page.screenshot(path=str(ARTIFACTS / "dashboard-jobs.png"), full_page=True)

        # ---- the overview counts the job and its stage runs
        page.goto(f"{base}/dashboard")
        expect(page.get_by_test_id("total-jobs")).to_have_text("1")
        classify = page.locator('[data-testid=latency] tr[data-stage="classify"] td').nth(1)
        expect(classify).to_have_text("1")
        page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)
        assert not errors, errors
        return str(job_id)
    except BaseException:
        _save_failure(page, errors)
        raise
    finally:
        context.close()


def _check_isolation(chromium: Any, base: str, job_id: str, other_user: ApiUser) -> None:
    """Another tenant sees none of it (as in the API)."""
    from playwright.sync_api import expect

    other = chromium.new_context()
    try:
        page = other.new_page()
        _login(page, base, other_user.key)
        expect(page).to_have_url(f"{base}/dashboard")
        response = page.goto(f"{base}/dashboard/jobs/{job_id}")
        assert response is not None and response.status == 404
        expect(page.get_by_test_id("not-found")).to_be_visible()
        for path in ("image", "overlay.png"):
            assert other.request.get(f"{base}/dashboard/jobs/{job_id}/{path}").status == 404
        page.goto(f"{base}/dashboard/jobs?q={job_id}")
        expect(page.locator(f'tr[data-job-id="{job_id}"]')).to_have_count(0)
        page.goto(f"{base}/dashboard/jobs")
        expect(page.locator(f'tr[data-job-id="{job_id}"]')).to_have_count(0)
        api_other = httpx.get(f"{base}/v1/jobs/{job_id}", headers=other_user.headers)
        assert api_other.status_code == 404
    finally:
        other.close()
