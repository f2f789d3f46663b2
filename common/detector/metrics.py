"""Classification metrics (no scikit-learn needed) and their plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.detector.calibration import expected_calibration_error
from common.detector.config import UNCERTAIN


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="mergesort")
    labels = labels[order]
    scores = scores[order]
    distinct = np.where(np.diff(scores))[0]
    thresholds = np.r_[distinct, labels.size - 1]
    tps = np.cumsum(labels)[thresholds]
    fps = 1 + thresholds - tps
    positives, negatives = max(labels.sum(), 1), max(labels.size - labels.sum(), 1)
    return np.r_[0.0, fps / negatives], np.r_[0.0, tps / positives]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve; None when only one class is present."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.min(initial=0) == labels.max(initial=0) or len(np.unique(labels)) < 2:
        return None
    fpr, tpr = roc_curve(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def classification_metrics(labels: np.ndarray, probs_fake: np.ndarray) -> dict[str, Any]:
    """accuracy, precision/recall/F1 for FAKE (the positive class), ROC-AUC, ECE."""
    labels = np.asarray(labels).astype(int)
    probs_fake = np.asarray(probs_fake, dtype=np.float64)
    predicted = (probs_fake >= 0.5).astype(int)
    tp = int(((predicted == 1) & (labels == 1)).sum())
    tn = int(((predicted == 0) & (labels == 0)).sum())
    fp = int(((predicted == 1) & (labels == 0)).sum())
    fn = int(((predicted == 0) & (labels == 1)).sum())
    n = len(labels)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": roc_auc(labels, probs_fake),
        "ece": expected_calibration_error(probs_fake, labels),
        "confusion_matrix": {
            "labels": ["REAL", "FAKE"],
            "rows_true_cols_pred": [[tn, fp], [fn, tp]],
        },
        "n": n,
    }


def selective_metrics(
    labels: np.ndarray, probs_fake: np.ndarray, tiers: Sequence[str]
) -> dict[str, float]:
    """What the tiers let a platform act on.

    ``coverage``: share not ``uncertain``; ``selective_accuracy``: accuracy on those;
    ``confidently_wrong``: share of *all* images that are wrong and in a "mostly" tier
    (what an automated action would get wrong); ``ece`` over all images.
    """
    labels = np.asarray(labels).astype(int)
    probs_fake = np.asarray(probs_fake, dtype=np.float64)
    kept = np.array([t != UNCERTAIN for t in tiers], dtype=bool)
    correct = (probs_fake >= 0.5).astype(int) == labels
    mostly = np.array([str(t).startswith("mostly") for t in tiers], dtype=bool)
    n = len(labels)
    return {
        "coverage": float(kept.mean()) if n else 0.0,
        "selective_accuracy": float(correct[kept].mean()) if kept.any() else 0.0,
        "confidently_wrong": float((~correct & mostly).mean()) if n else 0.0,
        "ece": expected_calibration_error(probs_fake, labels),
    }


def risk_coverage(
    labels: np.ndarray, probs_fake: np.ndarray, ood_scores: Sequence[float | None] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, risk) when keeping the most confident images first.

    Confidence is |p - 0.5|; images the OOD test flags (score > 1) come last, as the
    tiers would set them aside first.
    """
    labels = np.asarray(labels).astype(int)
    probs_fake = np.asarray(probs_fake, dtype=np.float64)
    n = len(labels)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    flagged = np.zeros(n, dtype=bool)
    if ood_scores is not None:
        flagged = np.array([s is not None and s > 1.0 for s in ood_scores], dtype=bool)
    confidence = np.abs(probs_fake - 0.5) - flagged.astype(np.float64)
    order = np.argsort(-confidence, kind="mergesort")
    wrong = ((probs_fake >= 0.5).astype(int) != labels)[order]
    kept = np.arange(1, n + 1)
    return kept / n, np.cumsum(wrong) / kept


def plot_risk_coverage(
    labels: np.ndarray,
    probs_fake: np.ndarray,
    ood_scores: Sequence[float | None] | None,
    operating_point: tuple[float, float] | None,
    path: Path,
) -> None:
    plt = _pyplot()
    coverage, risk = risk_coverage(labels, probs_fake, ood_scores)
    fig, ax = plt.subplots(figsize=(4, 3.4), dpi=100)
    ax.plot(coverage, risk, label="most confident first")
    if operating_point is not None:
        cov, sel_acc = operating_point
        ax.plot([cov], [1.0 - sel_acc], "o", color="#d9a521", label="tiers (uncertain set aside)")
    ax.set_xlabel("coverage (share of images given a verdict)")
    ax.set_ylabel("risk (error rate on them)")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(labels: np.ndarray, probs_fake: np.ndarray, path: Path) -> None:
    plt = _pyplot()
    fpr, tpr = roc_curve(np.asarray(labels).astype(int), np.asarray(probs_fake, dtype=float))
    auc = roc_auc(labels, probs_fake)
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.plot(fpr, tpr, label=f"AUC = {auc:.4f}" if auc is not None else "AUC n/a")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
    ax.set_xlabel("false positive rate (REAL called FAKE)")
    ax.set_ylabel("true positive rate (FAKE caught)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_confusion(matrix: list[list[int]], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=100)
    ax.imshow(np.asarray(matrix), cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, str(matrix[i][j]), ha="center", va="center")
    ax.set_xticks([0, 1], ["REAL", "FAKE"])
    ax.set_yticks([0, 1], ["REAL", "FAKE"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_history(history: list[dict[str, Any]], path: Path) -> None:
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=100)
    left.plot(epochs, [h["train_loss"] for h in history], label="train")
    left.plot(epochs, [h["val_loss"] for h in history], label="validation")
    left.set_title("cross-entropy")
    left.legend()
    right.plot(epochs, [h["train_accuracy"] for h in history], label="train")
    right.plot(epochs, [h["val_accuracy"] for h in history], label="validation")
    right.set_title("accuracy")
    right.legend()
    for axis in (left, right):
        axis.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
