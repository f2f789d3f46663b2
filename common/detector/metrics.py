"""Classification metrics (no scikit-learn needed) and their plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from common.detector.calibration import expected_calibration_error


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
