"""The explainer as a library: verdict + ROI document in, explanation out.

The LLM may discuss only the job's *candidates*: the artifacts the measured evidence
bears on (:mod:`.grounding`), sent with their regions and numbers instead of the
whole taxonomy. One call, the answer constrained to a JSON schema of the candidates'
keys; where the server cannot constrain output, the report's two-step flow (free
text, then the JSONifier prompt). Each claim is then checked: it must name its region
or measurement and agree with the measurement and the verdict (or say it is evidence
against the verdict). Dropped claims are recorded with the reason and the answer is
retried once; the claims kept from both answers make the explanation, and their
share of all claims is the job's ``grounded_rate``.

Where no LLM is configured, nothing was measured to ground a claim on, the circuit
breaker is open, the server is down or slow, or no claim survives, the
deterministic evidence explanation is returned instead. ``explain`` never raises for
an LLM problem, and its LLM time stays within a budget below the Celery soft time
limit.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
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
from services.explainer.claims import Dropped, ground
from services.explainer.grounding import Candidate, candidates
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
#: Output tokens one constrained claim may need: its key, the fixed prefix (region and
#: measurement) and at most MAX_WORDS words; a longer answer fails validation anyway, so
#: the cap only stops a model that rambles from using the whole time budget.
TOKENS_PER_CLAIM = 160


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
    candidates: tuple[str, ...] = ()  # the artifact keys the LLM was offered
    claims_made: int = 0  # claims in the LLM's valid answers, retry included
    claims_kept: int = 0
    dropped: list[Dropped] = field(default_factory=list)
    prompt_tokens: int | None = None  # as the server counted them, all calls together

    @property
    def grounded_rate(self) -> float | None:
        """The share of the LLM's claims that were kept (None: it made none)."""
        return self.claims_kept / self.claims_made if self.claims_made else None

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
            "prompt_tokens": self.prompt_tokens,
            "candidates": list(self.candidates),
            "claims": {"made": self.claims_made, "kept": self.claims_kept},
            "grounded_rate": None if self.grounded_rate is None else round(self.grounded_rate, 3),
            "dropped": [d.as_document() for d in self.dropped],
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
    claims_made: int = 0
    claims_kept: int = 0
    dropped: list[Dropped] = field(default_factory=list)
    prompt_tokens: int | None = None

    def record(self, result: ExplanationResult, chosen: tuple[Candidate, ...]) -> None:
        result.llm_calls = self.calls
        result.candidates = tuple(c.artifact for c in chosen)
        result.claims_made, result.claims_kept = self.claims_made, self.claims_kept
        result.dropped, result.prompt_tokens = self.dropped, self.prompt_tokens


