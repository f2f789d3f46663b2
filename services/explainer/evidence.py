"""The deterministic explanation: built from the verdict and the measured evidence.

Used where no LLM is configured, where it is down, slow, or keeps answering invalid
JSON, and as the ``summary`` of every explanation. The same inputs always give the
same text, and every sentence cites a number the gradcam stage measured (a region's
statistic, its ratio to the whole image, its share of the heat) or the provenance
found in the file. It never claims more than the measurement: a region statistic
that differs from the whole image is *consistent with* an artifact, not proof of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.artifacts import Taxonomy
from common.detector.config import UNCERTAIN
from services.explainer.inputs import EvidenceInput, RoiInput, RoiStat, VerdictInput
from services.explainer.prompt import describe_metadata, number, percent, ratio

EVIDENCE_VERSION = "evidence-v1"


@dataclass(frozen=True)
class Rule:
    """A region statistic far from the whole image's value, read as an artifact."""

    statistic: str
    direction: str  # "high": relative >= threshold; "low": relative <= threshold
    threshold: float
    artifact: str
    reading: str


RULES: tuple[Rule, ...] = (
    Rule(
        "high_freq_energy",
        "high",
        1.5,
        "frequency_domain_signatures",
        "excess high-frequency energy of the kind generator upsampling leaves",
    ),
    Rule(
        "high_freq_energy",
        "low",
        0.67,
        "over_smoothing_of_natural_textures",
        "missing high-frequency energy, i.e. fine texture smoothed away",
    ),
    Rule(
        "noise_residual",
        "low",
        0.67,
        "artificial_smoothness",
        "a weak noise residual, where camera sensor noise is usually even",
    ),
    Rule(
        "noise_residual",
        "high",
        1.5,
        "random_noise_patterns_in_detailed_areas",
        "noise concentrated in this region rather than spread evenly",
    ),
    Rule(
        "edge_sharpness",
        "high",
        1.5,
        "excessive_sharpness_in_certain_image_regions",
        "edges much crisper than in the rest of the image",
    ),
    Rule(
        "edge_sharpness",
        "low",
        0.67,
        "blurred_boundaries_in_fine_details",
        "edges much softer than in the rest of the image",
    ),
    Rule(
        "laplacian_var",
        "high",
        2.0,
        "over_sharpening_artifacts",
        "strong second-derivative response, typical of over-sharpened detail",
    ),
    Rule(
        "laplacian_var",
        "low",
        0.5,
        "loss_of_fine_detail_in_complex_structures",
        "little fine detail left",
    ),
    Rule(
        "saturation_mean",
        "high",
        1.3,
        "systematic_color_distribution_anomalies",
        "colour more saturated than in the rest of the image",
    ),
    Rule(
        "saturation_std",
        "low",
        0.67,
        "unnatural_color_transitions",
        "unusually even colour saturation",
    ),
)

LABELS = {
    "high_freq_energy": "high-frequency energy",
    "noise_residual": "noise residual",
    "edge_sharpness": "edge sharpness",
    "laplacian_var": "Laplacian variance",
    "saturation_mean": "mean saturation",
    "saturation_std": "saturation spread",
}


def _fires(rule: Rule, stat: RoiStat | None) -> bool:
    if stat is None or stat.relative is None:
        return False
    if rule.direction == "high":
        return stat.relative >= rule.threshold
    return stat.relative <= rule.threshold


def _stance(verdict: VerdictInput) -> str:
    if verdict.is_fake:
        return "Consistent with the FAKE verdict."
    return "Camera images can show this too; the detector still judged the image real."


def _sentence(
    rule: Rule, roi: RoiInput, stat: RoiStat, others: int, whole: float | None, v: VerdictInput
) -> str:
    label = LABELS.get(rule.statistic, rule.statistic)
    reference = f" vs {number(whole)}" if whole is not None else ""
    text = (
        f"Region {roi.rank} ({roi.position}, {percent(roi.heat_share)} of the heat) has "
        f"{ratio(stat.relative)} the image's {label} ({number(stat.value)}{reference}): "
        f"{rule.reading}."
    )
    if others:
        text += f" {others} other region{'s' if others > 1 else ''} too."
    return f"{text} {_stance(v)}"


def artifact_evidence(
    verdict: VerdictInput, evidence: EvidenceInput, taxonomy: Taxonomy
) -> dict[str, str]:
    """One grounded sentence per artifact whose rule a region's statistics trigger."""
    if not evidence.available:
        return {}
    out: dict[str, str] = {}
    for rule in RULES:
        if rule.artifact not in taxonomy:
            continue
        hits = [(roi, roi.stat(rule.statistic)) for roi in evidence.rois]
        firing = [(roi, stat) for roi, stat in hits if stat is not None and _fires(rule, stat)]
        if not firing:
            continue
        sign = -1.0 if rule.direction == "high" else 1.0
        roi, stat = min(firing, key=lambda h: (sign * (h[1].relative or 0.0), h[0].rank))
        whole = evidence.image_stats.get(rule.statistic)
        out[rule.artifact] = _sentence(rule, roi, stat, len(firing) - 1, whole, verdict)
    return {key: out[key] for key in taxonomy.keys if key in out}


def summary(verdict: VerdictInput, evidence: EvidenceInput) -> str:
    """The verdict, where the heat is, and the provenance, in a few sentences."""
    model = f", model {verdict.model_id}" if verdict.model_id else ""
    parts = [
        f"The detector judged the image {verdict.described}: probability "
        f"{verdict.probability:.3f} that it is AI-generated ({verdict.tier}{model})."
    ]
    if verdict.tier == UNCERTAIN:
        why = f" ({verdict.reason})" if verdict.reason else ""
        parts.append(
            f"The verdict is uncertain{why}: the detector has no reliable basis for this "
            "image, so its label should not be acted on without a person's review."
        )
    if not evidence.available:
        parts.append(
            "The Grad-CAM heatmap is unavailable "
            f"({evidence.unavailable_reason or 'not computed'}), so this explanation rests on "
            "the verdict alone."
        )
    elif evidence.rois:
        top = evidence.rois[0]
        total = sum(r.heat_share or 0.0 for r in evidence.rois)
        count = len(evidence.rois)
        parts.append(
            f"Grad-CAM found {count} region{'s' if count > 1 else ''} holding "
            f"{percent(total)} of the heat; the strongest is in the {top.position} "
            f"({percent(top.heat_share)})."
        )
    else:
        parts.append("No region of the Grad-CAM heatmap stood out.")
    parts.append(describe_metadata(evidence.metadata))
    return " ".join(parts)


def no_rule_note(evidence: EvidenceInput) -> str | None:
    if evidence.available and evidence.rois:
        return (
            "No region's statistics differ enough from the whole image to point at a "
            "specific artifact."
        )
    return None
