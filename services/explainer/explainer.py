"""The explainer as a library: verdict + ROI document in, explanation out.

One LLM call with the answer constrained to the taxonomy's JSON schema; where the
server cannot constrain output, the report's two-step flow (free text, then the
JSONifier prompt). An invalid answer gets one retry. Where no LLM is configured, the
circuit breaker is open, the server is down or slow, or the answers stay invalid,
the deterministic evidence explanation is returned instead. ``explain`` never raises
for an LLM problem, and its LLM time stays within a budget below the Celery soft
time limit.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from common.artifacts import Taxonomy, load_taxonomy
from common.settings import Settings
from services.explainer import evidence as evidence_text
from services.explainer.backend import (
    InferenceClientBackend,
    LLMBackend,
    LLMError,
    LLMUnavailable,
    SchemaUnsupported,
)
from services.explainer.breaker import CircuitBreaker
from services.explainer.inputs import EvidenceInput, VerdictInput, evidence_from_document
from services.explainer.prompt import (
    PROMPT_VERSION,
    explanation_prompt,
    jsonifier_prompt,
    response_schema,
    retry_note,
)
from services.explainer.validation import InvalidAnswer, parse_answer

log = logging.getLogger("aigi.explainer")

#: Tries of one LLM call on a transient failure (connection, timeout, 5xx).
TRANSIENT_ATTEMPTS = 3
BACKOFF_BASE_SECONDS = 0.5
#: Below this much budget left, no new call is started.
MIN_CALL_SECONDS = 0.5


@dataclass
class ExplanationResult:
    source: Literal["llm", "evidence"]
    artifacts: dict[str, str]
    summary: str
    taxonomy_version: str
    model: str | None = None
    prompt_version: str | None = None
    error: str | None = None  # why the LLM did not write it (None when it did, or is off)
    flow: str | None = None  # "constrained" or "two-step" when the LLM wrote it
    schema_style: str | None = None
    llm_calls: int = 0
    llm_seconds: float = 0.0

    def as_document(self) -> dict[str, Any]:
        """What ``job.explanation`` stores (``common/jobview.py`` shows part of it)."""
        document: dict[str, Any] = {
            "source": self.source,
            "artifacts": self.artifacts,
            "summary": self.summary,
            "model": self.model,
            "prompt_version": self.prompt_version,
            "taxonomy_version": self.taxonomy_version,
            "error": self.error,
            "llm_calls": self.llm_calls,
            "llm_ms": round(self.llm_seconds * 1000, 1),
        }
        if self.source == "llm":
            document.update(flow=self.flow, schema_style=self.schema_style)
        else:
            document["evidence_version"] = evidence_text.EVIDENCE_VERSION
        return document


class Budget:
    """The LLM time left for one job."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.deadline = clock() + seconds

    def remaining(self) -> float:
        return self.deadline - self._clock()


@dataclass
class _Run:
    calls: int = 0
    seconds: float = 0.0
    schema_style: str | None = None
    errors: list[str] = field(default_factory=list)


