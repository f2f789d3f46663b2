"""``photo_12mp``: one 12-megapixel JPEG through the classify path and the Grad-CAM path.

What a platform uploading phone photos pays per job, for the shipped detector and for
``compact-cifake-v1`` beside it:

* ``classify_ms``: the classify worker's work on the bytes it receives — decode
  (:func:`common.images.decode_rgb`) and :meth:`DetectorEngine.predict` (native crops
  for a ``native-crops`` model, the thumbnail for the compact one). Target p50 ≤ 300 ms
  on 2 cores.
* ``forward_ms`` / ``gradcam_ms``: on the decoded image, the model's forward over what
  it scores against :class:`~services.gradcam.cam.DetectorCAM` on the same input
  (heatmap, stitched for crops); the ratio's target is ≤ 1.2.

The photo is synthetic (smooth gradients plus sensor-like noise, saved as JPEG q90) so
the benchmark needs no data; decode time depends on size and quality, not content.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.models import BenchModel
from common.detector.inference import DetectorEngine
from common.detector.preprocess import model_input
from common.images import decode_rgb
from services.gradcam.cam import DetectorCAM

TARGET_CLASSIFY_MS = 300.0
TARGET_GRADCAM_RATIO = 1.2


def synthetic_photo(width: int = 4000, height: int = 3000, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            128 + 100 * np.sin(x / 350.0),
            128 + 100 * np.cos(y / 270.0),
            128 + 60 * np.sin((x + y) / 500.0),
        ],
        axis=-1,
    )
    noisy = base + rng.normal(0, 6, base.shape).astype(np.float32)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _timed(call: Callable[[], object], repeats: int) -> list[float]:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def bench_one(entry: BenchModel, image: Image.Image, data: bytes, repeats: int) -> dict[str, Any]:
    engine = DetectorEngine(entry.model)
    pre = entry.model.config.preprocessing
    native = pre.resize == "native-crops"
    batch, boxes = model_input(image, pre)
    crops_scored = max(1, len(boxes))
    classify = _timed(lambda: engine.predict([decode_rgb(data)]), repeats)
    forward = _timed(lambda: engine.logits(batch), repeats)
    with DetectorCAM(entry.model) as cam:
        gradcam = _timed(lambda: cam(batch, one_image=native), repeats)
    forward_p50, gradcam_p50 = statistics.median(forward), statistics.median(gradcam)
    return {
        "source": entry.source,
        "crops_scored": crops_scored,
        "classify_ms": {
            "p50": round(statistics.median(classify), 1),
            "max": round(max(classify), 1),
        },
        "forward_ms_p50": round(forward_p50, 1),
        "gradcam_ms_p50": round(gradcam_p50, 1),
        "gradcam_over_forward": round(gradcam_p50 / forward_p50, 3),
    }


def bench_photo(models: list[BenchModel], data: bytes, repeats: int) -> dict[str, Any]:
    image = decode_rgb(data)
    return {
        "image": {"width": image.width, "height": image.height, "jpeg_bytes": len(data)},
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "targets": {
            "classify_ms_p50": TARGET_CLASSIFY_MS,
            "gradcam_over_forward": TARGET_GRADCAM_RATIO,
        },
        "models": {entry.name: bench_one(entry, image, data, repeats) for entry in models},
    }
