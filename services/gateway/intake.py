"""Accepting a job: validate, dedup, record the job with its image, enqueue.

A plain class with its collaborators passed in (usable without HTTP); the routes only
map its errors to status codes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from common.blobstore import BlobStore, image_key, sha256_hex
from common.db.models import IdempotencyKey, Image, Job, JobStatus, StageStatus
from common.images import ImageDecodeError, inspect_image
from common.netguard import FetchError, SafeClient, UnsafeURLError, URLPolicy
from common.pipeline import JobSender
from common.queues import CLASSIFY, NOTIFY
from common.settings import Settings
from common.tenants import Principal

log = logging.getLogger("aigi.gateway")

# The image row and its bytes (a no-op when these bytes are known; the bytes only when
# the image store is Postgres), then the job and its
# Idempotency-Key (when one was sent), unless the bytes were known and this tenant has a
# finished job for them and this model to copy: then the newest such job's id comes back
# instead (``reusable_id``) and nothing else is written. One statement is atomic and its
# parts see one snapshot; ``new_image`` is empty when the image row already existed. A
# key already taken (a concurrent request with the same key) fails the whole statement
# with a unique violation. Exactly one row comes back. psycopg's placeholders: it runs
# through ``exec_driver_sql``, with no SQLAlchemy compilation per request; a name used
# twice is one parameter (``$n``), so the bytes travel once.
_RECORD_JOB = """
    WITH new_image AS (
        INSERT INTO images (sha256, size_bytes, content_type, format, width, height)
        VALUES (%(sha256)s, %(size_bytes)s, %(content_type)s, %(format)s, %(width)s,
                %(height)s)
        ON CONFLICT (sha256) DO NOTHING
        RETURNING sha256
    ), new_image_data AS (
        INSERT INTO image_data (sha256, data)
        SELECT sha256, %(data)s::bytea FROM new_image WHERE %(data)s::bytea IS NOT NULL
    ), reusable AS (
        SELECT id FROM jobs
        WHERE %(use_cache)s AND NOT EXISTS (SELECT 1 FROM new_image)
          AND tenant_id = %(tenant_id)s AND image_sha256 = %(sha256)s
          AND model_id = %(model_id)s AND status = %(done)s
          AND (explain OR NOT %(explain)s)
        ORDER BY created_at DESC
        LIMIT 1
    ), inserted AS (
        INSERT INTO jobs (id, tenant_id, status, image_sha256, source_url, explain,
                          callback_url, reconcile_count)
        SELECT %(id)s, %(tenant_id)s, %(status)s, %(sha256)s, %(source_url)s, %(explain)s,
               %(callback_url)s, 0
        WHERE NOT EXISTS (SELECT 1 FROM reusable)
        RETURNING id, created_at, updated_at
    ), keyed AS (
        INSERT INTO idempotency_keys (tenant_id, key, request_hash, job_id)
        SELECT %(tenant_id)s, %(idempotency_key)s::text, %(request_hash)s::text, id FROM inserted
        WHERE %(idempotency_key)s::text IS NOT NULL
    )
    SELECT (SELECT id FROM reusable) AS reusable_id, inserted.created_at, inserted.updated_at
    FROM (SELECT 1) AS one LEFT JOIN inserted ON true
