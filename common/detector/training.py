"""`aigi train`: the report's recipe, made resumable and calibrated.

Stratified 80/20 split (fixed seed), RandomResizedCrop + horizontal flip, Adam
(lr 1e-4), batch 8, cross-entropy, early stopping on validation accuracy with a
patience, the best checkpoint kept, mixed precision where the hardware has it. After
training, a temperature is fitted on the validation split so probabilities mean what
they say. For ``clip-vit`` with ``probe=True`` the backbone is frozen, its features
are computed once and cached on disk, and only the head trains (UniversalFakeDetect).
What trains on which data is :mod:`common.detector.training_setup`; the epochs and the
state that resumes them are :mod:`common.detector.training_loop`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from common.detector.checkpoint import save_checkpoint
from common.detector.config import (
    CLIP_MEAN,
    CLIP_STD,
    Calibration,
    ClipBackboneConfig,
    CompactBackboneConfig,
    DetectorConfig,
    HeadConfig,
    Preprocessing,
)
from common.detector.metrics import plot_history
from common.detector.model import Detector, count_parameters
from common.detector.training_loop import (
    Optimisation,
    Progress,
    evaluate_logits,
    load_progress,
    make_loader,
    save_progress,
    train_one_epoch,
    validate,
)
from common.detector.training_record import (
    calibrated_metrics,
    options_record,
    write_history,
)
from common.detector.training_setup import (
    decode_split,
    describe_data,
    full_setup,
    probe_setup,
    split_samples,
)

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16"]
STATE_FILE = "train_state.pt"
#: Options the checkpoint's ``training`` record leaves out (where, not how, it trained).
UNRECORDED_OPTIONS = ("data", "out", "show_progress", "vision_config", "feature_cache")


@dataclass
class TrainOptions:
    data: Path
    out: Path
    backbone: Literal["compact", "clip-vit"] = "compact"
    head: Literal["linear", "mlp"] = "linear"
    pretrained: str | None = None
    revision: str | None = None
    probe: bool = False
    vision_config: dict[str, Any] | None = None
    input_size: int | None = None
    widths: tuple[int, ...] = (32, 64, 128)
    blocks: tuple[int, ...] = (2, 2, 2)
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine"] = "constant"
    patience: int = 5
    seed: int = 0
    val_fraction: float = 0.2
    crop: Literal["resized", "pad"] = "resized"
    crop_scale: tuple[float, float] = (0.6, 1.0)
    jpeg: bool = False
    blur: bool = False
    rescale: bool = False
    precision: Precision = "auto"
    device: str | None = None
    resume: bool = False
    feature_cache: Path | None = None
    model_id: str | None = None
    max_samples: int | None = None
    show_progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    checkpoint: Path
    best_val_accuracy: float
    epochs_run: int
    temperature: float
    metrics: dict[str, Any]


def pick_device(requested: str | None) -> str:
    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def autocast_dtype(precision: Precision, device: str) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    return torch.bfloat16 if device.startswith("cuda") else None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_config(options: TrainOptions) -> DetectorConfig:
    head = HeadConfig(kind=options.head)
    if options.backbone == "compact":
        backbone: CompactBackboneConfig | ClipBackboneConfig = CompactBackboneConfig(
            widths=options.widths, blocks=options.blocks
        )
        pre = Preprocessing(input_size=options.input_size or 32)
    else:
        vision_config = options.vision_config
        in_checkpoint = not options.probe or options.pretrained is None
        if vision_config is None and options.pretrained is not None:
            from transformers import CLIPVisionConfig

            vision_config = CLIPVisionConfig.from_pretrained(
                options.pretrained, revision=options.revision or "main"
            ).to_dict()
        if vision_config is None:
            raise ValueError("clip-vit needs --pretrained (a Hub id or a local folder)")
        image_size = int(vision_config.get("image_size", 224))
        backbone = ClipBackboneConfig(
            pretrained=options.pretrained,
            revision=options.revision,
            vision_config=_json_safe(vision_config),
            weights_in_checkpoint=in_checkpoint,
            frozen=options.probe,
        )
        pre = Preprocessing(
            input_size=options.input_size or image_size,
            mean=CLIP_MEAN,
            std=CLIP_STD,
            resize="center-crop",
        )
    model_id = options.model_id or f"{options.backbone}-{options.head}-{time.strftime('%Y%m%d')}"
    return DetectorConfig(model_id=model_id, backbone=backbone, head=head, preprocessing=pre)


def _json_safe(value: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(value, default=str))


def build_model(config: DetectorConfig, options: TrainOptions) -> Detector:
    backbone_cfg = config.backbone
    if isinstance(backbone_cfg, ClipBackboneConfig) and options.pretrained is not None:
        from common.detector.model import build_clip

        source = backbone_cfg.model_copy(update={"weights_in_checkpoint": False})
        return Detector(config, backbone=build_clip(source))
    return Detector(config)


def build_optimisation(
    trainable: nn.Module,
    options: TrainOptions,
    train_size: int,
    device: str,
    dtype: torch.dtype | None,
) -> Optimisation:
    """Adam on the trainable parameters; ``cosine`` is a one-cycle schedule over every
    batch of the run (15 % of it warming up), stepped per batch."""
    params = [p for p in trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=options.lr, weight_decay=options.weight_decay)
    steps_per_epoch = math.ceil(train_size / options.batch_size)
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    if options.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=options.lr,
            total_steps=options.epochs * steps_per_epoch,
            pct_start=0.15,
        )
    scaler = torch.amp.GradScaler(enabled=dtype == torch.float16 and device.startswith("cuda"))
    return Optimisation(optimizer, scheduler, scaler)


def record_epoch(out: Path, history: list[dict[str, Any]], record: dict[str, Any]) -> None:
    """Append one epoch's record; rewrite the history file and its plot."""
    history.append(record)
    log.info("epoch %d: %s", record["epoch"], json.dumps(record))
    write_history(out, history)
    plot_history(history, out / "training_curve.png")


