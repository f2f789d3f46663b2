"""The explainer against a real OpenAI-compatible server: llama-cpp-python serving the
tiny random Mistral of tests/fixtures/tiny-mistral.gguf (scripts/make_tiny_gguf.py).

Its answers are random text; what is checked is the mechanics: the schema of the job's
candidates reaches the server and constrains the output, the answer parses and
validates, its claims are checked and dropped (random text names no region), invalid
output is retried and then replaced by the evidence explanation, a stopped server
gives the evidence explanation too.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from common.artifacts import Taxonomy
from common.settings import Settings
from services.explainer.backend import InferenceClientBackend
from services.explainer.claims import check_claim
from services.explainer.explainer import Explainer
from services.explainer.grounding import candidates
from services.explainer.inputs import VerdictInput, evidence_from_document
from services.explainer.prompt import explanation_prompt, response_schema
from tests.explainer.conftest import MODEL_ALIAS, LlamaServer, Track, start_llama

pytestmark = pytest.mark.llm


def settings_for(url: str, **values: Any) -> Settings:
    base = {
        "llm_url": url,
        "llm_model": MODEL_ALIAS,
        "llm_timeout_seconds": 30,
        "explain_time_limit_seconds": 60,
        "explain_visibility_timeout_seconds": 90,
    }
    return Settings(**{**base, **values})


def test_schema_constrains_the_output(
    track: Track,
    llama_server: LlamaServer,
    fake_verdict: VerdictInput,
    document: dict[str, Any],
    taxonomy: Taxonomy,
) -> None:
    chosen = candidates(fake_verdict, evidence_from_document(document), taxonomy)
    keys = [c.artifact for c in chosen]
    prompt = explanation_prompt(fake_verdict, chosen)
    backend = track(InferenceClientBackend(llama_server.url, MODEL_ALIAS))  # style auto
    constrained = backend.complete(prompt, schema=response_schema(keys), max_tokens=512, timeout=30)
    # /info is absent → openai style; llama-cpp-python refuses json_schema → json_object
    assert backend.resolved_formats == ("openai-json_object",)
    assert constrained.constrained and constrained.schema_style == "openai-json_object"
    answer = json.loads(constrained.text)
    print("constrained answer:", constrained.text)
    assert isinstance(answer, dict) and answer
    assert set(answer) <= set(keys)
    assert constrained.prompt_tokens  # the server's usage count reaches the explainer
    assert all(isinstance(v, str) and v for v in answer.values())
    # control: the same random model without the schema writes no such object
    free = backend.complete(prompt, schema=None, max_tokens=128, timeout=30)
    try:
        parsed = json.loads(free.text)
    except ValueError:
        parsed = None
    assert not (isinstance(parsed, dict) and parsed and set(parsed) <= set(keys))


def test_random_claims_start_as_the_schema_says_and_are_checked(
    track: Track,
    llama_server: LlamaServer,
    fake_verdict: VerdictInput,
    document: dict[str, Any],
    taxonomy: Taxonomy,
) -> None:
    """Constrained JSON of random words: llama.cpp's grammar makes every value start with
    its candidate's region and statistic (the schema's pattern); what follows is random,
    so nearly every claim is dropped, each with its reason."""
    settings = settings_for(llama_server.url, llm_max_tokens=256)
    explainer = track(Explainer(InferenceClientBackend.from_settings(settings), taxonomy, settings))
    result = explainer.explain(fake_verdict, document)
    out = result.as_document()
    print("random model:", out["artifacts"], out["dropped"])
    evidence = evidence_from_document(document)
    chosen = {c.artifact: c for c in candidates(fake_verdict, evidence, taxonomy)}
    claims = [(d.artifact, d.text) for d in result.dropped]
    if result.source == "llm":
        claims += list(result.artifacts.items())
    assert result.claims_made == len(claims) >= 1 and result.llm_calls in (1, 2)
    assert all(
        " ".join(text.split()).startswith(chosen[key].prefix.strip()) for key, text in claims
    )
    assert all(d.reason for d in result.dropped) and out["prompt_tokens"]
    positions = tuple(r.position for r in evidence.rois)
    if result.source == "llm":
        for key, text in result.artifacts.items():
            assert check_claim(text, chosen[key], fake_verdict, positions) is None
    else:
        assert result.error and result.error.startswith("LLM explanation failed")


def test_unconstrained_server_two_step_invalid_then_fallback(
    track: Track,
    llama_server: LlamaServer,
    fake_verdict: VerdictInput,
    document: dict[str, Any],
    taxonomy: Taxonomy,
) -> None:
    """Style none: free text, then the JSONifier; the random model's JSON is invalid
    twice, so the evidence explanation is stored."""
    settings = settings_for(llama_server.url, llm_schema_style="none", llm_max_tokens=128)
    explainer = track(Explainer(InferenceClientBackend.from_settings(settings), taxonomy, settings))
    result = explainer.explain(fake_verdict, document)
    assert result.source == "evidence"
    assert result.llm_calls == 3  # free text, JSONifier, one JSONifier retry
    assert result.error and result.error.startswith("LLM explanation failed (invalid answer)")
    assert result.artifacts["frequency_domain_signatures"].startswith("Region 1")
    assert explainer.breaker.consecutive_failures == 1


def test_stopped_server_falls_back(
    track: Track,
    tmp_path: Path,
    fake_verdict: VerdictInput,
    document: dict[str, Any],
    taxonomy: Taxonomy,
) -> None:
    server = start_llama(tmp_path)
    try:
        settings = settings_for(server.url, llm_max_tokens=32)
        explainer = track(
            Explainer(InferenceClientBackend.from_settings(settings), taxonomy, settings)
        )
        assert explainer.explain(fake_verdict, document).llm_calls >= 1  # it answers
    finally:
        server.stop()
    started = time.monotonic()
    result = explainer.explain(fake_verdict, document)
    assert result.source == "evidence"
    assert result.error and "LLMUnavailable" in result.error and "Connect" in result.error
    assert result.llm_calls == 3 and time.monotonic() - started < 5
