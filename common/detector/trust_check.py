"""`aigi trust-check`: the [trust] targets, measured for one checkpoint.

* wild-dev (evaluation only, nothing is fitted or chosen on it): ``confidently_wrong``
  ≤ 3 %, ECE ≤ 0.10, coverage ≥ 60 %;
* CIFAKE validation (the stratified 20 % split, seed 0, a subsample): coverage ≥ 95 %,
  accuracy as without the tiers (the tiers never change the label);
* synthetic images (noise, solid colours, text screenshots, seed ``SEED``, not the
  seed `aigi fit-ood` chose its score with): ``uncertain`` for ≥ 90 %.

Every image goes through :class:`~common.detector.inference.DetectorEngine`, the
classify worker's path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.detector.checkpoint import load_checkpoint
from common.detector.config import UNCERTAIN
from common.detector.dataset import scan, stratified_split
from common.detector.inference import DetectorEngine, Prediction
from common.detector.metrics import classification_metrics, plot_risk_coverage, selective_metrics
from common.detector.synthetic import EXTRA_KINDS, synthetic_ood
from common.images import decode_rgb

log = logging.getLogger(__name__)
SEED = 2026
TARGETS = {
    "wild_dev.confidently_wrong": ("<=", 0.03),
    "wild_dev.ece": ("<=", 0.10),
    "wild_dev.coverage": (">=", 0.60),
    "cifake_validation.coverage": (">=", 0.95),
    "synthetic.uncertain_share": (">=", 0.90),
}


def _predict(engine: DetectorEngine, paths: Sequence[Path]) -> list[Prediction]:
    return [engine.predict([decode_rgb(Path(p).read_bytes())])[0] for p in paths]


def _summary(labels: np.ndarray, predictions: Sequence[Prediction]) -> dict[str, Any]:
    probs = np.array([p.probability for p in predictions])
    tiers = [p.tier for p in predictions]
    metrics = classification_metrics(labels, probs)
    out: dict[str, Any] = {"n": len(labels), "accuracy": round(float(metrics["accuracy"]), 4)}
    out.update({k: round(v, 4) for k, v in selective_metrics(labels, probs, tiers).items()})
    reasons = [p.reason for p in predictions if p.tier == UNCERTAIN]
    out["uncertain_reasons"] = {r: reasons.count(r) for r in sorted({str(r) for r in reasons})}
    return out


def trust_check(
    model: Path,
    wild_dev: Path | None = None,
    cifake: Path | None = None,
    cifake_limit: int = 1500,
    synthetic_per_kind: int = 50,
    plots: Path | None = None,
) -> dict[str, Any]:
    engine = DetectorEngine(load_checkpoint(model))
    cal = engine.config.calibration
    report: dict[str, Any] = {
        "model_id": engine.model_id,
        "ood": None
        if engine.ood is None
        else {
            "features": engine.ood.features,
            "method": engine.ood.method,
            "aggregation": engine.ood.config.aggregation,
            "pass_rate": engine.ood.config.pass_rate,
        },
        "temperature": cal.temperature,
        "thumbnail_temperature": cal.thumbnail_temperature,
        "uncertain_band": cal.uncertain_band,
    }
    if wild_dev is not None:
        samples = scan(Path(wild_dev))
        labels = np.array([s.label for s in samples])
        predictions = _predict(engine, [s.path for s in samples])
        report["wild_dev"] = _summary(labels, predictions)
        if plots is not None:
            plots.mkdir(parents=True, exist_ok=True)
            w = report["wild_dev"]
            plot_risk_coverage(
                labels,
                np.array([p.probability for p in predictions]),
                [p.ood_score for p in predictions],
                (w["coverage"], w["selective_accuracy"]),
                plots / "risk_coverage_wild_dev.png",
            )
    if cifake is not None:
        _, val = stratified_split(scan(Path(cifake)), 0.2, seed=0)
        rng = np.random.default_rng(0)
        chosen = [val[i] for i in sorted(rng.permutation(len(val))[:cifake_limit])]
        labels = np.array([s.label for s in chosen])
        report["cifake_validation"] = _summary(labels, _predict(engine, [s.path for s in chosen]))
    images = synthetic_ood(synthetic_per_kind, SEED)
    predictions = engine.predict([image for _, image in images])
    kinds = [kind for kind, _ in images]
    uncertain = np.array([p.tier == UNCERTAIN for p in predictions])
    report["synthetic"] = {
        "n": len(images),
        "uncertain_share": round(float(uncertain.mean()), 4),
        "by_kind": {
            k: round(float(uncertain[np.array(kinds) == k].mean()), 4) for k in sorted(set(kinds))
        },
        "mostly_tier_share": round(
            float(np.mean([p.tier.startswith("mostly") for p in predictions])), 4
        ),
    }
    extra = synthetic_ood(synthetic_per_kind, SEED, EXTRA_KINDS)
    extra_predictions = engine.predict([image for _, image in extra])
    report["synthetic_other_kinds"] = {
        kind: round(
            float(
                np.mean(
                    [
                        p.tier == UNCERTAIN
                        for (k, _), p in zip(extra, extra_predictions, strict=True)
                        if k == kind
                    ]
                )
            ),
            4,
        )
        for kind in EXTRA_KINDS
    }
    met: dict[str, bool] = {}
    for key, (op, bound) in TARGETS.items():
        section, _, name = key.partition(".")
        if section in report:
            value = report[section][name]
            met[key] = value <= bound if op == "<=" else value >= bound
    report["targets_met"] = met
    return report
