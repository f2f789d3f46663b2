"""`aigi bench gradcam`: Grad-CAM cost against one forward pass, per model.

Measured on the shipped detector and on a full-size ViT-B/16 CLIP configuration (random
weights: timing does not depend on them), in the same run and process. The last output
line is one JSON object: ``{"<model>": {"forward_ms", "gradcam_ms", "ratio"}, ...}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from common.detector.config import (
    CLIP_MEAN,
    CLIP_STD,
    ClipBackboneConfig,
    DetectorConfig,
    Preprocessing,
)
from common.detector.model import Detector
from services.gradcam.cam import DetectorCAM

VIT_B16 = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 16,
    "projection_dim": 512,
}


def vit_b16_detector() -> Detector:
    config = DetectorConfig(
        model_id="clip-vit-b16-random",
        backbone=ClipBackboneConfig(vision_config=VIT_B16, weights_in_checkpoint=True),
        preprocessing=Preprocessing(
            input_size=224, mean=CLIP_MEAN, std=CLIP_STD, resize="center-crop"
        ),
    )
    torch.manual_seed(0)
    return Detector(config).eval()


def _median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times))


def bench_model(model: Detector, batch_size: int = 1, repeats: int = 10) -> dict[str, Any]:
    size = model.config.preprocessing.input_size
    batch = torch.randn(batch_size, 3, size, size)
    model.eval()

    def forward() -> None:
        with torch.inference_mode():
            model(batch)

    forward_ms = _median_ms(forward, repeats)
    with DetectorCAM(model) as cam:
        gradcam_ms = _median_ms(lambda: cam(batch), repeats)
    with DetectorCAM(model, truncated=False) as full:
        full_ms = _median_ms(lambda: full(batch), max(3, repeats // 2))
    return {
        "forward_ms": round(forward_ms, 3),
        "gradcam_ms": round(gradcam_ms, 3),
        "ratio": round(gradcam_ms / forward_ms, 3),
        "full_backward_gradcam_ms": round(full_ms, 3),
        "full_backward_ratio": round(full_ms / forward_ms, 3),
        "batch_size": batch_size,
    }
