"""`aigi train`: the report's recipe, made resumable and calibrated.

Stratified 80/20 split (fixed seed), RandomResizedCrop + horizontal flip, Adam
(lr 1e-4), batch 8, cross-entropy, early stopping on validation accuracy with a
patience, the best checkpoint kept, mixed precision where the hardware has it. After
training, a temperature is fitted on the validation split so probabilities mean what
they say. For ``clip-vit`` with ``probe=True`` the backbone is frozen, its features
are computed once and cached on disk, and only the head trains (UniversalFakeDetect).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.detector.calibration import fit_temperature
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
from common.detector.dataset import (
    TensorImageDataset,
    preload,
    scan,
    stratified_split,
    summarize,
)
from common.detector.metrics import classification_metrics, plot_history
from common.detector.model import Detector, count_parameters
from common.detector.preprocess import normalize, train_augmentation

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16"]
STATE_FILE = "train_state.pt"
HISTORY_FILE = "history.json"


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


def evaluate_logits(
    model: nn.Module,
    images: torch.Tensor,
    pre: Preprocessing,
    device: str,
    dtype: torch.dtype | None,
    batch_size: int = 256,
) -> torch.Tensor:
    model.eval()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = normalize(images[start : start + batch_size], pre).to(device)
            with torch.autocast(
                device.split(":")[0], dtype=dtype or torch.float32, enabled=dtype is not None
            ):
                chunks.append(model(x).float().cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, 2)


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


def train(options: TrainOptions) -> TrainResult:
    seed_everything(options.seed)
    device = pick_device(options.device)
    dtype = autocast_dtype(options.precision, device)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)

    samples = scan(Path(options.data))
    if options.max_samples:
        rng = np.random.default_rng(options.seed)
        samples = [samples[i] for i in sorted(rng.permutation(len(samples))[: options.max_samples])]
    train_samples, val_samples = stratified_split(samples, options.val_fraction, options.seed)
    if not val_samples:
        raise ValueError("the validation split is empty; add more images")
    config = build_config(options)
    pre = config.preprocessing
    log.info("data: %d train, %d validation images", len(train_samples), len(val_samples))

    with tqdm(
        total=len(samples), desc="decoding", unit="img", disable=not options.show_progress
    ) as bar:
        train_x, train_y = preload(train_samples, pre, progress=bar.update)
        val_x, val_y = preload(val_samples, pre, progress=bar.update)

    model = build_model(config, options).to(device)
    if isinstance(config.backbone, CompactBackboneConfig):
        model = model.to(memory_format=torch.channels_last)

    data_summary = {
        "source": str(options.data),
        "train": summarize(train_samples),
        "validation": summarize(val_samples),
        "split": {"val_fraction": options.val_fraction, "seed": options.seed, "stratified": True},
    }
    training_summary = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in asdict(options).items()
        if k not in ("data", "out", "show_progress", "vision_config", "feature_cache")
    }

    if options.probe:
        if not isinstance(config.backbone, ClipBackboneConfig):
            raise ValueError("--probe needs --backbone clip-vit")
        cache_dir = options.feature_cache or out / "feature-cache"
        train_feats = cached_features(
            model,
            train_x,
            cache_dir / f"{_cache_key(config, data_summary['train'])}.pt",  # type: ignore[arg-type]
            pre,
            device,
            dtype,
        )
        val_feats = cached_features(
            model,
            val_x,
            cache_dir / f"{_cache_key(config, data_summary['validation'])}.pt",  # type: ignore[arg-type]
            pre,
            device,
            dtype,
        )
        trainable: nn.Module = model.head
        train_set: TensorImageDataset = TensorImageDataset(train_feats, train_y)
        forward: nn.Module = model.head
        val_inputs, val_pre = val_feats, None
    else:
        trainable = model
        augment = train_augmentation(
            pre.input_size,
            options.crop_scale,
            options.jpeg,
            options.blur,
            options.rescale,
            options.crop,
        )
        train_set = TensorImageDataset(train_x, train_y, transform=augment)
        forward = model
        val_inputs, val_pre = val_x, pre

    params = [p for p in trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=options.lr, weight_decay=options.weight_decay)
    steps_per_epoch = math.ceil(len(train_set) / options.batch_size)
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    if options.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=options.lr,
            total_steps=options.epochs * steps_per_epoch,
            pct_start=0.15,
        )
    scaler = torch.amp.GradScaler(enabled=dtype == torch.float16 and device.startswith("cuda"))

    state_path = out / STATE_FILE
    history: list[dict[str, Any]] = []
    start_epoch, best_acc, bad_epochs = 0, -1.0, 0
    if options.resume and state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_acc, bad_epochs = state["epoch"] + 1, state["best_acc"], state["bad"]
        history = state["history"]
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed after epoch %d (best validation accuracy %.4f)", start_epoch, best_acc)

    generator = torch.Generator().manual_seed(options.seed + start_epoch)
    loader = DataLoader(
        train_set,
        batch_size=options.batch_size,
        shuffle=True,
        generator=generator,
        drop_last=len(train_set) > options.batch_size,
    )
    loss_fn = nn.CrossEntropyLoss()
    device_type = device.split(":")[0]

    for epoch in range(start_epoch, options.epochs):
        trainable.train()
        if options.probe:
            model.backbone.eval()
        started = time.perf_counter()
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{options.epochs}",
            unit="batch",
            disable=not options.show_progress,
            leave=False,
        )
        for inputs, targets in bar:
            x = inputs if options.probe else normalize(inputs, pre)
            x, targets = x.to(device), targets.to(device)
            if not options.probe and isinstance(config.backbone, CompactBackboneConfig):
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(
                device_type, dtype=dtype or torch.float32, enabled=dtype is not None
            ):
                logits = forward(x)
                loss = loss_fn(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            total_loss += float(loss.item()) * len(targets)
            correct += int((logits.argmax(1) == targets).sum().item())
            seen += len(targets)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
        val_logits = _val_logits(forward, val_inputs, val_pre, device, dtype)
        val_loss = float(loss_fn(val_logits, val_y).item())
        val_acc = float((val_logits.argmax(1) == val_y).float().mean().item())
        record = {
            "epoch": epoch + 1,
            "train_loss": total_loss / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - started, 1),
        }
        history.append(record)
        log.info("epoch %d: %s", epoch + 1, json.dumps(record))
        (out / HISTORY_FILE).write_text(json.dumps(history, indent=2) + "\n")
        plot_history(history, out / "training_curve.png")
        if val_acc > best_acc:
            best_acc, bad_epochs = val_acc, 0
            save_checkpoint(
                model,
                out,
                config.model_copy(update={"data": data_summary, "training": training_summary}),
            )
        else:
            bad_epochs += 1
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler else None,
                "epoch": epoch,
                "best_acc": best_acc,
                "bad": bad_epochs,
                "history": history,
                "torch_rng": torch.get_rng_state(),
            },
            state_path,
        )
        if bad_epochs >= options.patience:
            log.info("early stop: no improvement for %d epochs", options.patience)
            break

    return finalize(out, val_x, val_y, device, history, data_summary, training_summary)


def _val_logits(
    forward: nn.Module,
    inputs: torch.Tensor,
    pre: Preprocessing | None,
    device: str,
    dtype: torch.dtype | None,
) -> torch.Tensor:
    if pre is None:  # cached features
        forward.eval()
        with torch.inference_mode():
            return forward(inputs.to(device)).float().cpu()
    return evaluate_logits(forward, inputs, pre, device, dtype)


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
    temperature = fit_temperature(logits, val_y)
    probs = torch.softmax(logits / temperature, dim=1)[:, 1].numpy()
    metrics = classification_metrics(val_y.numpy(), probs)
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
