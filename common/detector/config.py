"""The checkpoint configuration: everything needed to rebuild and use a detector.

A checkpoint is one folder holding ``config.json`` (this model) and
``model.safetensors``. The config is validated on load, so a missing or inconsistent
file fails with a message that says what to fix instead of a shape error deep in torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FORMAT_VERSION = 1
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: The first detector (CIFAKE only, 32x32 thumbnails); stays selectable with --model.
COMPACT_CIFAKE_V1 = WEIGHTS_DIR / "compact-cifake-v1"
#: The detector committed to the repository: the default of every command and service.
SHIPPED_MODEL = COMPACT_CIFAKE_V1
LABELS = ("REAL", "FAKE")
TIER_NAMES = ("mostly real", "probably real", "probably fake", "mostly fake")
#: The fifth tier: the model gives a label but has no basis to act on it.
UNCERTAIN = "uncertain"
ALL_TIERS = (*TIER_NAMES, UNCERTAIN)
#: ``verdict.reason`` when the tier is ``uncertain``.
REASON_OOD = "outside the training distribution"
REASON_BAND = "close to the decision threshold"
#: A thumbnail detector judges an image whose shorter side is at least this many times
#: its input size from a heavily downscaled copy: see ``Calibration.thumbnail_temperature``.
THUMBNAIL_FACTOR = 2.0
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CompactBackboneConfig(_Strict):
    """A small residual CNN trained from scratch (the offline default)."""

    kind: Literal["compact"] = "compact"
    widths: tuple[int, ...] = (32, 64, 128)
    blocks: tuple[int, ...] = (2, 2, 2)
    stem_stride: int = 1

    @model_validator(mode="after")
    def _same_length(self) -> CompactBackboneConfig:
        if len(self.widths) != len(self.blocks) or not self.widths:
            raise ValueError("compact backbone: 'widths' and 'blocks' need the same length")
        if any(w <= 0 for w in self.widths) or any(b <= 0 for b in self.blocks):
            raise ValueError("compact backbone: widths and blocks must be positive")
        return self


class ClipBackboneConfig(_Strict):
    """A transformers ``CLIPVisionModel``.

    ``pretrained`` is a Hugging Face id (pin ``revision``) or a local folder. When the
    checkpoint stores the backbone's weights itself (``weights_in_checkpoint``), the
    architecture comes from ``vision_config`` and nothing is downloaded.
    """

    kind: Literal["clip-vit"] = "clip-vit"
    pretrained: str | None = None
    revision: str | None = None
    vision_config: dict[str, Any] | None = None
    weights_in_checkpoint: bool = True
    frozen: bool = False

    @model_validator(mode="after")
    def _has_source(self) -> ClipBackboneConfig:
        if self.weights_in_checkpoint and self.vision_config is None:
            raise ValueError("clip-vit backbone stored in the checkpoint needs 'vision_config'")
        if not self.weights_in_checkpoint and not self.pretrained:
            raise ValueError(
                "clip-vit backbone not stored in the checkpoint needs 'pretrained' "
                "(a Hugging Face id with 'revision', or a local folder)"
            )
        return self


class EfficientNetBackboneConfig(_Strict):
    """timm's ``tf_efficientnet_lite0/1/2``, started from the packaged ImageNet weights.

    The checkpoint always stores the fine-tuned weights; ``channel_multiplier`` and
    ``depth_multiplier`` scale the network down (tests build a tiny one from them).
    """

    kind: Literal["efficientnet-lite"] = "efficientnet-lite"
    variant: Literal["lite0", "lite1", "lite2"] = "lite0"
    #: ``npr``: the network sees x − up(down(x)) (nearest, factor 2), the
    #: neighbouring-pixel residual of Tan et al. (CVPR 2024), instead of the pixels.
    input_filter: Literal["none", "npr"] = "none"
    channel_multiplier: float | None = None
    depth_multiplier: float | None = None


BackboneConfig = CompactBackboneConfig | ClipBackboneConfig | EfficientNetBackboneConfig


class HeadConfig(_Strict):
    """``linear``: z = Wx + b. ``mlp``: the report's "sequential layer" ablation."""

    kind: Literal["linear", "mlp"] = "linear"
    hidden: int = 256
    dropout: float = 0.1


