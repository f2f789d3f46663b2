"""`aigi fit-ood`: OOD statistics, shift-aware temperature and the uncertain band.

For a checkpoint and its training data folders (a REAL/FAKE folder as `aigi train`
reads it, a wild-train folder with ``manifest.csv`` as `aigi train-wild` does), the
same validation split the training held out is rebuilt (CIFAKE: stratified 20 %, seed
0; wild-train: :func:`~common.detector.wild_data.split_by_group`, the recipe's
fraction, seed 0). Then, on subsamples:

1. features of training images fit each candidate score (Mahalanobis, kNN; energy
   needs no fit), and the validation images set each one's threshold at ``pass_rate``;
2. each candidate is measured on synthetic out-of-distribution images (noise, solid
   colours, text screenshots; seed ``SYNTHETIC_SEED``) and on shifted copies of the
   validation images (JPEG, blur, rescale): the stored score is the one that flags the
   most synthetic images net of the shifted validation images it flags;
3. the temperature is refitted on the validation logits *and* their shifted copies;
4. with ``thumbnail_data`` (thumbnail detectors), a second temperature for images the
   detector judges from a heavily downscaled copy
   (:mod:`~common.detector.thumbnail_calibration`).

Every run writes all of it anew: a refit without ``thumbnail_data`` drops a previous
thumbnail temperature.

Nothing here reads wild-dev: it is an evaluation set only.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter

from common.detector.calibration import fit_temperature
from common.detector.checkpoint import CONFIG_FILE, load_checkpoint, read_config
from common.detector.config import Calibration, DetectorConfig, OodConfig
from common.detector.dataset import scan, stratified_split
from common.detector.generalisation import jpeg_recompress, rescale
from common.detector.inference import DetectorEngine
from common.detector.metrics import roc_auc
from common.detector.model import CheckpointError
from common.detector.ood import OodStats, early_layers, fit_knn, fit_mahalanobis, save_ood
from common.detector.synthetic import synthetic_ood
from common.detector.thumbnail_calibration import fit_thumbnail_temperature
from common.images import decode_rgb

log = logging.getLogger(__name__)
SYNTHETIC_SEED = 1
Shift = Callable[[Image.Image], Image.Image]


#: What an upload goes through on a platform; the temperature is fitted on these too.
SHIFTS: dict[str, Shift] = {
    "jpeg_q75": jpeg_recompress(75),
    "blur_sigma1": lambda image: image.filter(ImageFilter.GaussianBlur(1.0)),
    "downscale_0.5": rescale(0.5),
}


@dataclass
class Outputs:
    """Per image: crop features (C×D) per feature kind, and logits (2,)."""

    features: dict[str, list[torch.Tensor]]
    logits: torch.Tensor
    labels: np.ndarray


def _load(path: Path) -> Image.Image:
    return decode_rgb(Path(path).read_bytes())


def splits(
    data: Sequence[Path], training: dict[str, Any], fit_limit: int, val_limit: int, seed: int = 0
) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """(fit, validation) samples: the training recipe's own split of each folder."""
    rng = np.random.default_rng(seed)
    fit: list[tuple[Path, int]] = []
    val: list[tuple[Path, int]] = []
    share = max(1, len(data))
    for folder in data:
        if (Path(folder) / "manifest.csv").is_file():
            from common.detector.wild_data import read_manifest, split_by_group

            wild = training.get("recipe") == "train-wild"
            fraction = float(training.get("val_fraction", 0.15)) if wild else 0.15
            train_w, val_w = split_by_group(read_manifest(folder), fraction, 0)
            train_s = [(s.path, s.label) for s in train_w]
            val_s = [(s.path, s.label) for s in val_w]
        else:
            fraction = float(training.get("val_fraction", 0.2))
            if training.get("recipe") == "train-wild":
                fraction = 0.2  # crop_training.load_cifake's split
            train_c, val_c = stratified_split(scan(Path(folder)), fraction, seed=0)
            train_s = [(s.path, s.label) for s in train_c]
            val_s = [(s.path, s.label) for s in val_c]
        for source, target, limit in ((train_s, fit, fit_limit), (val_s, val, val_limit)):
            n = min(len(source), limit // share)
            target.extend(source[i] for i in sorted(rng.permutation(len(source))[:n]))
    return fit, val


def outputs(
    engine: DetectorEngine,
    images: Sequence[Image.Image],
    labels: Sequence[int],
    kinds: Sequence[str],
) -> Outputs:
    features: dict[str, list[torch.Tensor]] = {kind: [] for kind in kinds}
    logits = []
    for image in images:
        f, lg = engine.image_outputs(image, kinds)
        for kind in kinds:
            features[kind].append(f[kind])
        logits.append(lg[0])
    return Outputs(features, torch.stack(logits), np.asarray(labels))


def _parse(name: str) -> tuple[str, str, str]:
    """``early:knn/mean-feature`` → (features, method, aggregation)."""
    features, _, rest = name.partition(":")
    method, _, aggregation = rest.partition("/")
    return features, method, aggregation


def candidate_scores(
    name: str, tensors: dict[str, torch.Tensor], out: Outputs, temperature: float
) -> np.ndarray:
    """Raw scores (higher = further out) of ``out`` under candidate ``name``."""
    if name == "energy":
        return (-temperature * torch.logsumexp(out.logits / temperature, dim=1)).numpy()
    features, method, aggregation = _parse(name)
    config = OodConfig(
        method=method,  # type: ignore[arg-type]
        features=features,  # type: ignore[arg-type]
        aggregation=aggregation,  # type: ignore[arg-type]
        threshold=1.0,
    )
    stats = OodStats(config, tensors)
    return np.array([stats.image_score(f) for f in out.features[features]])


def _measure(
    val: np.ndarray, synthetic: np.ndarray, kinds: Sequence[str], shifted: np.ndarray, q: float
) -> dict[str, Any]:
    # "higher": the threshold is a score some image has, so at least q of them pass.
    threshold = float(np.quantile(val, q, method="higher"))
    labels = np.r_[np.zeros(len(val)), np.ones(len(synthetic))]
    flagged = synthetic > threshold
    return {
        "threshold": threshold,
        "auroc_val_vs_synthetic": round(float(roc_auc(labels, np.r_[val, synthetic]) or 0), 4),
        "synthetic_flagged": round(float(flagged.mean()), 4),
        "synthetic_flagged_by_kind": {
            k: round(float(flagged[np.asarray(kinds) == k].mean()), 4) for k in sorted(set(kinds))
        },
        "shifted_val_flagged": round(float((shifted > threshold).mean()), 4),
    }


def selective(probs: np.ndarray, labels: np.ndarray, band: float) -> dict[str, float]:
    kept = np.abs(probs - 0.5) >= band
    correct = (probs >= 0.5) == labels
    return {
        "band": band,
        "coverage": round(float(kept.mean()), 4),
        "selective_accuracy": round(float(correct[kept].mean()) if kept.any() else 0.0, 4),
    }


def install(
    folder: Path,
    ood_config: OodConfig,
    tensors: dict[str, torch.Tensor],
    calibration: Calibration | None = None,
) -> DetectorConfig:
    """Write the statistics beside the weights and name them in config.json (atomically;
    every other field is kept)."""
    folder = Path(folder)
    save_ood(folder, ood_config, tensors)
    config = read_config(folder)
    update: dict[str, Any] = {"ood": ood_config}
    if calibration is not None:
        update["calibration"] = calibration
    new_config = config.model_copy(update=update)
    tmp = folder / f".{CONFIG_FILE}.tmp"
    tmp.write_text(json.dumps(new_config.model_dump(mode="json"), indent=2) + "\n")
    os.replace(tmp, folder / CONFIG_FILE)
    return new_config


def fit_ood(
    model: Path,
    data: Sequence[Path],
    band: float = 0.1,
    pass_rate: float = 0.95,
    fit_limit: int = 1500,
    val_limit: int = 1000,
    synthetic_per_kind: int = 40,
    method: str | None = None,
    components: int = 256,
    thumbnail_data: Sequence[Path] = (),
    thumbnail_limit: int = 1000,
) -> dict[str, Any]:
    """Measure the candidates, write ``ood.safetensors`` and update ``config.json``."""
    folder = Path(model)
    detector = load_checkpoint(folder)
    config = detector.config
    engine = DetectorEngine(detector)
    engine.ood = None
    try:
        early_layers(detector)
        kinds: tuple[str, ...] = ("pooled", "early")
    except CheckpointError:
        kinds = ("pooled",)
    fit_s, val_s = splits(data, config.training, fit_limit, val_limit)
    log.info("fit-ood: %d fitting, %d validation images", len(fit_s), len(val_s))
    fit_out = outputs(engine, [_load(p) for p, _ in fit_s], [y for _, y in fit_s], kinds)
    val_images = [_load(p) for p, _ in val_s]
    val_labels = [y for _, y in val_s]
    val_out = outputs(engine, val_images, val_labels, kinds)
    shifted = {
        name: outputs(engine, [shift(im) for im in val_images], val_labels, kinds)
        for name, shift in SHIFTS.items()
    }
    synth = synthetic_ood(synthetic_per_kind, SYNTHETIC_SEED)
    synth_out = outputs(engine, [im for _, im in synth], [0] * len(synth), kinds)
    synth_kinds = [k for k, _ in synth]

    # 3. temperature on validation + shifted validation (each shifted copy counts as an image)
    all_logits = torch.cat([val_out.logits, *(o.logits for o in shifted.values())])
    all_labels = torch.from_numpy(np.concatenate([val_out.labels] * (1 + len(shifted))))
    temperature = fit_temperature(all_logits, all_labels)
    thumbnail_temperature: float | None = None
    thumbnail_info: dict[str, Any] | None = None
    if thumbnail_data:
        thumbnail_temperature, thumbnail_info = fit_thumbnail_temperature(
            engine, thumbnail_data, temperature, thumbnail_limit
        )

    # 1-2. candidates
    labels = torch.from_numpy(fit_out.labels)
    fitted: dict[str, dict[str, torch.Tensor]] = {}
    for kind in kinds:
        per_image = torch.cat([f.mean(dim=0, keepdim=True) for f in fit_out.features[kind]])
        fitted[f"{kind}:mahalanobis"] = fit_mahalanobis(per_image, labels, components)
        fitted[f"{kind}:knn"] = fit_knn(per_image)
    aggregations = ["mean-feature"]
    if config.preprocessing.resize == "native-crops":
        aggregations.append("mean-score")
    names = [f"{key}/{agg}" for key in fitted for agg in aggregations] + ["energy"]
    shifted_all = Outputs(
        {kind: [f for o in shifted.values() for f in o.features[kind]] for kind in kinds},
        torch.cat([o.logits for o in shifted.values()]),
        np.concatenate([o.labels for o in shifted.values()]),
    )
    candidates: dict[str, Any] = {}
    val_scores: dict[str, np.ndarray] = {}
    for name in names:
        tensors = fitted.get(name.partition("/")[0], {})
        scores = [candidate_scores(name, tensors, o, temperature) for o in (val_out, synth_out)]
        shifted_scores = candidate_scores(name, tensors, shifted_all, temperature)
        candidates[name] = _measure(scores[0], scores[1], synth_kinds, shifted_scores, pass_rate)
        val_scores[name] = scores[0]
    storable = [n for n in names if n != "energy"]
    if method is not None:
        chosen = method if "/" in method else f"{method}/mean-feature"
        if chosen not in storable:
            raise ValueError(f"--method must be one of {', '.join(storable)}")
    else:
        # Most synthetic images flagged net of the shifted photos flagged (to the point:
        # smaller differences are noise at these sample sizes); then AUROC.
        chosen = max(
            storable,
            key=lambda n: (
                round(candidates[n]["synthetic_flagged"] - candidates[n]["shifted_val_flagged"], 2),
                candidates[n]["auroc_val_vs_synthetic"],
            ),
        )
    chosen_features, chosen_method, aggregation = _parse(chosen)

    probs_val = torch.softmax(val_out.logits / temperature, 1)[:, 1].numpy()
    probs_shift = torch.softmax(shifted_all.logits / temperature, 1)[:, 1].numpy()
    fit_info = {
        "data": [str(p) for p in data],
        "n_fit": len(fit_s),
        "n_validation": len(val_s),
        "shifts": list(SHIFTS),
        "synthetic_per_kind": synthetic_per_kind,
        "synthetic_seed": SYNTHETIC_SEED,
        "candidates": candidates,
        "chosen": chosen,
        "thresholds_by_pass_rate": {
            str(q): float(np.quantile(val_scores[chosen], q, method="higher"))
            for q in (0.9, 0.95, 0.975, 0.99)
        },
        "temperature_before": config.calibration.temperature,
        "thumbnail": thumbnail_info,
        "bands_on_validation": [
            selective(probs_val, val_out.labels, b) for b in (0.0, 0.05, 0.1, 0.15, 0.2)
        ],
        "bands_on_shifted_validation": [
            selective(probs_shift, shifted_all.labels, b) for b in (0.0, 0.05, 0.1, 0.15, 0.2)
        ],
    }
    ood_config = OodConfig(
        method=chosen_method,  # type: ignore[arg-type]
        features=chosen_features,  # type: ignore[arg-type]
        aggregation=aggregation,  # type: ignore[arg-type]
        threshold=candidates[chosen]["threshold"],
        pass_rate=pass_rate,
        fit=fit_info,
    )
    calibration = Calibration(
        temperature=temperature,
        thumbnail_temperature=thumbnail_temperature,
        tier_thresholds=config.calibration.tier_thresholds,
        decision_threshold=config.calibration.decision_threshold,
        uncertain_band=band,
    )
    install(folder, ood_config, fitted[chosen.partition("/")[0]], calibration)
    return {
        "checkpoint": str(folder),
        "chosen": chosen,
        "threshold": ood_config.threshold,
        "temperature": temperature,
        "thumbnail_temperature": thumbnail_temperature,
        "uncertain_band": band,
        **{k: v for k, v in fit_info.items() if k not in ("data", "shifts")},
    }
