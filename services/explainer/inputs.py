"""What the explainer reads: the verdict and the gradcam stage's ROI document.

The ROI document is the JSON the gradcam stage stores in ``job.rois`` (see
``services/gradcam/analysis.py``). It is read defensively: an older or partial
document, or the ``{"rois": [], "error": ...}`` a failed gradcam stage leaves, must
still give an explanation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The statistics the gradcam stage measures, with what each means (for the prompt).
STATISTIC_MEANINGS: dict[str, str] = {
    "high_freq_energy": "share of spectral energy above half the Nyquist frequency",
    "noise_residual": "std of luminance minus its 3x3 median (sensor-noise-like residual)",
    "edge_sharpness": "mean Sobel gradient magnitude of the luminance",
    "laplacian_var": "variance of the Laplacian (focus / fine detail)",
    "saturation_mean": "mean HSV saturation (0-1)",
    "saturation_std": "spread of HSV saturation",
    "luminance_mean": "mean luminance (0-255), context only",
}


@dataclass(frozen=True)
class VerdictInput:
    """The classify stage's result, as the explainer needs it."""

    label_name: str  # "REAL" or "FAKE"
    probability: float  # calibrated probability that the image is AI-generated
    tier: str
    model_id: str | None = None
    #: why the tier is ``uncertain`` (``verdict.reason``); None otherwise.
    reason: str | None = None

    @property
    def is_fake(self) -> bool:
        return self.label_name.upper() == "FAKE"

    @property
    def described(self) -> str:
        return "FAKE (AI-generated)" if self.is_fake else "REAL (not AI-generated)"


@dataclass(frozen=True)
class RoiStat:
    name: str
    value: float | None
    relative: float | None


@dataclass(frozen=True)
class RoiInput:
    rank: int
    position: str
    box_normalized: tuple[float, float, float, float] | None
    heat_share: float | None
    stats: tuple[RoiStat, ...]

    def stat(self, name: str) -> RoiStat | None:
        return next((s for s in self.stats if s.name == name), None)


@dataclass(frozen=True)
class EvidenceInput:
    """The parts of the ROI document an explanation may cite."""

    available: bool
    unavailable_reason: str | None = None
    rois: tuple[RoiInput, ...] = ()
    image_stats: dict[str, float | None] = field(default_factory=dict)
    heat_outside_rois: float | None = None
    metadata: dict[str, Any] | None = None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _roi(entry: dict[str, Any], index: int) -> RoiInput:
    stats = []
    evidence = entry.get("evidence") or {}
    if isinstance(evidence, dict):
        for name, item in evidence.items():
            if isinstance(item, dict):
                stats.append(
                    RoiStat(str(name), _number(item.get("value")), _number(item.get("relative")))
                )
    box = entry.get("box_normalized")
    box_tuple = None
    if isinstance(box, list | tuple) and len(box) == 4 and all(_number(v) is not None for v in box):
        box_tuple = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
    rank = entry.get("rank")
    return RoiInput(
        rank=rank if isinstance(rank, int) else index + 1,
        position=str(entry.get("position") or "unknown position"),
        box_normalized=box_tuple,
        heat_share=_number(entry.get("heat_share")),
        stats=tuple(stats),
    )


def evidence_from_document(
    document: dict[str, Any] | None, gradcam_status: str | None = None
) -> EvidenceInput:
    """Read the gradcam stage's document; ``available`` is False where it failed or never ran."""
    metadata = document.get("metadata") if isinstance(document, dict) else None
    metadata = metadata if isinstance(metadata, dict) else None
    if not isinstance(document, dict) or gradcam_status in ("failed", "skipped", "not_computed"):
        reason = "the gradcam stage did not run"
        if isinstance(document, dict) and document.get("error"):
            reason = str(document["error"])[:300]
        elif gradcam_status:
            reason = f"the gradcam stage is {gradcam_status}"
        return EvidenceInput(available=False, unavailable_reason=reason, metadata=metadata)
    if document.get("error"):
        return EvidenceInput(
            available=False, unavailable_reason=str(document["error"])[:300], metadata=metadata
        )
    entries = document.get("rois") or []
    rois = tuple(_roi(e, i) for i, e in enumerate(entries) if isinstance(e, dict))
    image = document.get("image") or {}
    statistics = image.get("statistics") if isinstance(image, dict) else None
    image_stats = (
        {str(k): _number(v) for k, v in statistics.items()} if isinstance(statistics, dict) else {}
    )
    return EvidenceInput(
        available=True,
        rois=tuple(sorted(rois, key=lambda r: r.rank)),
        image_stats=image_stats,
        heat_outside_rois=_number(document.get("heat_outside_rois")),
        metadata=metadata,
    )
