"""`python -m bench gradcam`: Grad-CAM cost against one forward pass, per model.

Measured on the shipped detector and on a full-size ViT-B/16 CLIP configuration (random
weights: timing does not depend on them), in the same run and process. The last output
line is one JSON object: ``{"<model>": {"forward_ms", "gradcam_ms", "ratio"}, ...}``.
"""

from __future__ import annotations

import copy
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


def interleaved_medians(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 2,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, float]:
    """Median ms per call of each function, timed in alternation (one call of each per
    round): this VM's speed drifts within seconds, and timing one function's calls
    after the other's put that drift into their ratio."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: float(np.median(values)) for name, values in times.items()}


def bench_model(model: Detector, batch_size: int = 1, repeats: int = 10) -> dict[str, Any]:
    size = model.config.preprocessing.input_size
    batch = torch.randn(batch_size, 3, size, size)
    model.eval()
    plain = copy.deepcopy(model)  # the forward's own copy: no CAM hooks on it

    def forward() -> None:
        with torch.inference_mode():
            plain(batch)

    with DetectorCAM(model) as cam:
        medians = interleaved_medians({"forward": forward, "gradcam": lambda: cam(batch)}, repeats)
    forward_ms, gradcam_ms = medians["forward"], medians["gradcam"]
    with DetectorCAM(model, truncated=False) as full:  # flips the weights' flags: not interleaved
        full_ms = interleaved_medians({"full": lambda: full(batch)}, max(3, repeats // 2))["full"]
    return {
        "forward_ms": round(forward_ms, 3),
        "gradcam_ms": round(gradcam_ms, 3),
        "ratio": round(gradcam_ms / forward_ms, 3),
        "full_backward_gradcam_ms": round(full_ms, 3),
        "full_backward_ratio": round(full_ms / forward_ms, 3),
        "batch_size": batch_size,
    }
