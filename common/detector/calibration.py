"""Temperature scaling (Guo et al., 2017) and expected calibration error."""

from __future__ import annotations

import itertools

import numpy as np
import torch


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) on held-out data."""
    logits = logits.detach().double()
    labels = labels.detach().long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.exp().item())
    if not np.isfinite(temperature) or temperature <= 0:
        return 1.0
    return float(np.clip(temperature, 0.05, 20.0))


def expected_calibration_error(probs_fake: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE over the confidence of the predicted class, ``bins`` equal-width bins."""
    probs_fake = np.asarray(probs_fake, dtype=np.float64)
    labels = np.asarray(labels)
    predicted = (probs_fake >= 0.5).astype(int)
    confidence = np.where(predicted == 1, probs_fake, 1.0 - probs_fake)
    correct = (predicted == labels).astype(np.float64)
    edges = np.linspace(0.5, 1.0, bins + 1)
    ece = 0.0
    n = len(labels)
    if n == 0:
        return 0.0
    for lo, hi in itertools.pairwise(edges):
        mask = (
            (confidence > lo) & (confidence <= hi)
            if lo > 0.5
            else (confidence >= lo) & (confidence <= hi)
        )
        if mask.any():
            ece += mask.sum() / n * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)
