"""The Explainer's flows against a scripted backend: retry, two-step, fallback,
backoff, circuit breaker and time budget (no network; the real-server tests are in
test_llm_server.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from common.artifacts import Taxonomy
from common.settings import Settings
from services.explainer.backend import (
    Completion,
    LLMRejected,
    LLMUnavailable,
    SchemaUnsupported,
)
from services.explainer.breaker import CircuitBreaker
from services.explainer.explainer import TOKENS_PER_CLAIM, Explainer
from services.explainer.inputs import VerdictInput
from services.explainer.prompt import PROMPT_VERSION
from tests.explainer.conftest import GROUNDED

VALID = json.dumps({"frequency_domain_signatures": GROUNDED})
INVALID = json.dumps({"not_an_artifact": "x"})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Call:
    prompt: str
    schema: dict[str, Any] | None
    timeout: float
    seed: int
    max_tokens: int = 0


@dataclass
class ScriptedBackend:
    """Answers from a script: a string is an answer, an exception is raised."""

    script: list[str | Exception]
    clock: Clock | None = None
    seconds_per_call: float = 0.0
    calls: list[Call] = field(default_factory=list)
    model_id: str = "scripted-model"

    def complete(
        self,
        prompt: str,
        *,
        schema: dict[str, Any] | None,
        max_tokens: int,
        timeout: float,
        seed: int = 0,
    ) -> Completion:
        self.calls.append(Call(prompt, schema, timeout, seed, max_tokens))
        if self.clock:
            self.clock.now += min(self.seconds_per_call, timeout)
        item = self.script.pop(0) if self.script else LLMUnavailable("script exhausted")
        if isinstance(item, Exception):
            raise item
        return Completion(item, schema is not None, "tgi" if schema else None, "stop")


def make(
    backend: ScriptedBackend | None,
    taxonomy: Taxonomy,
    clock: Clock | None = None,
    **settings: Any,
) -> tuple[Explainer, list[float]]:
    sleeps: list[float] = []
    clock = clock or Clock()

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += seconds

    values = {
        "llm_url": "http://127.0.0.1:9",
        "explain_time_limit_seconds": 120,
        "explain_visibility_timeout_seconds": 150,
        **settings,
    }
    explainer = Explainer(backend, taxonomy, Settings(**values), sleep=sleep, clock=clock)
    return explainer, sleeps


def test_constrained_answer(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    backend = ScriptedBackend([VALID])
    result = make(backend, taxonomy)[0].explain(fake_verdict, document)
    assert result.source == "llm" and result.error is None
    assert result.artifacts == json.loads(VALID)
    assert result.model == "scripted-model" and result.prompt_version == PROMPT_VERSION
    assert result.flow == "constrained" and result.schema_style == "tgi"
    assert len(backend.calls) == 1 and backend.calls[0].schema is not None
    # the schema holds the job's candidates only, the prompt no other artifact
    assert list(backend.calls[0].schema["properties"]) == list(result.candidates)
    assert "frequency_domain_signatures" in result.candidates and len(result.candidates) <= 4
    assert "texture_repetition_patterns" not in backend.calls[0].prompt
    document_out = result.as_document()
    assert document_out["grounded_rate"] == 1.0 and document_out["dropped"] == []
    assert document_out["claims"] == {"made": 1, "kept": 1}
    assert document_out["source"] == "llm" and document_out["taxonomy_version"] == "taxonomy-v1"
    assert "probability 0.873" in result.summary


def test_invalid_answer_is_retried_once(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    backend = ScriptedBackend([INVALID, VALID])
    result = make(backend, taxonomy)[0].explain(fake_verdict, document)
    assert result.source == "llm" and result.llm_calls == 2
    assert "previous answer was rejected: not_an_artifact: not a taxonomy key" in (
        backend.calls[1].prompt
    )
    assert [c.seed for c in backend.calls] == [0, 1]


def test_invalid_twice_falls_back(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    backend = ScriptedBackend([INVALID, "not json at all", VALID])
    explainer, _ = make(backend, taxonomy)
    result = explainer.explain(fake_verdict, document)
    assert result.source == "evidence" and len(backend.calls) == 2
    assert result.error and "invalid answer" in result.error and "no JSON object" in result.error
    assert result.artifacts["frequency_domain_signatures"].startswith("Region 1")
    assert explainer.breaker.consecutive_failures == 1


def test_two_step_flow_where_output_cannot_be_constrained(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    free_text = f"frequency_domain_signatures: {GROUNDED}"
    backend = ScriptedBackend([SchemaUnsupported("no grammar"), free_text, INVALID, VALID])
    result = make(backend, taxonomy)[0].explain(fake_verdict, document)
    assert result.source == "llm" and result.flow == "two-step"
    assert [c.schema is None for c in backend.calls] == [False, True, True, True]
    assert "Answer in plain text" in backend.calls[1].prompt
    jsonifier = backend.calls[2].prompt
    assert jsonifier.startswith("Convert the explanation below") and free_text in jsonifier
    assert "previous answer was rejected" in backend.calls[3].prompt  # only the JSONifier retried


def test_transient_failures_back_off_then_succeed(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    backend = ScriptedBackend([LLMUnavailable("refused"), LLMUnavailable("503"), VALID])
    explainer, sleeps = make(backend, taxonomy)
    result = explainer.explain(fake_verdict, document)
    assert result.source == "llm" and result.llm_calls == 3
    assert len(sleeps) == 2 and 0.4 <= sleeps[0] <= 0.6 and 0.8 <= sleeps[1] <= 1.2


def test_server_down_falls_back_after_three_tries(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    backend = ScriptedBackend([LLMUnavailable("Connection refused")] * 5)
    result = make(backend, taxonomy)[0].explain(fake_verdict, document)
    assert result.source == "evidence" and len(backend.calls) == 3
    assert result.error and "LLMUnavailable" in result.error and "refused" in result.error


def test_rejected_request_is_not_retried(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    backend = ScriptedBackend([LLMRejected("HTTP 401: bad key"), VALID])
    result = make(backend, taxonomy)[0].explain(fake_verdict, document)
    assert result.source == "evidence" and len(backend.calls) == 1
    assert result.error and "401" in result.error


def test_breaker_opens_skips_the_llm_and_recovers(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    clock = Clock()
    backend = ScriptedBackend([LLMRejected("HTTP 500-ish")] * 2)
    explainer, _ = make(
        backend, taxonomy, clock, llm_breaker_failures=2, llm_breaker_reset_seconds=30
    )
    for _ in range(2):
        assert explainer.explain(fake_verdict, document).source == "evidence"
    assert explainer.breaker.state() == "open" and len(backend.calls) == 2
    skipped = explainer.explain(fake_verdict, document)
    assert skipped.source == "evidence" and len(backend.calls) == 2  # no call
    assert skipped.error and "circuit open after 2 consecutive failures" in skipped.error
    clock.now += 31
    assert explainer.breaker.state() == "half-open"
    backend.script = [VALID]
    assert explainer.explain(fake_verdict, document).source == "llm"
    assert explainer.breaker.state() == "closed"


def test_half_open_failure_reopens(taxonomy: Taxonomy) -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, 10, clock)
    for _ in range(3):
        breaker.record_failure()
    assert not breaker.allow()
    clock.now += 10
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.record_failure()
    assert breaker.state() == "open" and breaker.retry_in() == pytest.approx(10)


def test_budget_stays_under_the_soft_time_limit(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    """Explain task limit 30 s → soft limit 25 s → LLM budget 23.75 s (5% kept for the DB)."""
    clock = Clock()
    backend = ScriptedBackend([LLMUnavailable("timed out")] * 5, clock, seconds_per_call=1e9)
    explainer, sleeps = make(
        backend, taxonomy, clock, explain_time_limit_seconds=30, llm_timeout_seconds=20
    )
    assert explainer.time_budget == 23.75
    started = clock.now
    result = explainer.explain(fake_verdict, document)
    assert result.source == "evidence"
    assert [c.timeout for c in backend.calls] == [20, pytest.approx(3.75 - sleeps[0])]
    assert clock.now - started <= 23.75 < 25


def test_no_llm_configured(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    result = make(None, taxonomy, llm_url=None)[0].explain(fake_verdict, document)
    assert result.source == "evidence" and result.error is None and result.llm_calls == 0


def test_unexpected_error_falls_back(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    backend = ScriptedBackend([RuntimeError("bug")])
    result = make(backend, taxonomy)[0].explain(fake_verdict, document)
    assert result.source == "evidence"
    assert result.error == "LLM explanation failed (RuntimeError): bug"


# ------------------------------------------------------------------ grounding in the flow
def test_dropped_claim_is_recorded_and_retried(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    smooth = (
        "Region 1, upper left: the noise residual is 0.32x the whole image (1.02 vs 3.21), "
        "lower, a weak residual that indicates generation."
    )
    first = {
        "frequency_domain_signatures": GROUNDED,
        "artificial_smoothness": "Smooth surfaces are typical of generated images.",
    }
    backend = ScriptedBackend([json.dumps(first), json.dumps({"artificial_smoothness": smooth})])
    result = make(backend, taxonomy)[0].explain(fake_verdict, document)
    assert result.source == "llm" and result.llm_calls == 2
    assert result.artifacts == {
        "frequency_domain_signatures": GROUNDED,
        "artificial_smoothness": smooth,
    }
    assert (result.claims_made, result.claims_kept, result.grounded_rate) == (3, 2, 2 / 3)
    [dropped] = result.as_document()["dropped"]
    assert dropped["artifact"] == "artificial_smoothness"
    assert dropped["reason"].startswith("names neither its region and statistic")
    retry = backend.calls[1].prompt
    assert retry.startswith(backend.calls[0].prompt)  # the cached prefix is unchanged
    assert "artificial_smoothness: names neither its region and statistic" in retry
    # the retry's schema asks only for what is not yet explained
    first_keys = set(backend.calls[0].schema["properties"])  # type: ignore[index]
    retry_keys = set(backend.calls[1].schema["properties"])  # type: ignore[index]
    assert retry_keys == first_keys - {"frequency_domain_signatures"}
    # each answer's length is capped by the claims it may hold (a rambling model cannot
    # spend the whole budget); llm_max_tokens stays the upper bound
    assert [c.max_tokens for c in backend.calls] == [
        min(1024, TOKENS_PER_CLAIM * len(keys) + 32) for keys in (first_keys, retry_keys)
    ]


def test_issue_answer_for_a_real_verdict_is_dropped(
    document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    """The answer of the issue: artifacts paraphrased, each "could indicate an artificial
    source", for an image judged REAL at p = 0.004."""
    verdict = VerdictInput("REAL", 0.004, "mostly real", "test-tiny")
    claim = "The noise residual in region 1 is lower, which could indicate an artificial source."
    answer = json.dumps({"artificial_smoothness": claim, "frequency_domain_signatures": claim})
    backend = ScriptedBackend([answer, answer])
    explainer, _ = make(backend, taxonomy)
    result = explainer.explain(verdict, document)
    assert result.source == "evidence" and result.llm_calls == 2
    assert result.grounded_rate == 0.0 and result.claims_made == 4
    assert result.error and result.error.startswith("LLM explanation failed (no grounded claim)")
    reasons = {d.artifact: d.reason for d in result.dropped}
    assert "without saying it is evidence against the verdict" in reasons["artificial_smoothness"]
    assert "speaks of the noise residual" in reasons["frequency_domain_signatures"]
    assert "Camera images can show this too" in result.artifacts["artificial_smoothness"]


