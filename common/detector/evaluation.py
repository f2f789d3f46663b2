"""`aigi evaluate`: the report's metrics for a checkpoint on a REAL/FAKE folder."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from common.detector.checkpoint import load_checkpoint
from common.detector.config import verdict_tier
from common.detector.dataset import Sample, preload, scan
from common.detector.inference import DetectorEngine
from common.detector.metrics import (
    classification_metrics,
    plot_confusion,
    plot_risk_coverage,
    plot_roc,
    selective_metrics,
)
from common.detector.model import Detector, count_parameters
from common.detector.preprocess import image_size, load_image, normalize

REPORT_KEYS = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "ece",
    "coverage",
    "selective_accuracy",
    "confidently_wrong",
    "latency_ms_per_image",
    "params",
    "size_bytes",
    "n",
)


@dataclass
class Evaluation:
    report: dict[str, Any]
    confusion_matrix: list[list[int]]
    probabilities: np.ndarray
    labels: np.ndarray
    tiers: list[str]
    ood_scores: list[float | None]


def checkpoint_size(folder: Path) -> int:
    return sum(
        p.stat().st_size
        for p in Path(folder).iterdir()
        if p.is_file() and p.name in ("config.json", "model.safetensors", "ood.safetensors")
    )


def probabilities(
    model: Detector,
    images: torch.Tensor,
    batch_size: int = 256,
    temperatures: torch.Tensor | None = None,
) -> np.ndarray:
    """p(FAKE) of preloaded thumbnails; ``temperatures`` (one per image, from the
    original sizes: :meth:`DetectorConfig.temperature_for`) default to ``temperature``."""
    engine = DetectorEngine(model)
    pre = model.config.preprocessing
    if temperatures is None:
        temperatures = torch.full((len(images),), model.config.calibration.temperature)
    chunks = []
    for start in range(0, len(images), batch_size):
        logits = engine.logits(normalize(images[start : start + batch_size], pre))
        scale = temperatures[start : start + batch_size].view(-1, 1)
        chunks.append(torch.softmax(logits / scale, 1)[:, 1])
    return torch.cat(chunks).numpy() if chunks else np.zeros(0)


def ood_scores(model: Detector, images: torch.Tensor, batch_size: int = 256) -> list[float | None]:
    """The OOD score of each preloaded thumbnail (None without OOD statistics)."""
    engine = DetectorEngine(model)
    if engine.ood is None:
        return [None] * len(images)
    pre = model.config.preprocessing
    out: list[float | None] = []
    for start in range(0, len(images), batch_size):
        features, _ = engine.features_and_logits(normalize(images[start : start + batch_size], pre))
        raw = engine.ood.raw_scores(features[engine.ood.features])
        out.extend((raw / engine.ood.config.threshold).tolist())
    return out


def single_image_latency_ms(model: Detector, images: torch.Tensor, repeats: int = 50) -> float:
    """Median wall time of one image through preprocessing-free inference (batch of 1)."""
    engine = DetectorEngine(model)
    pre = model.config.preprocessing
    sample = images[: max(1, min(repeats, len(images)))]
    engine.logits(normalize(sample[:1], pre))  # warm-up
    times = []
    for image in sample:
        start = time.perf_counter()
        engine.logits(normalize(image.unsqueeze(0), pre))
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times))


def native_probabilities(
    model: Detector, samples: Sequence[Sample], show_progress: bool = False
) -> tuple[np.ndarray, torch.Tensor, float, list[float | None]]:
    """p(FAKE), labels, the median per-image latency (decoded image → prediction) and
    the OOD scores."""
    engine = DetectorEngine(model)
    probs, times, scores = [], [], []
    for sample in tqdm(samples, desc="scoring", unit="img", disable=not show_progress):
        prediction, elapsed = engine.predict_one(load_image(sample.path))
        probs.append(prediction.probability)
        scores.append(prediction.ood_score)
        times.append(elapsed)
    labels = torch.tensor([s.label for s in samples], dtype=torch.long)
    return np.array(probs), labels, float(np.median(times)) if times else 0.0, scores


def evaluate(
    checkpoint: Path,
    data: Path,
    plots_dir: Path | None = None,
    show_progress: bool = True,
    max_samples: int | None = None,
) -> Evaluation:
    model = load_checkpoint(checkpoint)
    samples = scan(Path(data))
    if max_samples:
        samples = samples[:: max(1, len(samples) // max_samples)][:max_samples]
    if model.config.preprocessing.resize == "native-crops":
        # Each image at its own size, scored on its native crops like the worker does.
        probs, labels, latency, scores = native_probabilities(model, samples, show_progress)
    else:
        with tqdm(
            total=len(samples), desc="decoding", unit="img", disable=not show_progress
        ) as bar:
            images, labels = preload(samples, model.config.preprocessing, progress=bar.update)
        config = model.config
        temperatures = torch.tensor([config.temperature_for(*image_size(s.path)) for s in samples])
        probs = probabilities(model, images, temperatures=temperatures)
        scores = ood_scores(model, images)
        latency = single_image_latency_ms(model, images)
    metrics = classification_metrics(labels.numpy(), probs)
    calibration = model.config.calibration
    tiers = [verdict_tier(float(p), calibration, o)[0] for p, o in zip(probs, scores, strict=True)]
    selective = selective_metrics(labels.numpy(), probs, tiers)
    report = {
        "accuracy": metrics["accuracy"],
        "precision": metrics["precision"],
        "recall": metrics["recall"],
        "f1": metrics["f1"],
        "roc_auc": metrics["roc_auc"],
        "ece": metrics["ece"],
        "coverage": selective["coverage"],
        "selective_accuracy": selective["selective_accuracy"],
        "confidently_wrong": selective["confidently_wrong"],
        "latency_ms_per_image": latency,
        "params": count_parameters(model),
        "size_bytes": checkpoint_size(Path(checkpoint)),
        "n": metrics["n"],
    }
    matrix = metrics["confusion_matrix"]["rows_true_cols_pred"]
    if plots_dir is not None:
        plots_dir.mkdir(parents=True, exist_ok=True)
        plot_roc(labels.numpy(), probs, plots_dir / "roc.png")
        plot_confusion(matrix, plots_dir / "confusion_matrix.png")
        plot_risk_coverage(
            labels.numpy(),
            probs,
            scores,
            (selective["coverage"], selective["selective_accuracy"]),
            plots_dir / "risk_coverage.png",
        )
    return Evaluation(report, matrix, probs, labels.numpy(), tiers, scores)