def train(options: TrainOptions) -> TrainResult:
    seed_everything(options.seed)
    device = pick_device(options.device)
    dtype = autocast_dtype(options.precision, device)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)

    train_samples, val_samples = split_samples(options)
    config = build_config(options)
    split = decode_split(train_samples, val_samples, config.preprocessing, options.show_progress)
    model = build_model(config, options).to(device)
    if isinstance(config.backbone, CompactBackboneConfig):
        model = model.to(memory_format=torch.channels_last)
    data_summary = describe_data(options, split)
    training_summary = options_record(options, exclude=UNRECORDED_OPTIONS)
    if options.probe:
        setup = probe_setup(model, options, split, data_summary, out, device, dtype)
    else:
        setup = full_setup(model, options, split, device, dtype)
    optimisation = build_optimisation(setup.trainable, options, len(setup.train_set), device, dtype)

    state_path = out / STATE_FILE
    progress = Progress()
    if options.resume and state_path.is_file():
        progress = load_progress(state_path, model, optimisation)
    loader = make_loader(setup.train_set, options.batch_size, options.seed + progress.next_epoch)
    loss_fn = nn.CrossEntropyLoss()
    best_config = config.model_copy(update={"data": data_summary, "training": training_summary})

    for epoch in range(progress.next_epoch, options.epochs):
        started = time.perf_counter()
        desc = f"epoch {epoch + 1}/{options.epochs}"
        train_loss, train_acc = train_one_epoch(
            setup, loader, optimisation, loss_fn, desc, options.show_progress
        )
        val_loss, val_acc = validate(setup, split.val_y, loss_fn)
        record = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": optimisation.lr,
            "seconds": round(time.perf_counter() - started, 1),
        }
        record_epoch(out, progress.history, record)
        if progress.update(val_acc):
            save_checkpoint(model, out, best_config)
        save_progress(state_path, model, optimisation, epoch, progress)
        if progress.bad_epochs >= options.patience:
            log.info("early stop: no improvement for %d epochs", options.patience)
            break

    return finalize(
        out, split.val_x, split.val_y, device, progress.history, data_summary, training_summary
    )


def finalize(
    out: Path,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    device: str,
    history: list[dict[str, Any]],
    data_summary: dict[str, Any],
    training_summary: dict[str, Any],
) -> TrainResult:
    """Reload the best checkpoint, fit the temperature, store validation metrics."""
    from common.detector.checkpoint import load_checkpoint

    best = load_checkpoint(out).to(device)
    config = best.config
    logits = evaluate_logits(best, val_x, config.preprocessing, device, None)
    temperature, metrics = calibrated_metrics(logits, val_y)
    metrics["params"] = count_parameters(best)
    metrics["split"] = "validation"
    calibration = Calibration(
        temperature=temperature,
        tier_thresholds=config.calibration.tier_thresholds,
        decision_threshold=config.calibration.decision_threshold,
    )
    training_summary = {
        **training_summary,
        "epochs_run": len(history),
        "best_epoch": int(np.argmax([h["val_accuracy"] for h in history])) + 1,
    }
    final = config.model_copy(
        update={
            "calibration": calibration,
            "metrics": metrics,
            "data": data_summary,
            "training": training_summary,
        }
    )
    save_checkpoint(best, out, final)
    return TrainResult(out, float(metrics["accuracy"]), len(history), temperature, metrics)
