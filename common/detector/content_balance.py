"""Content-balanced sampling: weight training images so content cannot tell the classes apart.

wild-train's classes differ in *what* they show as much as in how it was made: the FAKE
side is mostly drawn and painted 2021–22 art, the REAL side photographs of objects,
scenes and faces. A frozen ImageNet probe separates them by content alone (about 90 %
inside wild-train) and is at chance on wild-dev, so a detector that leans on content
learns the sources, not the generators. Propensity weighting is the textbook remedy for
such a covariate imbalance: with ``p = P(FAKE | content)`` from a cross-fitted logistic
probe on the starting backbone's pooled features, a FAKE image is weighted by
``(1 − p) / p`` and a REAL one by ``p / (1 − p)``, so under the weights both classes
have the same content distribution. ``power`` softens the weights (0: off, 1: full);
they are clipped to [1/20, 5] because a handful of images must not carry a class.

Measured on the leave-one-source-out folds (docs/model-card.md, "Tried since"): with the
data here it *hurts* — what the recipe transfers to an unseen generator family is
mostly content — so it is off by default and kept to measure that, and for data where
both classes show the same things.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from common.detector.config import Preprocessing
from common.detector.preprocess import normalize

log = logging.getLogger(__name__)

#: Bounds on one image's propensity weight (before ``power``).
WEIGHT_CLIP = (0.05, 5.0)


def pooled_features(
    backbone: nn.Module, images: Iterable[torch.Tensor], pre: Preprocessing
) -> np.ndarray:
    """The backbone's pooled features of each uint8 CHW image, at its native size."""
    rows = []
    was_training = backbone.training
    backbone.eval()
    with torch.inference_mode():
        for image in images:
            rows.append(backbone(normalize(image[None], pre))[0].float().numpy())
    backbone.train(was_training)
    return np.stack(rows) if rows else np.empty((0, 0), dtype=np.float32)


def propensity_weights(
    features: np.ndarray, labels: np.ndarray, power: float = 1.0, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Per-image weights that equalise the classes' content (see the module docstring).

    ``p`` is cross-fitted (each image scored by a probe that never saw it), so images the
    probe merely memorised are not mistaken for easily separable ones.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    labels = np.asarray(labels)
    if power == 0 or len(np.unique(labels)) < 2:
        return np.ones(len(labels))
    scaled = (features - features.mean(0)) / (features.std(0) + 1e-6)
    folds = max(2, min(folds, int(np.bincount(labels).min())))
    probe = LogisticRegression(C=0.05, max_iter=3000)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    p_fake = cross_val_predict(probe, scaled, labels, cv=splitter, method="predict_proba")[:, 1]
    p_fake = np.clip(p_fake, 1e-4, 1 - 1e-4)
    ratio = np.where(labels == 1, (1 - p_fake) / p_fake, p_fake / (1 - p_fake))
    accuracy = float(np.mean((p_fake >= 0.5) == (labels == 1)))
    log.info("content probe: cross-fitted accuracy %.3f on %d images", accuracy, len(labels))
    return np.asarray(np.clip(ratio, *WEIGHT_CLIP) ** power)


def reweighted(base: np.ndarray, weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``base × weights``, renormalised so each class keeps half the probability mass."""
    combined = np.asarray(base, dtype=np.float64) * weights
    labels = np.asarray(labels)
    for label in (0, 1):
        mask = labels == label
        if mask.any():
            combined[mask] /= combined[mask].sum()
    return combined / combined.sum()


def effective_size(weights: np.ndarray) -> float:
    """Kish's effective sample size: how many equally weighted images the weights are worth."""
    normalised = weights / weights.sum()
    return float(1.0 / np.sum(normalised**2))
