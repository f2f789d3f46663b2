"""`aigi train-wild`: fine-tune a pretrained backbone on native-scale crops.

The recipe the generalisation report measures (see docs/model-card.md):

* **native-scale crops** of ``crop`` pixels, drawn at random from each image, never a
  resized whole picture, so image size and object scale cannot be the signal;
* **robustness augmentations on both classes**: random re-scaling (the whole image
  resampled by 0.75–1.5 with p 0.3 by default, ``rescale_range``/``rescale_p``, before
  cropping, so resampling traces are no class cue),
  JPEG re-compression (quality 60–95), Gaussian blur, horizontal flips;
* **class- and source-balanced sampling** (:func:`~common.detector.wild_data.balanced_weights`),
  optionally content-balanced on top (``content_balance``, :mod:`common.detector.content_balance`);
* **CIFAKE mixed in** as separate batches at its native 32 px, so its domain is not lost;
* BatchNorm statistics frozen at their ImageNet values: batches of 16 crops on a CPU
  give noisy statistics, and 32-px CIFAKE batches would drag them to another scale;
* a temperature fitted on the validation split (wild-train, grouped by source) at the end.

The checkpoint with the best validation ROC-AUC (checked every ``eval_every`` steps) is
kept. Excluding generator groups (``exclude_groups``) is how the leave-one-source-out
table trains its folds.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import nn

from common.detector.checkpoint import save_checkpoint
from common.detector.config import (
    Calibration,
    DetectorConfig,
    EfficientNetBackboneConfig,
    HeadConfig,
    Preprocessing,
)
from common.detector.dataset import Sample, scan, stratified_split
from common.detector.metrics import classification_metrics
from common.detector.model import Detector
from common.detector.preprocess import load_image, normalize
from common.detector.training_record import calibrated_metrics, options_record, write_history
from common.detector.wild_data import (
    WildSample,
    balanced_weights,
    read_manifest,
    split_by_group,
)

log = logging.getLogger(__name__)


@dataclass
class CropTrainOptions:
    wild: Path
    out: Path
    cifake: Path | None = None
    variant: Literal["lite0", "lite1", "lite2"] = "lite0"
    input_filter: Literal["none", "npr"] = "none"
    crop: int = 128
    max_crops: int = 8
    #: Resampling factor range and probability of the whole-image re-scale augmentation.
    rescale_range: tuple[float, float] = (0.75, 1.5)
    rescale_p: float = 0.3
    #: Content-balanced sampling strength (0 off, 1 full): common/detector/content_balance.py.
    content_balance: float = 0.0
    steps: int = 1000
    batch_size: int = 16
    cifake_every: int = 2
    cifake_batch: int = 64
    cifake_max: int = 20000
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup: int = 50
    eval_every: int = 300
    val_fraction: float = 0.15
    exclude_groups: tuple[str, ...] = ()
    seed: int = 0
    imagenet: bool = True
    #: Start from this checkpoint's weights instead of ImageNet (a further phase).
    init: Path | None = None
    model_id: str | None = None
    tiny: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CropTrainResult:
    checkpoint: Path
    val_metrics: dict[str, Any]
    steps: int
    seconds: float


def build_wild_config(options: CropTrainOptions) -> DetectorConfig:
    backbone = EfficientNetBackboneConfig(
        variant=options.variant,
        input_filter=options.input_filter,
        channel_multiplier=0.25 if options.tiny else None,
        depth_multiplier=0.25 if options.tiny else None,
    )
    return DetectorConfig(
        model_id=options.model_id or f"efficientnet-{options.variant}-wild",
        backbone=backbone,
        head=HeadConfig(kind="linear"),
        preprocessing=Preprocessing(
            input_size=options.crop, resize="native-crops", max_crops=options.max_crops
        ),
    )


def decode_native(path: Path) -> torch.Tensor:
    """A file → uint8 CHW at its own size."""
    array = np.asarray(load_image(path), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


class CropSampler:
    """Random augmented native-scale crops of ``size``; see the module docstring."""

    def __init__(
        self,
        size: int,
        rng: np.random.Generator,
        rescale_range: tuple[float, float] = (0.75, 1.5),
        rescale_p: float = 0.3,
    ) -> None:
        self.size = size
        self.rng = rng
        self.rescale_range = rescale_range
        self.rescale_p = rescale_p

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        rng = self.rng
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        if rng.random() < self.rescale_p:
            factor = float(rng.uniform(*self.rescale_range))
            new = (max(1, round(pil.width * factor)), max(1, round(pil.height * factor)))
            method = [Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS]
            pil = pil.resize(new, method[int(rng.integers(3))])
        width, height = pil.size
        crop_w, crop_h = min(self.size, width), min(self.size, height)
        left = int(rng.integers(0, width - crop_w + 1))
        top = int(rng.integers(0, height - crop_h + 1))
        pil = pil.crop((left, top, left + crop_w, top + crop_h))
        if rng.random() < 0.2:
            pil = pil.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 1.2))))
        if rng.random() < 0.5:
            buffer = io.BytesIO()
            pil.save(buffer, format="JPEG", quality=int(rng.integers(60, 96)))
            pil = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
        array = np.asarray(pil, dtype=np.uint8)
        if rng.random() < 0.5:
            array = array[:, ::-1]
        if array.shape[0] != self.size or array.shape[1] != self.size:
            # Rare (5 % of wild-train is smaller than 256 px): reflect-pad to batch shape.
            pad_h, pad_w = self.size - array.shape[0], self.size - array.shape[1]
            array = np.pad(array, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
        return torch.from_numpy(array.copy()).permute(2, 0, 1)


def freeze_batchnorm(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def image_logits(model: Detector, images: list[torch.Tensor]) -> torch.Tensor:
    """Per-image logits: the mean over each image's native crops (the engine's rule)."""
    from common.detector.inference import DetectorEngine

    engine = DetectorEngine(model)
    rows = [engine.image_logits(Image.fromarray(im.permute(1, 2, 0).numpy())) for im in images]
    return torch.cat(rows) if rows else torch.empty(0, 2)


def image_probabilities(
    model: Detector, images: list[torch.Tensor], temperature: float = 1.0
) -> np.ndarray:
    """p(FAKE) per image from :func:`image_logits`."""
    return torch.softmax(image_logits(model, images) / temperature, dim=1)[:, 1].numpy()


def load_cifake(
    root: Path, limit: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, list[Sample]]:
    """The CIFAKE training side (same stratified 80/20 split as `aigi train`), ≤ limit."""
    train, val = stratified_split(scan(root), 0.2, seed=0)
    rng = np.random.default_rng(seed)
    picked = [train[i] for i in rng.permutation(len(train))[:limit]]
    images = torch.stack([decode_native(s.path) for s in picked])
    labels = torch.tensor([s.label for s in picked])
    return images, labels, val


def sampling_weights(
    model: Detector,
    samples: list[WildSample],
    images: list[torch.Tensor],
    options: CropTrainOptions,
) -> np.ndarray:
    """Class- and source-balanced weights, content-balanced on top when asked."""
    weights = balanced_weights(samples)
    if options.content_balance <= 0:
        return weights
    from common.detector.content_balance import (
        effective_size,
        pooled_features,
        propensity_weights,
        reweighted,
    )

    labels = np.array([s.label for s in samples])
    features = pooled_features(model.backbone, images, model.config.preprocessing)
    content = propensity_weights(features, labels, options.content_balance, seed=options.seed)
    weights = reweighted(weights, content, labels)
    log.info(
        "content-balanced sampling (power %.2f): effective images REAL %.0f, FAKE %.0f",
        options.content_balance,
        effective_size(weights[labels == 0]),
        effective_size(weights[labels == 1]),
    )
    return weights


def train_wild(options: CropTrainOptions) -> CropTrainResult:
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    samples = read_manifest(options.wild)
    train_s, val_s = split_by_group(samples, options.val_fraction, options.seed)
    excluded = set(options.exclude_groups)
    train_s = [s for s in train_s if s.group not in excluded]
    val_s = [s for s in val_s if s.group not in excluded]
    log.info(
        "wild: %d train, %d validation images (excluded %s)", len(train_s), len(val_s), excluded
    )
    train_images = [decode_native(s.path) for s in train_s]
    val_images = [decode_native(s.path) for s in val_s]
    val_y = np.array([s.label for s in val_s])
    cifake_x = cifake_y = None
    if options.cifake is not None:
        cifake_x, cifake_y, _ = load_cifake(options.cifake, options.cifake_max, options.seed)

    config = build_wild_config(options)
    model = Detector(config)
    if options.init is not None:
        from common.detector.checkpoint import load_checkpoint

        model.load_state_dict(load_checkpoint(options.init).state_dict())
    elif options.imagenet and not options.tiny:
        from common.detector.efficientnet import EfficientNetLiteBackbone, load_imagenet_weights

        assert isinstance(model.backbone, EfficientNetLiteBackbone)
        load_imagenet_weights(model.backbone, options.variant)
    pre = config.preprocessing
    weights = sampling_weights(model, train_s, train_images, options)
    head_params = list(model.head.parameters())
    head_ids = {id(p) for p in head_params}
    body_params = [p for p in model.parameters() if id(p) not in head_ids]
    optimizer = torch.optim.AdamW(
        [{"params": body_params, "lr": options.lr}, {"params": head_params, "lr": options.lr * 5}],
        weight_decay=options.weight_decay,
    )
    base_lrs = [options.lr, options.lr * 5]
    loss_fn = nn.CrossEntropyLoss()
    sampler = CropSampler(options.crop, rng, options.rescale_range, options.rescale_p)
    best_auc, best_step = -1.0, 0
    history: list[dict[str, Any]] = []
    started = time.perf_counter()
    running = 0.0
    for step in range(1, options.steps + 1):
        scale = (
            min(1.0, step / max(1, options.warmup))
            * 0.5
            * (1 + math.cos(math.pi * step / options.steps))
        )
        for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base * scale
        model.train()
        freeze_batchnorm(model)
        if cifake_x is not None and cifake_y is not None and step % options.cifake_every == 0:
            idx = torch.from_numpy(rng.integers(0, len(cifake_x), options.cifake_batch))
            x = cifake_x[idx]
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            x[flip] = x[flip].flip(-1)
            y = cifake_y[idx]
        else:
            idx_np = rng.choice(len(train_s), size=options.batch_size, p=weights)
            x = torch.stack([sampler(train_images[i]) for i in idx_np])
            y = torch.tensor([train_s[i].label for i in idx_np])
        loss = loss_fn(model(normalize(x, pre)), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running = 0.98 * running + 0.02 * float(loss.item()) if step > 1 else float(loss.item())
        if step % options.eval_every == 0 or step == options.steps:
            model.eval()
            probs = image_probabilities(model, val_images)
            metrics = classification_metrics(val_y, probs)
            record = {
                "step": step,
                "loss": round(running, 4),
                "val_auc": metrics["roc_auc"],
                "val_accuracy": metrics["accuracy"],
                "seconds": round(time.perf_counter() - started, 1),
            }
            history.append(record)
            log.info("train-wild %s", json.dumps(record))
            write_history(out, history)
            auc = float(metrics["roc_auc"] or 0.0)
            if auc > best_auc:
                best_auc, best_step = auc, step
                save_checkpoint(model, out, config)
    return finalize_wild(out, options, val_images, val_y, val_s, history, best_step, started)


def finalize_wild(
    out: Path,
    options: CropTrainOptions,
    val_images: list[torch.Tensor],
    val_y: np.ndarray,
    val_s: list[WildSample],
    history: list[dict[str, Any]],
    best_step: int,
    started: float,
) -> CropTrainResult:
    """Reload the best checkpoint, fit its temperature on validation, record the run."""
    from common.detector.checkpoint import load_checkpoint

    best = load_checkpoint(out)
    logits = image_logits(best, val_images)
    temperature, metrics = calibrated_metrics(logits, torch.from_numpy(val_y))
    metrics["split"] = "wild-train validation (grouped by source)"
    training = options_record(options, exclude=("out", "extra"))
    training.update({"best_step": best_step, "history": history, "recipe": "train-wild"})
    final = best.config.model_copy(
        update={
            "calibration": Calibration(temperature=temperature),
            "metrics": metrics,
            "training": training,
            "data": {"validation_files": len(val_s), "groups": sorted({s.group for s in val_s})},
        }
    )
    save_checkpoint(best, out, final)
    return CropTrainResult(out, metrics, options.steps, time.perf_counter() - started)
