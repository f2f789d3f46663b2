"""The inference engine the workers and the command line share."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from common.detector.checkpoint import default_checkpoint, load_checkpoint
from common.detector.config import LABELS, DetectorConfig, verdict_tier
from common.detector.model import Detector
from common.detector.ood import EarlyTap, OodStats, stats_of
from common.detector.preprocess import batch_from_images, model_input


@dataclass(frozen=True)
class Prediction:
    label: int
    label_name: str
    probability: float
    tier: str
    logits: tuple[float, float]
    #: raw OOD score / threshold (> 1: outside the training distribution); None when
    #: the checkpoint has no OOD statistics.
    ood_score: float | None = None
    #: why the tier is ``uncertain`` (None otherwise).
    reason: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "label": self.label,
            "label_name": self.label_name,
            "probability": self.probability,
            "tier": self.tier,
            "ood_score": self.ood_score,
            "reason": self.reason,
        }


def predictions_from_logits(
    logits: torch.Tensor,
    config: DetectorConfig,
    ood_scores: Sequence[float | None] | None = None,
    sizes: Sequence[tuple[int, int]] | None = None,
) -> list[Prediction]:
    """Calibrated verdicts; ``sizes`` (width, height per row) choose each image's
    temperature (:meth:`DetectorConfig.temperature_for`), else ``temperature``."""
    cal = config.calibration
    if sizes is None:
        temperatures = torch.full((len(logits), 1), cal.temperature)
    else:
        temperatures = torch.tensor([[config.temperature_for(w, h)] for w, h in sizes])
    probs = torch.softmax(logits.float() / temperatures, dim=1)[:, 1]
    scores = list(ood_scores) if ood_scores is not None else [None] * len(probs)
    out = []
    for row, p, ood in zip(logits.tolist(), probs.tolist(), scores, strict=True):
        label = int(p >= cal.decision_threshold)
        tier, reason = verdict_tier(p, cal, ood)
        score = None if ood is None else round(float(ood), 4)
        out.append(Prediction(label, LABELS[label], float(p), tier, tuple(row), score, reason))
    return out


def _sizes(images: Sequence[Image.Image]) -> list[tuple[int, int]]:
    return [image.size for image in images]


class DetectorEngine:
    """Loads a checkpoint once; classifies PIL images in batches under inference mode."""

    def __init__(
        self,
        model: Detector,
        device: str = "cpu",
        batch_size: int = 32,
        ood: OodStats | None = None,
    ) -> None:
        self.model = model.to(device).eval()
        self.config = model.config
        self.device = device
        self.batch_size = batch_size
        self.ood = ood if ood is not None else stats_of(model)
        self._tap: EarlyTap | None = None

    @classmethod
    def from_checkpoint(
        cls, folder: Path | None = None, device: str = "cpu", batch_size: int = 32
    ) -> DetectorEngine:
        return cls(load_checkpoint(folder or default_checkpoint()), device, batch_size)

    @property
    def model_id(self) -> str:
        return self.config.model_id

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(batch.to(self.device)).float().cpu()

    def features_and_logits(
        self, batch: torch.Tensor, kinds: Sequence[str] = ()
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Logits (N×2) and, in one pass, the OOD features of ``kinds`` (default: what
        the OOD statistics read): ``pooled`` (what the head reads) and/or ``early``."""
        kinds = tuple(kinds) or ((self.ood.features,) if self.ood is not None else ("pooled",))
        if "early" in kinds and self._tap is None:
            self._tap = EarlyTap(self.model)
        with torch.inference_mode():
            pooled = self.model.backbone(batch.to(self.device))
            logits = self.model.head(pooled)
        features: dict[str, torch.Tensor] = {}
        if "pooled" in kinds:
            features["pooled"] = pooled.float().cpu()
        if "early" in kinds:
            assert self._tap is not None
            features["early"] = self._tap.features()
        return features, logits.float().cpu()

    def image_logits(self, image: Image.Image) -> torch.Tensor:
        """One image's logits (1×2): the mean over its native crops, or its thumbnail's."""
        batch, _ = model_input(image, self.config.preprocessing)
        return self.logits(batch).mean(dim=0, keepdim=True)

    def image_outputs(
        self, image: Image.Image, kinds: Sequence[str] = ()
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One image's crop features (C×D each; C = 1 for a thumbnail) and logits (1×2)."""
        batch, _ = model_input(image, self.config.preprocessing)
        features, logits = self.features_and_logits(batch, kinds)
        return features, logits.mean(dim=0, keepdim=True)

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        if not images:
            return []
        if self.ood is None:
            return self._predict_without_ood(images)
        stats = self.ood
        if self.config.preprocessing.resize == "native-crops":
            outputs = [self.image_outputs(image) for image in images]
            logits = torch.cat([lg for _, lg in outputs])
            scores = [stats.image_score(features[stats.features]) for features, _ in outputs]
            return predictions_from_logits(logits, self.config, scores, _sizes(images))
        results: list[Prediction] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            features, logits = self.features_and_logits(
                batch_from_images(chunk, self.config.preprocessing)
            )
            raw = stats.raw_scores(features[stats.features])
            ood = (raw / stats.config.threshold).tolist()
            results.extend(predictions_from_logits(logits, self.config, ood, _sizes(chunk)))
        return results

    def _predict_without_ood(self, images: Sequence[Image.Image]) -> list[Prediction]:
        if self.config.preprocessing.resize == "native-crops":
            # Images differ in size, so each is its own batch of crops.
            logits = torch.cat([self.image_logits(image) for image in images])
            return predictions_from_logits(logits, self.config, sizes=_sizes(images))
        results: list[Prediction] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            batch = batch_from_images(chunk, self.config.preprocessing)
            results.extend(
                predictions_from_logits(self.logits(batch), self.config, sizes=_sizes(chunk))
            )
        return results

    def predict_one(self, image: Image.Image) -> tuple[Prediction, float]:
        """One prediction and its wall time in milliseconds."""
        start = time.perf_counter()
        prediction = self.predict([image])[0]
        return prediction, (time.perf_counter() - start) * 1000.0