class Ungrounded(InvalidAnswer):
    """The LLM answered, but none of its claims survived the grounding checks."""


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
        chosen = candidates(verdict, evidence, self.taxonomy)
        if not chosen:
            reason = evidence.unavailable_reason if not evidence.available else None
            error = "LLM not called: no region measurement to ground a claim on" + (
                f" ({reason})" if reason else ""
            )
            return self.evidence_result(verdict, evidence, error=error)
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
                verdict, evidence, chosen, Budget(self.time_budget, self._clock), run
            )
        except Exception as exc:  # any LLM problem ends in the evidence explanation
            self.breaker.record_failure()
            kind = (
                "no grounded claim"
                if isinstance(exc, Ungrounded)
                else "invalid answer"
                if isinstance(exc, InvalidAnswer)
                else type(exc).__name__
            )
            error = f"LLM explanation failed ({kind}): {exc}"[:500]
            log_fn = log.warning if isinstance(exc, LLMError | InvalidAnswer) else log.exception
            log_fn(
                "llm explanation failed; using the evidence explanation",
                extra={"error": error, "llm_calls": run.calls, "breaker": self.breaker.state()},
            )
            result = self.evidence_result(verdict, evidence, error=error)
            run.record(result, chosen)
            result.llm_seconds = self._clock() - started
            return result
        self.breaker.record_success()
        assert self.backend is not None
        result = ExplanationResult(
            source="llm",
            artifacts=artifacts,
            summary=evidence_text.summary(verdict, evidence),
            taxonomy_version=self.taxonomy.version,
            model=self.backend.model_id,
            prompt_version=PROMPT_VERSION,
            flow=flow,
            schema_style=run.schema_style,
            llm_seconds=self._clock() - started,
        )
        run.record(result, chosen)
        return result

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
        self,
        verdict: VerdictInput,
        evidence: EvidenceInput,
        chosen: tuple[Candidate, ...],
        budget: Budget,
        run: _Run,
    ) -> tuple[dict[str, str], str]:
        keys = [c.artifact for c in chosen]

        def schema_for(open_candidates: Sequence[Candidate]) -> dict[str, Any]:
            return response_schema(
                [c.artifact for c in open_candidates],
                {c.artifact: c.prefix for c in open_candidates},
            )

        def grounded(prompt: str, constrained: bool) -> dict[str, str]:
            return self._grounded(
                prompt, schema_for if constrained else None, verdict, evidence, chosen, budget, run
            )

        prompt = explanation_prompt(verdict, chosen, answer="json")
        try:
            return grounded(prompt, constrained=True), "constrained"
        except SchemaUnsupported:
            log.info("llm cannot constrain output; two-step flow")
        text_prompt = explanation_prompt(verdict, chosen, answer="text")
        free_text = self._call(text_prompt, None, budget, run, seed=0)
        return grounded(jsonifier_prompt(free_text, keys), constrained=False), "two-step"

    def _grounded(
        self,
        prompt: str,
        schema_for: Callable[[Sequence[Candidate]], dict[str, Any]] | None,
        verdict: VerdictInput,
        evidence: EvidenceInput,
        chosen: tuple[Candidate, ...],
        budget: Budget,
        run: _Run,
    ) -> dict[str, str]:
        """Ask, validate, ground; one retry (with the reasons) after an invalid answer or
        a dropped claim. The claims kept from both answers are the explanation.

        ``schema_for`` (constrained flow) gives the answer's schema for the candidates
        still open: the retry's schema holds only those not yet explained, so the model
        writes (and the server generates) nothing that would be thrown away."""
        kept: dict[str, str] = {}
        note: str | None = None
        invalid = False
        for attempt in range(2):
            full = prompt + (retry_note(note) if note else "")
            open_candidates = [c for c in chosen if c.artifact not in kept]
            schema = schema_for(open_candidates) if schema_for is not None else None
            try:
                text = self._call(
                    full, schema, budget, run, seed=attempt, claims=len(open_candidates)
                )
            except LLMError as exc:
                if not kept:
                    raise
                log.info(
                    "llm retry failed; keeping the first answer's claims", extra={"error": str(exc)}
                )
                break
            try:
                artifacts = parse_answer(text, self.taxonomy)
            except InvalidAnswer as exc:
                note, invalid = str(exc), True
                run.errors.append(note)
                log.info("invalid llm answer", extra={"attempt": attempt + 1, "error": note})
                continue
            good, dropped = ground(artifacts, chosen, verdict, evidence)
            invalid = False
            run.claims_made += len(artifacts)
            run.claims_kept += len(good)
            run.dropped += dropped
            for key, value in good.items():
                kept.setdefault(key, value)
            if not dropped:
                break
            note = "; ".join(f"{d.artifact}: {d.reason}" for d in dropped)
            log.info(
                "llm claims dropped",
                extra={"attempt": attempt + 1, "dropped": len(dropped), "kept": len(good)},
            )
        if kept:
            return {c.artifact: kept[c.artifact] for c in chosen if c.artifact in kept}
        if invalid:
            raise InvalidAnswer(f"invalid twice, last: {note}")
        raise Ungrounded(f"every claim dropped, last: {note}")

    def _call(
        self,
        prompt: str,
        schema: dict[str, Any] | None,
        budget: Budget,
        run: _Run,
        seed: int,
        claims: int | None = None,
    ) -> str:
        """One completion, retried with backoff on transient failures, within the budget.
        ``claims``: how many claims the answer may hold, to cap its length."""
        max_tokens = self.settings.llm_max_tokens
        if claims is not None:
            max_tokens = min(max_tokens, TOKENS_PER_CLAIM * max(1, claims) + 32)
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
                    max_tokens=max_tokens,
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
            if completion.prompt_tokens is not None:
                run.prompt_tokens = (run.prompt_tokens or 0) + completion.prompt_tokens
            if completion.constrained:
                run.schema_style = completion.schema_style
            return completion.text
        raise AssertionError("unreachable")


def build_explainer(settings: Settings) -> Explainer:
    """The explainer of a worker process: the LLM client when ``llm_url`` is set."""
    backend = InferenceClientBackend.from_settings(settings) if settings.llm_url else None
    return Explainer(backend, load_taxonomy(), settings)
