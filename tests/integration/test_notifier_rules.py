"""The webhook notifier's rules, one attempt at a time against a real receiver and the
real Postgres: which answers are retried (timeouts, connection errors, 5xx, 408, 409,
425, 429) and which fail at once (every other 4xx, a 3xx: redirects are not followed),
when the attempts run out, and the backoff that schedules the next attempt (full
jitter between the base and base * 2^attempt, capped)."""

from __future__ import annotations

import hashlib
import http.server
import random
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from common.embedded import free_port
from tests.conftest import Services
from tests.helpers import image_bytes
from tests.integration.conftest import make_user

RETRIED = [500, 502, 503, 504, 408, 409, 425, 429]
FAILED_AT_ONCE = [301, 400, 401, 403, 404, 410, 413, 422]
BASE = 0.2  # AIGI_WEBHOOK_BACKOFF_BASE_SECONDS in the test stack


# ---------------------------------------------------------------------------- backoff
@pytest.fixture
def seeded() -> Iterator[None]:
    """Draw the jitter from a fixed seed, and leave the global generator as it was."""
    state = random.getstate()
    random.seed(19)
    yield
    random.setstate(state)


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("attempt", [0, 1, 2, 5])
def test_backoff_is_full_jitter_between_the_base_and_the_doubled_ceiling(attempt: int) -> None:
    from services.notifier.service import backoff_seconds

    ceiling = 2.0 * 2**attempt
    draws = [backoff_seconds(attempt, 2.0) for _ in range(2000)]
    assert min(draws) >= 2.0 and max(draws) <= ceiling
    if attempt:  # spread over the whole range, not a fixed delay
        assert max(draws) - min(draws) > 0.9 * (ceiling - 2.0)


def test_backoff_never_waits_less_than_the_base_nor_more_than_the_cap() -> None:
    from services.notifier.service import backoff_seconds

    assert backoff_seconds(0, 2.0) == 2.0
    assert backoff_seconds(-3, 2.0) == 2.0
    assert all(backoff_seconds(40, 2.0, cap=60.0) <= 60.0 for _ in range(200))
    assert backoff_seconds(40, 100.0, cap=60.0) == 100.0  # a cap below the base: the base


# ---------------------------------------------------------------------------- one attempt
class Receiver:
    """Answers every POST with the status code it is told to (no body)."""

    def __init__(self) -> None:
        self.status = 200
        self.requests = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.requests += 1
                self.send_response(receiver.status)
                if 300 <= receiver.status < 400:
                    self.send_header("location", "http://127.0.0.1:9/elsewhere")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Delivery:
    id: uuid.UUID
    database_url: str
    url: str

    def reset(self, attempts: int = 0, url: str | None = None) -> None:
        """Pending again, as if ``attempts`` attempts had been made already, to ``url``
        (the receiver by default)."""
        from sqlalchemy import update

        from common.db.models import WebhookDelivery
        from common.db.session import session_scope

        values = {"status": "pending", "attempts": attempts, "url": url or self.url}
        with session_scope(self.database_url) as session:
            session.execute(
                update(WebhookDelivery).where(WebhookDelivery.id == self.id).values(**values)
            )

    def attempt(self, max_attempts: int = 6) -> tuple[str, int, datetime | None]:
        """One attempt by the notifier; the delivery's status, attempts and next time."""
        from common.db.models import WebhookDelivery
        from common.db.session import session_scope
        from common.settings import Settings
        from services.notifier.service import deliver
        from services.runtime import WorkerContext

        ctx = WorkerContext(Settings(webhook_max_attempts=max_attempts))
        returned = deliver(ctx, str(self.id))
        with session_scope(self.database_url) as session:
            row = session.get(WebhookDelivery, self.id)
            assert row is not None
            assert row.status == returned
            return row.status, row.attempts, row.next_attempt_at


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def delivery(services: Services, stack_env: dict[str, str], receiver: Receiver) -> Delivery:
    """A classified job written straight into Postgres (nothing is enqueued, so no
    worker of another test touches it) and its pending ``job.done`` delivery."""
    from common.db.models import Image, Job
    from common.db.session import session_scope
    from common.settings import Settings
    from services.notifier.service import create_delivery
    from services.runtime import WorkerContext

    database_url = stack_env["AIGI_DATABASE_URL"]
    user = make_user(database_url, callback_url=receiver.url)
    data = image_bytes(size=(24, 16), seed=int(uuid.uuid4()) % 100_000)
    sha = hashlib.sha256(data).hexdigest()
    with session_scope(database_url) as session:
        if session.get(Image, sha) is None:
            session.add(
                Image(
                    sha256=sha,
                    size_bytes=len(data),
                    content_type="image/png",
                    format="PNG",
                    width=24,
                    height=16,
                )
            )
            session.flush()
        job = Job(
            tenant_id=user.tenant_id,
            status="classified",
            image_sha256=sha,
            model_id="test-model",
            label=1,
            probability=0.9,
            tier="mostly fake",
        )
        session.add(job)
        session.flush()
        job_id = job.id
    delivery_id = create_delivery(WorkerContext(Settings()), job_id, "done")
    assert delivery_id is not None
    return Delivery(delivery_id, database_url, receiver.url)


def test_a_2xx_answer_succeeds(delivery: Delivery, receiver: Receiver) -> None:
    delivery.reset()
    receiver.status = 204
    assert delivery.attempt() == ("succeeded", 1, None)


@pytest.mark.parametrize("status_code", RETRIED)
def test_retryable_answers_are_tried_again_after_the_backoff(
    delivery: Delivery, receiver: Receiver, status_code: int
) -> None:
    delivery.reset(attempts=2)
    receiver.status = status_code
    before = datetime.now(UTC)
    status, attempts, next_at = delivery.attempt()
    assert (status, attempts) == ("pending", 3)
    assert next_at is not None
    # the third attempt failed: backoff_seconds(2, base) lies in [base, 4 * base]
    assert before + timedelta(seconds=BASE) <= next_at
    assert next_at <= datetime.now(UTC) + timedelta(seconds=4 * BASE)


@pytest.mark.parametrize("status_code", FAILED_AT_ONCE)
def test_other_answers_fail_at_once(
    delivery: Delivery, receiver: Receiver, status_code: int
) -> None:
    delivery.reset()
    receiver.status = status_code
    assert delivery.attempt() == ("failed", 1, None)


def test_a_receiver_that_is_not_listening_is_tried_again(delivery: Delivery) -> None:
    delivery.reset(url=f"http://127.0.0.1:{free_port()}/hook")
    status, attempts, next_at = delivery.attempt()
    assert (status, attempts) == ("pending", 1) and next_at is not None


def test_the_last_allowed_attempt_fails_for_good(delivery: Delivery, receiver: Receiver) -> None:
    delivery.reset(attempts=2)
    receiver.status = 503
    assert delivery.attempt(max_attempts=3) == ("failed", 3, None)
    delivery.reset(attempts=1)
    assert delivery.attempt(max_attempts=3)[0] == "pending"
