"""One image → heatmap, ROIs with measured evidence, metadata: the encoded ROIs.

The heatmap is computed at the model's input size (for a ``native-crops`` detector:
per crop, stitched back where the crops came from) and brought to the *analysis
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
import torch
from PIL import Image

from common.detector.inference import DetectorEngine, Prediction, predictions_from_logits
from common.detector.preprocess import model_input
from common.detector.tiling import CropBox, stitch
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


def analysis_image_size(image: Image.Image) -> tuple[int, int]:
    scale = min(1.0, MAX_ANALYSIS_SIDE / max(image.size))
    if scale >= 1.0:
        return image.size
    return (max(1, round(image.width * scale)), max(1, round(image.height * scale)))


def analysis_image(image: Image.Image) -> Image.Image:
    size = analysis_image_size(image)
    if size == image.size:
        return image
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


def stitched_heatmap(
    heatmaps: np.ndarray, logits: torch.Tensor, boxes: list[CropBox], image: Image.Image
) -> np.ndarray:
    """The crops' maps placed where the crops came from, at the analysis size.

    pytorch-grad-cam scales every crop's map to [0, 1] on its own; each is weighted by
    how strongly its crop voted for the explained class (its probability over the
    largest crop's), so a crop with little evidence does not glow like the decisive one.
    """
    explained = int(logits.mean(dim=0).argmax().item())
    votes = torch.softmax(logits.float(), dim=1)[:, explained].numpy()
    weights = votes / max(float(votes.max()), 1e-6)
    work_w, work_h = analysis_image_size(image)
    sx, sy = work_w / image.width, work_h / image.height
    scaled, maps = [], []
    for heat, box, weight in zip(heatmaps, boxes, weights, strict=True):
        left, top = int(box.left * sx), int(box.top * sy)
        right = max(left + 1, min(work_w, round((box.left + box.width) * sx)))
        bottom = max(top + 1, min(work_h, round((box.top + box.height) * sy)))
        target = CropBox(left, top, right - left, bottom - top)
        resized = cv2.resize(heat, (target.width, target.height), interpolation=cv2.INTER_AREA)
        maps.append(resized.reshape(target.height, target.width) * float(weight))
        scaled.append(target)
    return stitch(maps, scaled, work_w, work_h)


def analyze_image(
    engine: DetectorEngine,
    image: Image.Image,
    data: bytes,
    cam: DetectorCAM | None = None,
    threshold: float = 0.5,
    top_k: int = 5,
) -> Analysis:
    pre = engine.config.preprocessing
    native = pre.resize == "native-crops"
    batch, boxes = model_input(image, pre)
    own_cam = cam is None
    cam = cam or DetectorCAM(engine.model)
    try:
        # One forward: the verdict and its heatmap.
        heatmaps, logits = cam(batch, one_image=native)
    finally:
        if own_cam:
            cam.release()
    if native:
        small = stitched_heatmap(heatmaps, logits, boxes, image)
        logits = logits.mean(dim=0, keepdim=True)
    else:
        small = heatmaps[0]
    prediction = predictions_from_logits(logits, engine.config, sizes=[image.size])[0]
    document, heatmap, rgb = encode(
        small, image, prediction, inspect_metadata(data), threshold, top_k
    )
    return Analysis(
        prediction, heatmap, document, render_heatmap(heatmap), render_overlay(rgb, heatmap)
    )