"""


class IntakeError(Exception):
    status_code = 422


class PayloadTooLargeError(IntakeError):
    status_code = 413


class InvalidImageError(IntakeError):
    status_code = 422


class IdempotencyConflictError(IntakeError):
    status_code = 422


@dataclass(frozen=True)
class JobOptions:
    explain: bool = True
    callback_url: str | None = None
    fresh: bool = False


@dataclass(frozen=True)
class Submission:
    data: bytes | None = None
    image_url: str | None = None
    filename: str | None = None


@dataclass
class Accepted:
    job: Job
    created: bool
    image: Image | None = None  # the image row, when this request wrote the job


class JobIntake:
    def __init__(
        self,
        session: Session,
        blobs: BlobStore,
        sender: JobSender,
        settings: Settings,
        url_policy: URLPolicy,
        model_id: str,
    ) -> None:
        self.session = session
        self.blobs = blobs
        self.sender = sender
        self.settings = settings
        self.url_policy = url_policy
        self.model_id = model_id

    # -- validation -----------------------------------------------------------------
    def check_callback(self, url: str | None) -> None:
        if url is None:
            return
        if len(url) > 2048:
            raise IntakeError("callback_url is longer than 2048 characters")
        try:
            self.url_policy.check(url)
        except UnsafeURLError as exc:
            raise IntakeError(f"callback_url refused: {exc}") from exc

    def fetch(self, url: str) -> bytes:
        if len(url) > 2048:
            raise IntakeError("image_url is longer than 2048 characters")
        client = SafeClient(self.url_policy, timeout=self.settings.url_fetch_timeout_seconds)
        try:
            result = client.request(
                "GET", url, max_bytes=self.settings.max_upload_bytes, headers={"accept": "image/*"}
            )
        except UnsafeURLError as exc:
            raise IntakeError(f"image_url refused: {exc}") from exc
        except FetchError as exc:
            if "limit" in str(exc) and "byte" in str(exc):
                raise PayloadTooLargeError(f"image_url: {exc}") from exc
            raise IntakeError(f"image_url could not be fetched: {exc}") from exc
        finally:
            client.close()
        if result.status_code != 200:
            raise IntakeError(f"image_url answered HTTP {result.status_code}, expected 200")
        return result.content

    # -- the whole submission ---------------------------------------------------------
    def submit(
        self,
        principal: Principal,
        submission: Submission,
        options: JobOptions,
        idempotency_key: str | None = None,
    ) -> Accepted:
        self.check_callback(options.callback_url)
        idempotency_key = idempotency_key or None  # an empty header is no key
        # The upload's digest, computed once: the image's key and part of the request's.
        sha = sha256_hex(submission.data) if submission.data is not None else None
        request_hash = None
        if idempotency_key:
            request_hash = self._request_hash(sha, submission.image_url, options)
            previous = self._idempotent(principal, idempotency_key, request_hash)
            if previous is not None:
                return Accepted(previous, created=False)
        data = submission.data
        if data is None:
            assert submission.image_url is not None
            data = self.fetch(submission.image_url)
        if len(data) > self.settings.max_upload_bytes:
            raise PayloadTooLargeError(
                f"image is {len(data)} bytes; the limit is {self.settings.max_upload_bytes}"
            )
        try:
            info = inspect_image(data, self.settings.max_image_pixels)
        except ImageDecodeError as exc:
            raise InvalidImageError(str(exc)) from exc
        sha = sha or sha256_hex(data)  # a fetched image is hashed here
        keep_in_postgres = self.settings.image_store == "postgres"
        if not keep_in_postgres and not self.blobs.exists(image_key(sha)):
            self.blobs.put(image_key(sha), data)
        image = Image(
            sha256=sha,
            size_bytes=len(data),
            content_type=info.content_type,
            format=info.format,
            width=info.width,
            height=info.height,
        )
        job = Job(
            id=uuid.uuid4(),
            tenant_id=principal.tenant_id,
            image_sha256=sha,
            source_url=submission.image_url,
            explain=options.explain,
            callback_url=options.callback_url,
            status=JobStatus.QUEUED,
        )
        try:
            reusable_id = self._record(
                image,
                data if keep_in_postgres else None,
                job,
                not options.fresh,
                idempotency_key,
                request_hash,
            )
            if reusable_id is None:
                self._enqueue(job.id, CLASSIFY)
                return Accepted(job, created=True, image=image)
            # A finished job for the same bytes exists: the new job copies its results.
            cached = self.session.get(Job, reusable_id)
            if cached is not None:  # else deleted meanwhile (tenant removed): run anew
                self._copy_results(cached, job)
            self.session.add(job)
            if idempotency_key and request_hash:
                self.session.flush()
                self.session.add(
                    IdempotencyKey(
                        tenant_id=principal.tenant_id,
                        key=idempotency_key,
                        request_hash=request_hash,
                        job_id=job.id,
                    )
                )
            self.session.commit()
        except IntegrityError:
            # A concurrent request with the same Idempotency-Key won the race.
            self.session.rollback()
            if not idempotency_key or not request_hash:
                raise
            previous = self._idempotent(principal, idempotency_key, request_hash)
            if previous is None:
                raise
            return Accepted(previous, created=False)
        self._enqueue(job.id, NOTIFY if cached is not None else CLASSIFY)
        return Accepted(job, created=True, image=image)

    def _record(
        self,
        image: Image,
        data: bytes | None,
        job: Job,
        use_cache: bool,
        idempotency_key: str | None,
        request_hash: str | None,
    ) -> uuid.UUID | None:
        """Record the image (if new; with its bytes ``data``, unless None) and ``job`` as
        queued, with its Idempotency-Key, in one statement; or, writing nothing, return
        the id of a finished job whose results ``job`` can copy (the newest of this
        tenant for the same bytes and model; never when the image is new; only explained
        ones when ``job`` wants an explanation).

        A single statement commits itself: it runs on a pooled connection in autocommit
        mode, one round trip to Postgres, where an ORM session took three (BEGIN, the
        statement, COMMIT) and more of the gateway's CPU (docs/benchmarks.md).
        ``job``'s timestamps come back from it; ``job`` itself stays outside the
        session."""
        engine = self.session.get_bind().engine
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            row = connection.exec_driver_sql(
                _RECORD_JOB,
                {
                    "sha256": image.sha256,
                    "size_bytes": image.size_bytes,
                    "content_type": image.content_type,
                    "format": image.format,
                    "width": image.width,
                    "height": image.height,
                    "data": data,
                    "use_cache": use_cache,
                    "tenant_id": job.tenant_id,
                    "model_id": self.model_id,
                    "done": JobStatus.DONE,
                    "id": job.id,
                    "status": job.status,
                    "source_url": job.source_url,
                    "explain": job.explain,
                    "callback_url": job.callback_url,
                    "idempotency_key": idempotency_key,
                    "request_hash": request_hash,
                },
            ).one()
        reusable_id: uuid.UUID | None = row.reusable_id
        if reusable_id is None:
            job.created_at, job.updated_at = row.created_at, row.updated_at
        return reusable_id

    def _enqueue(self, job_id: uuid.UUID, first_stage: str) -> None:
        try:
            self.sender.enqueue(job_id, first_stage)
        except (RedisError, OSError) as exc:
            # The job row is committed: the reconciler enqueues it once Redis is back.
            log.error(
                "broker unavailable; job left for the reconciler",
                extra={"job_id": str(job_id), "error": str(exc)},
            )

    @staticmethod
    def _request_hash(upload_sha: str | None, image_url: str | None, options: JobOptions) -> str:
        digest = hashlib.sha256()
        if upload_sha is not None:
            digest.update(bytes.fromhex(upload_sha))
        digest.update(
            json.dumps([image_url, options.explain, options.callback_url, options.fresh]).encode()
        )
        return digest.hexdigest()

    def _idempotent(self, principal: Principal, key: str, request_hash: str) -> Job | None:
        if len(key) > 255:
            raise IntakeError("Idempotency-Key is longer than 255 characters")
        row = self.session.get(IdempotencyKey, (principal.tenant_id, key))
        if row is None:
            return None
        age = datetime.now(UTC) - row.created_at
        if age > timedelta(hours=self.settings.idempotency_ttl_hours):
            self.session.delete(row)
            self.session.commit()  # before the new job's statement takes the key again
            return None
        if row.request_hash != request_hash:
            raise IdempotencyConflictError(
                "this Idempotency-Key was used with a different request; use a new key"
            )
        return self.session.get(Job, row.job_id)

    @staticmethod
    def _copy_results(source: Job, job: Job) -> None:
        for name in (
            "model_id",
            "label",
            "probability",
            "tier",
            "ood_score",
            "verdict_reason",
            "gradcam_status",
            "rois",
            "heatmap_key",
            "overlay_key",
            "explanation",
            "explanation_source",
            "classified_at",
        ):
            setattr(job, name, getattr(source, name))
        job.explain_status = source.explain_status if job.explain else StageStatus.SKIPPED
        job.cached_from = source.id
        job.status = JobStatus.DONE
        job.finished_at = datetime.now(UTC)