class Preprocessing(_Strict):
    """How an image becomes model input.

    ``resize``/``center-crop`` bring the whole image to ``input_size`` (a thumbnail).
    ``native-crops`` never resamples: up to ``max_crops`` windows of ``input_size`` at
    native pixel scale are scored and their logits averaged; a side shorter than a crop
    is kept at its own length (see :mod:`common.detector.tiling`).
    """

    input_size: int = 32
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resize: Literal["resize", "center-crop", "native-crops"] = "resize"
    max_crops: int = 1

    @field_validator("input_size")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 8:
            raise ValueError("input_size must be at least 8 pixels")
        return value

    @field_validator("max_crops")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError("max_crops must be at least 1")
        return value

    @field_validator("std")
    @classmethod
    def _nonzero(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(v <= 0 for v in value):
            raise ValueError("std values must be positive")
        return value


class Calibration(_Strict):
    """Temperature scaling: p(FAKE) = softmax(logits / temperature)[1].

    ``uncertain_band``: a probability in ``[decision_threshold - band, decision_threshold
    + band)`` gets the tier ``uncertain`` (0 = never; ``aigi fit-ood --band`` sets it).

    ``thumbnail_temperature`` (thumbnail detectors only): used instead of ``temperature``
    for images at least :data:`THUMBNAIL_FACTOR` × the input size. A detector trained on
    images already at its input size (CIFAKE's 32 px) has never seen what a downscaled
    photograph looks like; one temperature fitted on its own validation images leaves it
    confidently wrong there. ``aigi fit-ood --thumbnail-data`` fits this one on labelled
    large images the detector never trained on. None: ``temperature`` for every image.
    """

    temperature: float = 1.0
    thumbnail_temperature: float | None = None
    tier_thresholds: tuple[float, float, float] = (0.2, 0.5, 0.8)
    decision_threshold: float = 0.5
    uncertain_band: float = 0.0

    @model_validator(mode="after")
    def _consistent(self) -> Calibration:
        if self.temperature <= 0:
            raise ValueError("temperature must be positive")
        if self.thumbnail_temperature is not None and self.thumbnail_temperature <= 0:
            raise ValueError("thumbnail_temperature must be positive (or null)")
        t = self.tier_thresholds
        if not (0.0 < t[0] < t[1] < t[2] < 1.0):
            raise ValueError("tier_thresholds must rise strictly inside (0, 1)")
        if not 0.0 < self.decision_threshold < 1.0:
            raise ValueError("decision_threshold must lie inside (0, 1)")
        if not 0.0 <= self.uncertain_band < 0.5:
            raise ValueError("uncertain_band must lie in [0, 0.5)")
        return self


class OodConfig(_Strict):
    """The out-of-distribution test stored with a checkpoint (``aigi fit-ood``).

    The statistics live in ``file`` beside the weights; ``threshold`` is the raw score
    that ``pass_rate`` of the in-distribution validation images stay at or below. The
    public ``ood_score`` is the raw score divided by ``threshold``: above 1 means
    outside the training distribution.
    """

    file: str = "ood.safetensors"
    method: Literal["mahalanobis", "knn"] = "mahalanobis"
    #: ``pooled``: the features the head reads; ``early``: spatial mean and standard
    #: deviation of two early stages' outputs (see :mod:`common.detector.ood`).
    features: Literal["pooled", "early"] = "pooled"
    #: native crops: score the mean of the crops' features, or average the crops' scores.
    aggregation: Literal["mean-feature", "mean-score"] = "mean-feature"
    threshold: float
    pass_rate: float = 0.95
    fit: dict[str, Any] = Field(default_factory=dict)

    @field_validator("threshold")
    @classmethod
    def _threshold_positive(cls, value: float) -> float:
        if not value > 0:
            raise ValueError("ood.threshold must be positive")
        return value


class Quantization(_Strict):
    scheme: Literal["dynamic-int8"] = "dynamic-int8"
    modules: tuple[str, ...] = ("Linear",)


class DetectorConfig(_Strict):
    format_version: int = FORMAT_VERSION
    model_id: str
    labels: tuple[str, str] = LABELS
    backbone: CompactBackboneConfig | ClipBackboneConfig | EfficientNetBackboneConfig = Field(
        discriminator="kind"
    )
    head: HeadConfig = HeadConfig()
    preprocessing: Preprocessing = Preprocessing()
    calibration: Calibration = Calibration()
    quantization: Quantization | None = None
    ood: OodConfig | None = None
    training: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> DetectorConfig:
        if self.format_version != FORMAT_VERSION:
            raise ValueError(
                f"format_version {self.format_version} is not supported (expected "
                f"{FORMAT_VERSION}); re-export the checkpoint with this version of aigi"
            )
        if tuple(self.labels) != LABELS:
            raise ValueError(f"labels must be {list(LABELS)} (REAL=0, FAKE=1), got {self.labels}")
        if (
            self.calibration.thumbnail_temperature is not None
            and self.preprocessing.resize == "native-crops"
        ):
            raise ValueError(
                "calibration.thumbnail_temperature applies to thumbnail detectors only; a "
                "native-crops detector never downscales (remove it from config.json)"
            )
        return self

    def judged_from_thumbnail(self, width: int, height: int) -> bool:
        """Whether the model sees an image of this size only heavily downscaled."""
        if self.preprocessing.resize == "native-crops":
            return False
        return min(width, height) >= THUMBNAIL_FACTOR * self.preprocessing.input_size

    def temperature_for(self, width: int, height: int) -> float:
        """The calibration temperature for an image of this size (see ``Calibration``)."""
        cal = self.calibration
        if cal.thumbnail_temperature is not None and self.judged_from_thumbnail(width, height):
            return cal.thumbnail_temperature
        return cal.temperature


def tier_for(probability: float, thresholds: tuple[float, float, float]) -> str:
    """Map a calibrated probability of FAKE to one of the four tiers."""
    for name, upper in zip(TIER_NAMES, thresholds, strict=False):
        if probability < upper:
            return name
    return TIER_NAMES[-1]


def verdict_tier(
    probability: float, calibration: Calibration, ood_score: float | None = None
) -> tuple[str, str | None]:
    """The tier and, when it is ``uncertain``, the reason.

    Out of distribution (``ood_score > 1``) wins over the band; ``ood_score`` None (a
    checkpoint without OOD statistics) leaves the tier to the probability alone.
    """
    if ood_score is not None and ood_score > 1.0:
        return UNCERTAIN, REASON_OOD
    band = calibration.uncertain_band
    centre = calibration.decision_threshold
    if band > 0 and centre - band <= probability < centre + band:
        return UNCERTAIN, REASON_BAND
    return tier_for(probability, calibration.tier_thresholds), None


def model_id_of(folder: Path | None) -> str:
    """The model id in a checkpoint's config.json, read without importing torch."""
    path = Path(folder or SHIPPED_MODEL) / "config.json"
    try:
        return str(json.loads(path.read_text())["model_id"])
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"cannot read model_id from {path}: {exc}") from exc
