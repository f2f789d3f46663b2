"""What `aigi train` trains on: the decoded split, and what trains on it.

Either the whole model on augmented images, or (``--probe``) only the head on the
frozen backbone's features, computed once and cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from common.detector.config import (
    ClipBackboneConfig,
    CompactBackboneConfig,
    DetectorConfig,
    Preprocessing,
)
from common.detector.dataset import (
    Sample,
    TensorImageDataset,
    preload,
    scan,
    stratified_split,
    summarize,
)
from common.detector.model import Detector
from common.detector.preprocess import train_augmentation
from common.detector.training_loop import TrainingSetup, evaluate_logits

if TYPE_CHECKING:
    from common.detector.training import TrainOptions

log = logging.getLogger(__name__)


def _cache_key(config: DetectorConfig, summary: dict[str, object]) -> str:
    raw = json.dumps(
        [
            config.backbone.model_dump(mode="json"),
            config.preprocessing.model_dump(mode="json"),
            summary,
        ],
        sort_keys=True,
    )
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def cached_features(
    model: Detector,
    images: torch.Tensor,
    cache: Path,
    pre: Preprocessing,
    device: str,
    dtype: torch.dtype | None,
) -> torch.Tensor:
    """Frozen-backbone features, computed once and reused from ``cache``."""
    if cache.is_file():
        log.info("using cached features %s", cache)
        return torch.load(cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    features = evaluate_logits(model.backbone, images, pre, device, dtype, batch_size=64)
    torch.save(features, cache)
    return features


@dataclass
class DecodedSplit:
    """The stratified train/validation split, decoded once into uint8 tensors."""

    train_samples: list[Sample]
    val_samples: list[Sample]
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor


def split_samples(options: TrainOptions) -> tuple[list[Sample], list[Sample]]:
    """The stratified split of ``options.data`` (of a seeded subsample of
    ``max_samples`` images when that is set)."""
    samples = scan(Path(options.data))
    if options.max_samples:
        rng = np.random.default_rng(options.seed)
        samples = [samples[i] for i in sorted(rng.permutation(len(samples))[: options.max_samples])]
    train_samples, val_samples = stratified_split(samples, options.val_fraction, options.seed)
    if not val_samples:
        raise ValueError("the validation split is empty; add more images")
    return train_samples, val_samples


def decode_split(
    train_samples: list[Sample], val_samples: list[Sample], pre: Preprocessing, progress: bool
) -> DecodedSplit:
    log.info("data: %d train, %d validation images", len(train_samples), len(val_samples))
    total = len(train_samples) + len(val_samples)
    with tqdm(total=total, desc="decoding", unit="img", disable=not progress) as bar:
        train_x, train_y = preload(train_samples, pre, progress=bar.update)
        val_x, val_y = preload(val_samples, pre, progress=bar.update)
    return DecodedSplit(train_samples, val_samples, train_x, train_y, val_x, val_y)


def describe_data(options: TrainOptions, split: DecodedSplit) -> dict[str, Any]:
    """The checkpoint's record of what it was trained and validated on."""
    return {
        "source": str(options.data),
        "train": summarize(split.train_samples),
        "validation": summarize(split.val_samples),
        "split": {"val_fraction": options.val_fraction, "seed": options.seed, "stratified": True},
    }


def probe_setup(
    model: Detector,
    options: TrainOptions,
    split: DecodedSplit,
    data_summary: dict[str, Any],
    out: Path,
    device: str,
    dtype: torch.dtype | None,
) -> TrainingSetup:
    """A linear probe: only the head trains, on the frozen backbone's features (cached
    on disk under a key of the backbone, the preprocessing and the images)."""
    config = model.config
    if not isinstance(config.backbone, ClipBackboneConfig):
        raise ValueError("--probe needs --backbone clip-vit")
    cache_dir = options.feature_cache or out / "feature-cache"

    def features(images: torch.Tensor, summary: dict[str, object]) -> torch.Tensor:
        cache = cache_dir / f"{_cache_key(config, summary)}.pt"
        return cached_features(model, images, cache, config.preprocessing, device, dtype)

    train_features = features(split.train_x, data_summary["train"])
    val_features = features(split.val_x, data_summary["validation"])
    return TrainingSetup(
        trainable=model.head,
        train_set=TensorImageDataset(train_features, split.train_y),
        val_inputs=val_features,
        pre=None,
        device=device,
        dtype=dtype,
        frozen=model.backbone,
    )


def full_setup(
    model: Detector,
    options: TrainOptions,
    split: DecodedSplit,
    device: str,
    dtype: torch.dtype | None,
) -> TrainingSetup:
    """The whole model trains, on augmented images."""
    pre = model.config.preprocessing
    augment = train_augmentation(
        pre.input_size,
        options.crop_scale,
        options.jpeg,
        options.blur,
        options.rescale,
        options.crop,
    )
    return TrainingSetup(
        trainable=model,
        train_set=TensorImageDataset(split.train_x, split.train_y, transform=augment),
        val_inputs=split.val_x,
        pre=pre,
        device=device,
        dtype=dtype,
        channels_last=isinstance(model.config.backbone, CompactBackboneConfig),
    )