class Explainer:
    def __init__(
        self,
        backend: LLMBackend | None,
        taxonomy: Taxonomy,
        settings: Settings,
        *,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.taxonomy = taxonomy
        self.settings = settings
        self.breaker = breaker or CircuitBreaker(
            settings.llm_breaker_failures, settings.llm_breaker_reset_seconds, clock
        )
        self.schema = response_schema(taxonomy)
        self._sleep = sleep
        self._clock = clock

    @property
    def time_budget(self) -> float:
        """LLM seconds per job: under the explain task's Celery soft time limit, with a
        margin for the database work (``Settings.llm_budget_seconds``)."""
        return max(MIN_CALL_SECONDS, self.settings.llm_budget_seconds())

    def explain(
        self,
        verdict: VerdictInput,
        roi_document: dict[str, Any] | None,
        *,
        gradcam_status: str | None = None,
    ) -> ExplanationResult:
        evidence = evidence_from_document(roi_document, gradcam_status)
        if self.backend is None:
            return self.evidence_result(verdict, evidence)
        if not self.breaker.allow():
            reason = (
                f"LLM not called: circuit open after {self.breaker.consecutive_failures} "
                f"consecutive failures (next try in {self.breaker.retry_in():.0f}s)"
            )
            return self.evidence_result(verdict, evidence, error=reason)
        run = _Run()
        started = self._clock()
        try:
            artifacts, flow = self._ask(
                verdict, evidence, Budget(self.time_budget, self._clock), run
            )
        except Exception as exc:  # any LLM problem ends in the evidence explanation
            self.breaker.record_failure()
            kind = "invalid answer" if isinstance(exc, InvalidAnswer) else type(exc).__name__
            error = f"LLM explanation failed ({kind}): {exc}"[:500]
            log_fn = log.warning if isinstance(exc, LLMError | InvalidAnswer) else log.exception
            log_fn(
                "llm explanation failed; using the evidence explanation",
                extra={"error": error, "llm_calls": run.calls, "breaker": self.breaker.state()},
            )
            result = self.evidence_result(verdict, evidence, error=error)
            result.llm_calls, result.llm_seconds = run.calls, self._clock() - started
            return result
        self.breaker.record_success()
        assert self.backend is not None
        return ExplanationResult(
            source="llm",
            artifacts=artifacts,
            summary=evidence_text.summary(verdict, evidence),
            taxonomy_version=self.taxonomy.version,
            model=self.backend.model_id,
            prompt_version=PROMPT_VERSION,
            flow=flow,
            schema_style=run.schema_style,
            llm_calls=run.calls,
            llm_seconds=self._clock() - started,
        )

    def evidence_result(
        self, verdict: VerdictInput, evidence: EvidenceInput, error: str | None = None
    ) -> ExplanationResult:
        """The deterministic explanation (``source='evidence'``)."""
        text = evidence_text.summary(verdict, evidence)
        artifacts = evidence_text.artifact_evidence(verdict, evidence, self.taxonomy)
        if not artifacts and (note := evidence_text.no_rule_note(evidence)):
            text = f"{text} {note}"
        return ExplanationResult(
            source="evidence",
            artifacts=artifacts,
            summary=text + " Built from the measurements, not by a language model.",
            taxonomy_version=self.taxonomy.version,
            error=error,
        )

    def close(self) -> None:
        """Close the LLM client's connections (a worker process never needs to)."""
        close = getattr(self.backend, "close", None)
        if callable(close):
            close()

    # ------------------------------------------------------------------ LLM flows
    def _ask(
        self, verdict: VerdictInput, evidence: EvidenceInput, budget: Budget, run: _Run
    ) -> tuple[dict[str, str], str]:
        prompt = explanation_prompt(verdict, evidence, self.taxonomy, answer="json")
        try:
            return self._validated(prompt, self.schema, budget, run), "constrained"
        except SchemaUnsupported:
            log.info("llm cannot constrain output; two-step flow")
        text_prompt = explanation_prompt(verdict, evidence, self.taxonomy, answer="text")
        free_text = self._call(text_prompt, None, budget, run, seed=0)
        return self._validated(jsonifier_prompt(free_text, self.taxonomy), None, budget, run), (
            "two-step"
        )

    def _validated(
        self, prompt: str, schema: dict[str, Any] | None, budget: Budget, run: _Run
    ) -> dict[str, str]:
        """Ask, validate; one retry (with the reason) after an invalid answer."""
        error: str | None = None
        for attempt in range(2):
            text = self._call(
                prompt + (retry_note(error) if error else ""), schema, budget, run, seed=attempt
            )
            try:
                return parse_answer(text, self.taxonomy)
            except InvalidAnswer as exc:
                error = str(exc)
                run.errors.append(error)
                log.info("invalid llm answer", extra={"attempt": attempt + 1, "error": error})
        raise InvalidAnswer(f"invalid twice, last: {error}")

    def _call(
        self, prompt: str, schema: dict[str, Any] | None, budget: Budget, run: _Run, seed: int
    ) -> str:
        """One completion, retried with backoff on transient failures, within the budget."""
        assert self.backend is not None
        delay = BACKOFF_BASE_SECONDS
        for attempt in range(TRANSIENT_ATTEMPTS):
            remaining = budget.remaining()
            if remaining < MIN_CALL_SECONDS:
                raise LLMUnavailable(f"LLM time budget of {self.time_budget:.0f}s used up")
            timeout = min(self.settings.llm_timeout_seconds, remaining)
            started = self._clock()
            try:
                completion = self.backend.complete(
                    prompt,
                    schema=schema,
                    max_tokens=self.settings.llm_max_tokens,
                    timeout=timeout,
                    seed=seed,
                )
            except LLMUnavailable as exc:
                run.calls += 1
                run.seconds += self._clock() - started
                last_try = attempt == TRANSIENT_ATTEMPTS - 1
                pause = delay * random.uniform(0.8, 1.2)
                if last_try or budget.remaining() < pause + MIN_CALL_SECONDS:
                    raise
                log.info("llm call failed; retrying", extra={"error": str(exc), "pause": pause})
                self._sleep(pause)
                delay *= 2
                continue
            run.calls += 1
            run.seconds += self._clock() - started
            if completion.constrained:
                run.schema_style = completion.schema_style
            return completion.text
        raise AssertionError("unreachable")


def build_explainer(settings: Settings) -> Explainer:
    """The explainer of a worker process: the LLM client when ``llm_url`` is set."""
    backend = InferenceClientBackend.from_settings(settings) if settings.llm_url else None
    return Explainer(backend, load_taxonomy(), settings)
