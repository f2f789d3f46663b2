"""``JobIntake`` as a library (no HTTP): how a submission is recorded in Postgres."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from common.blobstore import BlobStore, LocalBlobStore, image_key
from common.db.models import IdempotencyKey, ImageData, Job, JobStatus
from common.db.session import session_factory, session_scope
from common.netguard import policy_for
from common.originals import ImageMissingError, read_original
from common.pipeline import ChainSender
from common.settings import Settings
from common.tenants import Principal, authenticate
from services.gateway.intake import Accepted, JobIntake, JobOptions, Submission
from tests.helpers import image_bytes
from tests.integration.conftest import make_user

MODEL_ID = "test-model"
#: ``submit(data, idempotency_key=None)``
Submit = Callable[..., Accepted]


@pytest.fixture
def settings(isolated_env: dict[str, str]) -> Settings:
    return Settings(
        database_url=isolated_env["AIGI_DATABASE_URL"], redis_url=isolated_env["AIGI_REDIS_URL"]
    )


@pytest.fixture
def principal(settings: Settings) -> Principal:
    user = make_user(settings.database_url)
    with session_factory(settings.database_url)() as session:
        found = authenticate(session, user.key)
    assert found is not None
    return found


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


@contextmanager
def submitter(settings: Settings, principal: Principal, blobs: BlobStore) -> Iterator[Submit]:
    """``submit(data, key)``: one submission through its own session, as a request."""
    sender = ChainSender.from_settings(settings)

    def submit(data: bytes, idempotency_key: str | None = None) -> Accepted:
        with session_factory(settings.database_url)() as session:
            intake = JobIntake(session, blobs, sender, settings, policy_for(()), MODEL_ID)
            return intake.submit(principal, Submission(data=data), JobOptions(), idempotency_key)

    try:
        yield submit
    finally:
        sender.close()


@pytest.fixture
def submit_as(settings: Settings, principal: Principal, blobs: LocalBlobStore) -> Iterator[Submit]:
    with submitter(settings, principal, blobs) as submit:
        yield submit


def jobs_of(settings: Settings, principal: Principal) -> int:
    with session_factory(settings.database_url)() as session:
        return (
            session.scalar(
                select(func.count()).select_from(Job).where(Job.tenant_id == principal.tenant_id)
            )
            or 0
        )


def test_concurrent_requests_with_one_idempotency_key_make_one_job(
    settings: Settings, principal: Principal, submit_as: Submit
) -> None:
    data, start = image_bytes(seed=501), threading.Barrier(6)
    results: list[Accepted] = []

    def request() -> None:
        start.wait()
        results.append(submit_as(data, "order-7"))

    threads = [threading.Thread(target=request) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 6
    assert len({r.job.id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert jobs_of(settings, principal) == 1


def test_an_expired_idempotency_key_starts_a_new_job(
    settings: Settings, principal: Principal, submit_as: Submit
) -> None:
    data = image_bytes(seed=502)
    first = submit_as(data, "order-8")
    with session_scope(settings.database_url) as session:
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.tenant_id == principal.tenant_id)
            .values(created_at=func.now() - func.make_interval(0, 0, 0, 0, 24 * 30))
        )
    again = submit_as(data, "order-8")
    assert again.created and again.job.id != first.job.id
    with session_factory(settings.database_url)() as session:
        key = session.get(IdempotencyKey, (principal.tenant_id, "order-8"))
        assert key is not None and key.job_id == again.job.id


def test_a_cached_result_is_recorded_under_its_idempotency_key(
    settings: Settings, principal: Principal, submit_as: Submit
) -> None:
    data = image_bytes(seed=503)
    original = submit_as(data)
    with session_scope(settings.database_url) as session:  # as if the workers had run
        session.execute(
            update(Job)
            .where(Job.id == original.job.id)
            .values(
                status=JobStatus.DONE,
                model_id=MODEL_ID,
                label=1,
                probability=0.9,
                tier="mostly fake",
                explain_status="done",
            )
        )
    copied = submit_as(data, "order-9")
    assert copied.created and copied.job.cached_from == original.job.id
    assert copied.job.status == JobStatus.DONE and copied.job.label == 1
    again = submit_as(data, "order-9")
    assert not again.created and again.job.id == copied.job.id
    assert jobs_of(settings, principal) == 2


def test_a_new_job_is_recorded_queued_with_its_image(
    settings: Settings, principal: Principal, submit_as: Submit
) -> None:
    accepted = submit_as(image_bytes(seed=504))
    assert accepted.created and accepted.image is not None
    with session_factory(settings.database_url)() as session:
        job = session.get(Job, accepted.job.id)
        assert job is not None and job.status == JobStatus.QUEUED
        assert job.image.sha256 == accepted.image.sha256
        assert job.created_at == accepted.job.created_at


def test_an_empty_idempotency_key_is_no_key(
    settings: Settings, principal: Principal, submit_as: Submit
) -> None:
    first = submit_as(image_bytes(seed=505), "")
    second = submit_as(image_bytes(seed=506), "")
    assert first.created and second.created and first.job.id != second.job.id
    with session_factory(settings.database_url)() as session:
        keys = session.scalar(
            select(func.count())
            .select_from(IdempotencyKey)
            .where(IdempotencyKey.tenant_id == principal.tenant_id)
        )
    assert keys == 0


def test_the_image_bytes_are_kept_in_postgres_with_the_job(
    settings: Settings, principal: Principal, submit_as: Submit, blobs: LocalBlobStore
) -> None:
    data = image_bytes(seed=507)
    accepted = submit_as(data)
    assert accepted.image is not None
    sha = accepted.image.sha256
    with session_factory(settings.database_url)() as session:
        assert session.scalar(select(ImageData.data).where(ImageData.sha256 == sha)) == data
        assert read_original(session, blobs, sha) == data
    assert not blobs.exists(image_key(sha)), "no file is written on the request path"
    assert not (blobs.root / "images").exists()
    # The same bytes again: one image row, one copy of the bytes, a second job.
    again = submit_as(data)
    assert again.created and again.job.id != accepted.job.id
    with session_factory(settings.database_url)() as session:
        copies = session.scalar(
            select(func.count()).select_from(ImageData).where(ImageData.sha256 == sha)
        )
    assert copies == 1


def test_with_image_store_blob_store_the_bytes_go_to_the_blob_store(
    settings: Settings, principal: Principal, blobs: LocalBlobStore
) -> None:
    data = image_bytes(seed=508)
    in_blobs = settings.model_copy(update={"image_store": "blob_store"})
    with submitter(in_blobs, principal, blobs) as submit:
        accepted = submit(data)
    assert accepted.image is not None
    sha = accepted.image.sha256
    assert blobs.get(image_key(sha)) == data
    with session_factory(settings.database_url)() as session:
        assert session.get(ImageData, sha) is None
        assert read_original(session, blobs, sha) == data  # readers fall back to the store
        blobs.delete(image_key(sha))
        with pytest.raises(ImageMissingError, match=sha):
            read_original(session, blobs, sha)
