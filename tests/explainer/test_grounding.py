"""Candidates from the measured evidence, and the checks each LLM claim must pass."""

from __future__ import annotations

from typing import Any

import pytest

from common.artifacts import Taxonomy
from services.explainer.claims import check_claim, positions_in, reading_of
from services.explainer.grounding import Candidate, candidates
from services.explainer.inputs import VerdictInput, evidence_from_document

REAL = VerdictInput("REAL", 0.004, "mostly real", "test-tiny")


def chosen_for(
    verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> dict[str, Candidate]:
    return {c.artifact: c for c in candidates(verdict, evidence_from_document(document), taxonomy)}


def test_candidates_for_a_fake_verdict(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    chosen = list(candidates(fake_verdict, evidence_from_document(document), taxonomy))
    assert len(chosen) == 4
    # the three strongest firing rules support FAKE; the one near-normal statistic is against
    supporting = {c.artifact: c for c in chosen if c.supports_verdict}
    assert set(supporting) == {
        "artificial_smoothness",  # noise residual 0.32x in region 1
        "blurred_boundaries_in_fine_details",  # edge sharpness 0.41x in region 2
        "frequency_domain_signatures",  # high-frequency energy 2.30x in region 1
    }
    assert all(c.reading == "generated" for c in supporting.values())
    [against] = [c for c in chosen if not c.supports_verdict]
    assert against.reading == "photograph" and against.roi.rank == 1
    assert against.artifact == "excessive_sharpness_in_certain_image_regions"
    edges = supporting["blurred_boundaries_in_fine_details"]
    assert (edges.roi.position, edges.value, edges.whole, edges.direction) == (
        "lower right",
        5.0,
        12.3,
        "lower",
    )


def test_candidates_for_a_real_verdict_put_the_support_first(
    document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    chosen = candidates(REAL, evidence_from_document(document), taxonomy)
    assert [c.supports_verdict for c in chosen] == [True, False, False, False]
    assert chosen[0].reading == "photograph"
    assert all(c.reading == "generated" for c in chosen[1:])


def test_no_candidates_without_measurements(fake_verdict: VerdictInput, taxonomy: Taxonomy) -> None:
    failed = evidence_from_document({"rois": [], "error": "too small"}, "failed")
    assert candidates(fake_verdict, failed, taxonomy) == ()
    no_region = evidence_from_document({"rois": [], "image": {"statistics": {}}})
    assert candidates(fake_verdict, no_region, taxonomy) == ()


SMOOTH = (
    "Region 1, upper left: the noise residual is 0.32x the whole image (1.02 vs 3.21), "
    "lower, a weak residual that indicates generation."
)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (SMOOTH, None),
        # the measurement alone (no region) is enough, and 68 % lower is 0.32x
        ("The noise residual is 68% lower than in the whole image, typical of generators.", None),
        ("Surfaces look airbrushed, as generators often render them.", "names neither"),
        ("Region 1 looks too smooth here, which indicates generation.", "names neither"),
        (SMOOTH.replace("0.32x", "0.45x"), "cites 0.45x, which is not its measurement"),
        # another statistic's number, and a value cited as a ratio
        (SMOOTH.replace("(1.02 vs 3.21)", "(0.184)"), "cites 0.184, which is not its"),
        (SMOOTH.replace("0.32x", "1.02x"), "cites 1.02x, which is not its measurement"),
        (SMOOTH.replace("lower, a weak", "higher, a strong"), "says the noise residual is higher"),
        (SMOOTH.replace("upper left", "lower left"), "places a region in the lower left"),
        (SMOOTH.replace("upper left", "lower right"), "misplaces region 1"),
        (
            SMOOTH.replace("indicates generation", "is what a camera sensor leaves"),
            "says the measurement is photographic",
        ),
        (SMOOTH + " A real camera could show it too.", "reads both"),
        ("Region 1: noise residual 0.32x.", "fewer than 6 words"),
        # what follows the given prefix speaks of another statistic (SmolLM2 did)
        (
            "Region 1, upper left: the noise residual is 1.02, 0.32x the whole image (3.21), "
            "lower, a sign of soft edges in generated images.",
            "speaks of the edge sharpness; its measurement is the noise residual",
        ),
        (
            "Region 1, upper left: the noise residual is 1.02, 0.32x the whole image (3.21), "
            "lower, a smoothness that indicates generation.",
            None,
        ),
        # after the prefix, a number and debris say nothing (SmolLM2 did this too)
        (
            "Region 1, upper left: the noise residual is 1.02, 0.32x the whole image (3.21), "
            "lower, noise residual of 1.02} {",
            "JSON debris",
        ),
        (
            "Region 1, upper left: the noise residual is 1.02, 0.32x the whole image (3.21), "
            "lower, a residual of this size here.",
            "does not say what its measurement indicates",
        ),
    ],
)
def test_claims_about_a_fake_verdicts_candidate(
    text: str,
    reason: str | None,
    fake_verdict: VerdictInput,
    document: dict[str, Any],
    taxonomy: Taxonomy,
) -> None:
    candidate = chosen_for(fake_verdict, document, taxonomy)["artificial_smoothness"]
    why = check_claim(text, candidate, fake_verdict, ("upper left", "lower right"))
    if reason is None:
        assert why is None
    else:
        assert why is not None and reason in why, why


def test_a_claim_against_the_verdict_must_say_so(
    document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    candidate = chosen_for(REAL, document, taxonomy)["artificial_smoothness"]
    positions = ("upper left", "lower right")
    why = check_claim(SMOOTH, candidate, REAL, positions)
    assert why and "evidence against the REAL verdict without saying" in why
    for marked in ("Against the verdict: " + SMOOTH, "However, " + SMOOTH):
        assert check_claim(marked, candidate, REAL, positions) is None


def test_reading_of_claims() -> None:
    assert reading_of("This indicates generation.") == "generated"
    assert reading_of("Consistent with a photograph from a camera.") == "photograph"
    assert reading_of("The image is not AI-generated.") == "photograph"
    assert reading_of("This is not what a camera records.") == "generated"
    assert reading_of("The region is darker.") is None
    # the artifact's name is not a reading
    assert reading_of("No sign of artificial smoothness here.", ["artificial smoothness"]) == (
        "photograph"
    )


def test_positions_in_the_gradcam_words() -> None:
    assert positions_in("Top-left and bottom right, and the center.") == {
        "upper left",
        "lower right",
        "centre",
    }
