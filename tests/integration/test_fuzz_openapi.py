"""schemathesis against the gateway's own OpenAPI document: no 5xx, responses match it.

``AIGI_FUZZ_EXAMPLES`` examples per operation (a few hundred requests in all here;
``make soak`` sets thousands). Authenticated with a real key, against the real
Postgres and Redis, in process (ASGI).
"""

from __future__ import annotations

import os
from collections import Counter

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import checks as sc

from tests.integration.conftest import ApiUser

EXAMPLES = int(os.environ.get("AIGI_FUZZ_EXAMPLES", "30"))
# Requests the run must have made in all (``make soak`` asks for 5,000).
MIN_REQUESTS = int(os.environ.get("AIGI_FUZZ_MIN_REQUESTS", str(EXAMPLES)))
CHECKS = [
    sc.not_a_server_error,
    sc.status_code_conformance,
    sc.content_type_conformance,
    sc.response_schema_conformance,
]


def test_gateway_survives_generated_requests(
    client: TestClient, user: ApiUser, pipeline_workers: object
) -> None:
    """Workers run, so a generated ``?wait=N`` returns once the verdict is in (or after N
    seconds, at most 30: the request timeout is above that)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            database=None,
            phases=[Phase.explicit, Phase.generate],
        )  # report the failure, skip shrinking
        def run(case: schemathesis.Case) -> None:
            response = case.call_and_validate(headers=user.headers, checks=CHECKS, timeout=40)
            statuses[response.status_code] += 1

        run()
    assert sum(statuses.values()) >= MIN_REQUESTS, statuses
    assert not [code for code in statuses if code >= 500], statuses
