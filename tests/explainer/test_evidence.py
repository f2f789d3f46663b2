"""The deterministic evidence explanation: reproducible, grounded in the measurements."""

from __future__ import annotations

import copy
from typing import Any

from common.artifacts import Taxonomy
from common.settings import Settings
from services.explainer.explainer import Explainer
from services.explainer.inputs import VerdictInput
from services.explainer.validation import validate_explanations


def explainer(taxonomy: Taxonomy) -> Explainer:
    return Explainer(None, taxonomy, Settings(llm_url=None))


def test_deterministic_and_grounded(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    first = explainer(taxonomy).explain(fake_verdict, document)
    second = explainer(taxonomy).explain(fake_verdict, copy.deepcopy(document))
    assert first.as_document() == second.as_document()
    assert first.source == "evidence" and first.error is None
    assert first.model is None and first.prompt_version is None
    artifacts = first.artifacts
    # each sentence cites the region, its heat share and the measured numbers
    assert artifacts["frequency_domain_signatures"].startswith(
        "Region 1 (upper left, 41% of the heat) has 2.30x the image's high-frequency energy "
        "(0.184 vs 0.0801)"
    )
    assert "0.32x the image's noise residual (1.02 vs 3.21)" in artifacts["artificial_smoothness"]
    assert "Region 2 (lower right" in artifacts["blurred_boundaries_in_fine_details"]
    assert "0.41x" in artifacts["blurred_boundaries_in_fine_details"]
    assert (
        "1.46x the image's mean saturation" in artifacts["systematic_color_distribution_anomalies"]
    )
    assert all(text.endswith("Consistent with the FAKE verdict.") for text in artifacts.values())
    # the same rules as an LLM answer: taxonomy keys, <= 50 words, no markdown
    assert validate_explanations(artifacts, taxonomy) == artifacts
    assert "probability 0.873" in first.summary and "mostly fake" in first.summary
    assert "2 regions holding 64% of the heat" in first.summary
    assert "upper left (41%)" in first.summary
    assert "This proves nothing" in first.summary  # the metadata absence note
    assert first.as_document()["evidence_version"] == "evidence-v1"


def test_real_verdict_argues_against(document: dict[str, Any], taxonomy: Taxonomy) -> None:
    verdict = VerdictInput("REAL", 0.08, "mostly real")
    result = explainer(taxonomy).explain(verdict, document)
    assert "REAL (not AI-generated)" in result.summary
    assert all("still judged the image real" in t for t in result.artifacts.values())


def test_unremarkable_regions(fake_verdict: VerdictInput, taxonomy: Taxonomy) -> None:
    document: dict[str, Any] = {
        "version": "rois-v1",
        "image": {"statistics": {"high_freq_energy": 0.1}},
        "rois": [
            {
                "rank": 1,
                "position": "centre",
                "heat_share": 0.5,
                "evidence": {"high_freq_energy": {"value": 0.11, "relative": 1.1}},
            }
        ],
    }
    result = explainer(taxonomy).explain(fake_verdict, document)
    assert result.artifacts == {}
    assert "differ enough" in result.summary and "not inspected" in result.summary


def test_heatmap_unavailable(fake_verdict: VerdictInput, taxonomy: Taxonomy) -> None:
    failed = {"rois": [], "error": "Grad-CAM failed: ValueError: image too small"}
    result = explainer(taxonomy).explain(fake_verdict, failed, gradcam_status="failed")
    assert result.artifacts == {}
    assert "heatmap is unavailable (Grad-CAM failed: ValueError: image too small)" in (
        result.summary
    )
    assert "rests on the verdict alone" in result.summary
    never_ran = explainer(taxonomy).explain(fake_verdict, None)
    assert "heatmap is unavailable (the gradcam stage did not run)" in never_ran.summary


def test_metadata_traces_are_cited(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    document["metadata"] = {
        "c2pa": {
            "checked": True,
            "present": True,
            "claim_generator": "Adobe Firefly",
            "declares_ai_generated": True,
        },
        "generator_traces": [{"source": "png:parameters", "value": "Steps: 20, Sampler: Euler"}],
        "ai_indicated": True,
        "note": None,
    }
    summary = explainer(taxonomy).explain(fake_verdict, document).summary
    assert "C2PA manifest (claim generator Adobe Firefly) that declares AI generation" in summary
    assert "png:parameters: Steps: 20" in summary
    assert "proves nothing" not in summary
