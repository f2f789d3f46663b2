"""The temperature for images a thumbnail detector sees only heavily downscaled.

A detector trained on images already at its input size (``compact-cifake-v1``: CIFAKE's
32 px) meets, in production, photographs of thousands of pixels it judges from a 32-px
thumbnail. Its own validation images say nothing about how reliable that is, so one
temperature fitted on them leaves it confidently wrong on large images (measured on
wild-dev: see the model card). ``aigi fit-ood --thumbnail-data`` fits a second
temperature, :attr:`~common.detector.config.Calibration.thumbnail_temperature`, on
labelled large images the detector never trained on, and checks it on a group-disjoint
held-out part of the same data.

Folders: a wild-train folder (``manifest.csv``) is split by
:func:`~common.detector.wild_data.split_by_group` (15 %, seed 0): the temperature is
fitted on its training part and checked on its validation part, whose sources the fit
never saw. A plain REAL/FAKE folder is split 80/20 (stratified, seed 0). Only images at
least :data:`~common.detector.config.THUMBNAIL_FACTOR` × the input size count.
wild-dev is an evaluation set: never pass it here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.detector.calibration import fit_temperature
from common.detector.config import tier_for
from common.detector.dataset import DatasetError, scan, stratified_split
from common.detector.inference import DetectorEngine
from common.detector.metrics import selective_metrics
from common.detector.preprocess import image_size
from common.images import decode_rgb

log = logging.getLogger(__name__)
Labelled = list[tuple[Path, int]]
Thresholds = tuple[float, float, float]


def thumbnail_splits(data: Sequence[Path], limit: int, seed: int = 0) -> tuple[Labelled, Labelled]:
    """(fit, held-out) labelled images from ``data``, at most ``limit`` and ``limit // 2``."""
    fit: Labelled = []
    held: Labelled = []
    for folder in data:
        if (Path(folder) / "manifest.csv").is_file():
            from common.detector.wild_data import read_manifest, split_by_group

            train_w, val_w = split_by_group(read_manifest(Path(folder)), 0.15, 0)
            fit += [(s.path, s.label) for s in train_w]
            held += [(s.path, s.label) for s in val_w]
        else:
            train_c, val_c = stratified_split(scan(Path(folder)), 0.2, seed=0)
            fit += [(s.path, s.label) for s in train_c]
            held += [(s.path, s.label) for s in val_c]
    rng = np.random.default_rng(seed)

    def subsample(items: Labelled, n: int) -> Labelled:
        return [items[i] for i in sorted(rng.permutation(len(items))[:n])]

    return subsample(fit, limit), subsample(held, limit // 2)


def _logits(engine: DetectorEngine, samples: Labelled) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of the samples the detector judges from a thumbnail."""
    config = engine.config
    kept = [(p, y) for p, y in samples if config.judged_from_thumbnail(*image_size(p))]
    if not kept:
        return torch.zeros((0, 2)), torch.zeros(0, dtype=torch.long)
    logits = torch.cat([engine.image_logits(decode_rgb(Path(p).read_bytes())) for p, _ in kept])
    return logits, torch.tensor([y for _, y in kept], dtype=torch.long)


def _calibration(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float, thresholds: Thresholds
) -> dict[str, Any]:
    """NLL, ECE and the share wrong in a "mostly" tier (the checkpoint's tier thresholds)."""
    probs = torch.softmax(logits.double() / temperature, 1)
    nll = torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), labels)
    p_fake = probs[:, 1].numpy()
    tiers = [tier_for(float(p), thresholds) for p in p_fake]
    selective = selective_metrics(labels.numpy(), p_fake, tiers)
    return {
        "temperature": round(temperature, 4),
        "nll": round(float(nll), 4),
        "ece": round(selective["ece"], 4),
        "wrong_in_mostly_tier": round(selective["confidently_wrong"], 4),
    }


def fit_thumbnail_temperature(
    engine: DetectorEngine, data: Sequence[Path], baseline: float, limit: int = 1000
) -> tuple[float, dict[str, Any]]:
    """The temperature for thumbnail-judged images, and the held-out images' calibration
    under it and under ``baseline`` (the temperature every image would get otherwise)."""
    config = engine.config
    if config.preprocessing.resize == "native-crops":
        raise ValueError(
            "--thumbnail-data applies to thumbnail detectors only: a native-crops detector "
            "never downscales an image"
        )
    fit_s, held_s = thumbnail_splits(data, limit)
    fit_logits, fit_labels = _logits(engine, fit_s)
    if len(fit_labels) < 50 or len(set(fit_labels.tolist())) < 2:
        minimum = config.preprocessing.input_size * 2
        raise DatasetError(
            f"--thumbnail-data gave {len(fit_labels)} usable images; pass folders with at "
            f"least 50 REAL and FAKE images of {minimum} px or more on the shorter side"
        )
    temperature = fit_temperature(fit_logits, fit_labels)
    held_logits, held_labels = _logits(engine, held_s)
    info: dict[str, Any] = {
        "data": [str(p) for p in data],
        "n_fit": len(fit_labels),
        "n_held_out": len(held_labels),
    }
    if len(held_labels):
        thresholds = config.calibration.tier_thresholds
        info["held_out_before"] = _calibration(held_logits, held_labels, baseline, thresholds)
        info["held_out_after"] = _calibration(held_logits, held_labels, temperature, thresholds)
    log.info("thumbnail temperature %.3f: %s", temperature, info)
    return temperature, info