def test_counter_evidence_marked_as_such_is_kept(
    document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    verdict = VerdictInput("REAL", 0.004, "mostly real", "test-tiny")
    claim = (
        "Against the verdict: Region 1, upper left, has a noise residual of 0.32x the whole "
        "image (1.02 vs 3.21), lower, a weak residual that indicates generation."
    )
    backend = ScriptedBackend([json.dumps({"artificial_smoothness": claim})])
    result = make(backend, taxonomy)[0].explain(verdict, document)
    assert result.source == "llm" and result.artifacts == {"artificial_smoothness": claim}
    assert result.grounded_rate == 1.0


def test_retry_failure_keeps_the_first_answers_claims(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    first = {"frequency_domain_signatures": GROUNDED, "artificial_smoothness": "Too smooth."}
    backend = ScriptedBackend([json.dumps(first), LLMRejected("HTTP 400: context")])
    result = make(backend, taxonomy)[0].explain(fake_verdict, document)
    assert result.source == "llm" and result.artifacts == {"frequency_domain_signatures": GROUNDED}
    assert result.grounded_rate == 0.5 and result.dropped[0].reason == "fewer than 6 words"


def test_nothing_measured_no_llm_call(fake_verdict: VerdictInput, taxonomy: Taxonomy) -> None:
    backend = ScriptedBackend([VALID])
    failed = {"rois": [], "error": "Grad-CAM failed: ValueError: image too small"}
    result = make(backend, taxonomy)[0].explain(fake_verdict, failed, gradcam_status="failed")
    assert result.source == "evidence" and backend.calls == []
    assert result.error and result.error.startswith("LLM not called: no region measurement")
    assert result.grounded_rate is None and result.as_document()["candidates"] == []
