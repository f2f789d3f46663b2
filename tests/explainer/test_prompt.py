"""The prompt (A.1 template + verdict + ROIs), the JSONifier prompt and the schema."""

from __future__ import annotations

from typing import Any

from common.artifacts import Taxonomy
from services.explainer.inputs import VerdictInput, evidence_from_document
from services.explainer.prompt import (
    PROMPT_VERSION,
    explanation_prompt,
    jsonifier_prompt,
    response_schema,
)


def test_prompt_carries_verdict_rois_statistics_and_artifacts(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    prompt = explanation_prompt(fake_verdict, evidence_from_document(document), taxonomy)
    assert PROMPT_VERSION == "explain-v1"
    # the class, the probability, the tier
    assert "Class: FAKE (AI-generated)" in prompt
    assert "classified as FAKE" in prompt
    assert "0.873" in prompt and "mostly fake" in prompt
    # the A.1 rules
    assert "Explain only the artifacts" in prompt and "for or against the verdict" in prompt
    assert "at most 50 words each" in prompt and "no formatting" in prompt
    # the ROIs: position, box, heat share, measured statistics and their ratios
    assert "Region 1: upper left, box x 0.00-0.31, y 0.05-0.40" in prompt
    assert "41% of the heat" in prompt and "Region 2: lower right" in prompt
    assert "high_freq_energy 0.184 (2.30x the whole image)" in prompt
    assert "noise_residual 1.02 (0.32x the whole image)" in prompt
    assert "Whole image: high_freq_energy 0.0801" in prompt
    assert "Heat outside these regions: 36%" in prompt
    # the metadata absence note
    assert "This proves nothing" in prompt
    # the artifact list: every key, grouped by family
    assert "Artifacts to be considered:" in prompt
    for artifact in taxonomy.artifacts:
        assert f"- {artifact.key}: {artifact.description}" in prompt
    assert "Geometry (" in prompt and "Lighting (" in prompt
    assert "one JSON object" in prompt


def test_text_prompt_for_the_two_step_flow(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    prompt = explanation_prompt(
        fake_verdict, evidence_from_document(document), taxonomy, answer="text"
    )
    assert "Answer in plain text" in prompt and "JSON" not in prompt


def test_prompt_without_heatmap(taxonomy: Taxonomy) -> None:
    verdict = VerdictInput("REAL", 0.12, "mostly real")
    failed = {"rois": [], "error": "Grad-CAM failed: ValueError: too small"}
    prompt = explanation_prompt(verdict, evidence_from_document(failed, "failed"), taxonomy)
    assert "Class: REAL (not AI-generated)" in prompt and "0.120" in prompt
    assert "heatmap: unavailable" in prompt and "too small" in prompt
    assert "Explain from the verdict alone" in prompt
    assert "Region 1" not in prompt


def test_jsonifier_prompt(taxonomy: Taxonomy) -> None:
    prompt = jsonifier_prompt("texture_repetition_patterns: the wall repeats.", taxonomy)
    assert prompt.startswith("Convert the explanation below into one JSON object")
    assert "the wall repeats." in prompt
    assert all(key in prompt for key in taxonomy.keys)
    assert "JSON object only" in prompt


def test_schema_has_exactly_the_taxonomy_keys(taxonomy: Taxonomy) -> None:
    schema = response_schema(taxonomy)
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert list(schema["properties"]) == list(taxonomy.keys)
    assert all(p == {"type": "string", "minLength": 1} for p in schema["properties"].values())
    assert "required" not in schema  # only the applicable artifacts are explained
