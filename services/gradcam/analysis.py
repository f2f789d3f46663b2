"""One image → heatmap, ROIs with measured evidence, metadata: the encoded ROIs.

The heatmap is computed at the model's input size and resized to the *analysis
size*: the original image, downscaled so its longer side is at most
``MAX_ANALYSIS_SIDE`` pixels. ROIs and statistics are measured there; ROI boxes are
reported in the original image's pixels and normalised to 0..1.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

from common.detector.inference import DetectorEngine, Prediction, predictions_from_logits
from common.detector.preprocess import batch_from_images
from services.gradcam.cam import DetectorCAM
from services.gradcam.evidence import compare, measure, rounded
from services.gradcam.metadata import inspect_metadata
from services.gradcam.rois import extract_regions

ENCODING_VERSION = "rois-v1"
MAX_ANALYSIS_SIDE = 1024


@dataclass
class Analysis:
    prediction: Prediction
    heatmap: np.ndarray
    document: dict[str, Any]
    heatmap_png: bytes
    overlay_png: bytes


def analysis_image(image: Image.Image) -> Image.Image:
    scale = min(1.0, MAX_ANALYSIS_SIDE / max(image.size))
    if scale >= 1.0:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=False, compress_level=3)
    return buffer.getvalue()


def _to_uint8(heatmap: np.ndarray) -> np.ndarray:
    return (255 * np.clip(heatmap, 0, 1)).astype(np.uint8)


def render_heatmap(heatmap: np.ndarray) -> bytes:
    colored = cv2.applyColorMap(_to_uint8(heatmap), cv2.COLORMAP_JET)
    return _png(cv2.cvtColor(colored, cv2.COLOR_BGR2RGB))


def render_overlay(rgb: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> bytes:
    colored = cv2.applyColorMap(_to_uint8(heatmap), cv2.COLORMAP_JET)
    colored = cv2.cvtColor(colored, cv2.COLOR_BGR2RGB).astype(np.float32)
    blended = (1 - alpha) * rgb.astype(np.float32) + alpha * colored
    return _png(np.clip(blended, 0, 255).astype(np.uint8))


def encode(
    heatmap_small: np.ndarray,
    image: Image.Image,
    prediction: Prediction,
    metadata: dict[str, Any],
    threshold: float,
    top_k: int,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The ROI document, the analysis-size heatmap and the analysis-size RGB array."""
    work = analysis_image(image)
    rgb = np.asarray(work, dtype=np.uint8)
    height, width = rgb.shape[:2]
    heatmap = cv2.resize(heatmap_small, (width, height), interpolation=cv2.INTER_LINEAR)
    heatmap = np.clip(heatmap, 0.0, 1.0)
    whole = measure(rgb)
    regions = extract_regions(heatmap, threshold, top_k)
    scale_x, scale_y = image.width / width, image.height / height
    rois = []
    for region in regions:
        crop = rgb[region.y0 : region.y1, region.x0 : region.x1]
        entry = region.as_dict(width, height, scale_x, scale_y)
        entry["evidence"] = compare(measure(crop), whole)
        rois.append(entry)
    document = {
        "version": ENCODING_VERSION,
        "target_class": prediction.label_name,
        "threshold": threshold,
        "image": {
            "width": image.width,
            "height": image.height,
            "analysis_size": [width, height],
            "statistics": rounded(whole),
        },
        "rois": rois,
        "heat_outside_rois": round(max(0.0, 1.0 - sum(r.heat_share for r in regions)), 4),
        "metadata": metadata,
    }
    return document, heatmap, rgb


def analyze_image(
    engine: DetectorEngine,
    image: Image.Image,
    data: bytes,
    cam: DetectorCAM | None = None,
    threshold: float = 0.5,
    top_k: int = 5,
) -> Analysis:
    batch = batch_from_images([image], engine.config.preprocessing)
    own_cam = cam is None
    cam = cam or DetectorCAM(engine.model)
    try:
        heatmaps, logits = cam(batch)  # one forward: the verdict and its heatmap
    finally:
        if own_cam:
            cam.release()
    prediction = predictions_from_logits(logits, engine.config)[0]
    small = heatmaps[0]
    document, heatmap, rgb = encode(
        small, image, prediction, inspect_metadata(data), threshold, top_k
    )
    return Analysis(
        prediction, heatmap, document, render_heatmap(heatmap), render_overlay(rgb, heatmap)
    )
