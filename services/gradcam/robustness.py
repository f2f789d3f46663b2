"""Robustness of explanations (the report's section 3.2): FGSM, SSIM, NISSIM, MOD, VID.

For each image: FGSM perturbations ``x + eps * sign(grad_x loss)`` at several epsilons
(in 0..1 pixel units, against the predicted class), Grad-CAM heatmaps of the clean and
perturbed images, SSIM between them, NISSIM = (1 - SSIM) / 2; per image, MOD is the
mean NISSIM over the epsilons and VID its standard deviation (the report's formula,
population standard deviation). The verdict flip rate is reported beside them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from common.detector.model import Detector
from common.detector.preprocess import denormalize, normalize, to_uint8_tensor
from services.gradcam.cam import DetectorCAM


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Structural similarity of two 2-D maps (Gaussian window 11, sigma 1.5)."""
    x = torch.as_tensor(np.asarray(a, dtype=np.float64))[None, None]
    y = torch.as_tensor(np.asarray(b, dtype=np.float64))[None, None]
    size = min(11, x.shape[-1], x.shape[-2])
    size = size if size % 2 == 1 else size - 1
    window = _gaussian_window(max(size, 1), 1.5)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    sigma_x = F.conv2d(x * x, window) - mu_x**2
    sigma_y = F.conv2d(y * y, window) - mu_y**2
    sigma_xy = F.conv2d(x * y, window) - mu_x * mu_y
    value = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2)
    )
    return float(value.mean())


def nissim(a: np.ndarray, b: np.ndarray) -> float:
    return (1.0 - ssim(a, b)) / 2.0


def mod_vid(nissims: Sequence[float]) -> tuple[float, float]:
    values = np.asarray(nissims, dtype=np.float64)
    mod = float(values.mean()) if len(values) else 0.0
    vid = float(np.sqrt(((values - mod) ** 2).mean())) if len(values) else 0.0
    return mod, vid


def fgsm(model: Detector, batch: torch.Tensor, eps: float, target: torch.Tensor) -> torch.Tensor:
    """FGSM in 0..1 pixel space: x + eps * sign(grad), clamped to valid pixels."""
    pre = model.config.preprocessing
    pixels = denormalize(batch, pre).clamp(0, 1).detach()
    if eps == 0:
        return batch.clone()
    pixels.requires_grad_(True)
    mean = torch.tensor(pre.mean).view(-1, 1, 1)
    std = torch.tensor(pre.std).view(-1, 1, 1)
    with torch.enable_grad():
        loss = F.cross_entropy(model((pixels - mean) / std), target)
        (grad,) = torch.autograd.grad(loss, pixels)
    adversarial = (pixels + eps * grad.sign()).clamp(0, 1).detach()
    return (adversarial - mean) / std


@dataclass
class ImageRobustness:
    path: str
    label: int
    nissim: dict[str, float]
    flipped: dict[str, bool]
    mod: float
    vid: float


def image_robustness(
    model: Detector, cam: DetectorCAM, image: Image.Image, epsilons: Sequence[float], path: str = ""
) -> ImageRobustness:
    pre = model.config.preprocessing
    batch = normalize(to_uint8_tensor(image, pre).unsqueeze(0), pre)
    clean_maps, logits = cam(batch)
    label = int(logits.argmax(1).item())
    target = torch.tensor([label])
    scores: dict[str, float] = {}
    flips: dict[str, bool] = {}
    for eps in epsilons:
        perturbed = fgsm(model, batch, eps, target)
        maps, adv_logits = cam(perturbed, [label])
        scores[str(eps)] = nissim(clean_maps[0], maps[0])
        flips[str(eps)] = int(adv_logits.argmax(1).item()) != label
    mod, vid = mod_vid(list(scores.values()))
    return ImageRobustness(path, label, scores, flips, mod, vid)


def summarize(results: Sequence[ImageRobustness], epsilons: Sequence[float]) -> dict[str, Any]:
    per_eps = {
        str(eps): {
            "nissim_mean": float(np.mean([r.nissim[str(eps)] for r in results])),
            "nissim_std": float(np.std([r.nissim[str(eps)] for r in results])),
            "flip_rate": float(np.mean([r.flipped[str(eps)] for r in results])),
        }
        for eps in epsilons
    }
    return {
        "n": len(results),
        "epsilons": list(epsilons),
        "MOD": float(np.mean([r.mod for r in results])) if results else 0.0,
        "VID": float(np.mean([r.vid for r in results])) if results else 0.0,
        "flip_rate": float(np.mean([any(r.flipped.values()) for r in results])) if results else 0.0,
        "per_epsilon": per_eps,
        "images": [r.__dict__ for r in results],
    }


def plot(summary: dict[str, Any], path: Path) -> None:
    from common.detector.metrics import _pyplot

    plt = _pyplot()
    eps = summary["epsilons"]
    means = [summary["per_epsilon"][str(e)]["nissim_mean"] for e in eps]
    stds = [summary["per_epsilon"][str(e)]["nissim_std"] for e in eps]
    flips = [summary["per_epsilon"][str(e)]["flip_rate"] for e in eps]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.errorbar(eps, means, yerr=stds, marker="o", capsize=3, label="NISSIM (mean ± sd)")
    ax.plot(eps, flips, marker="s", linestyle="--", label="verdict flip rate")
    ax.set_xscale("log")
    ax.set_xlabel("FGSM epsilon (pixel units, 0..1)")
    ax.set_title(f"MOD {summary['MOD']:.4f}  VID {summary['VID']:.4f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(summary: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
